"""`layerseg demo`: the miniature UDA experiment end to end (merge with mergekit, evaluate, compare).

Merges the shipped miniature models with the recipes in ``plugin_configs/miniature_*.yaml``
(``layerwise_seg``) and with a uniform average of the same models, then scores every single
model and every merge on the shifted target test split: mIoU for all, PQ for panoptic models.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click
import yaml

from layerseg_merge.models.info import ModelInfo

SCENARIOS = (
    ("different_sources", "miniature_different_sources"),
    ("different_heads", "miniature_different_heads"),
    ("semantic_into_panoptic", "miniature_semantic_into_panoptic"),
)
SINGLES = ("source_only", "dr", "dacs", "mic", "dacs_source2", "panoptic")
DEMO_FILES = {"results.json", "results.png", "merged"}


def recipe_for(recipe: str, uniform: bool, assets: Path) -> dict:
    """A shipped recipe with its model paths under ``assets``; ``uniform`` makes it a plain weighted average."""
    from layerseg_merge.resources import DEMO_ASSETS_IN_RECIPES, recipe_files

    data = yaml.safe_load(recipe_files()[recipe].read_text())

    def place(path: str) -> str:
        return str(assets / Path(path).relative_to(DEMO_ASSETS_IN_RECIPES))

    data["base_model"] = place(data["base_model"])
    for entry in data["models"]:
        entry["model"] = place(entry["model"])
    if uniform:
        # mergekit 0.1.5's `linear` cannot merge BatchNorm models (their counters differ); this is
        # the same arithmetic: every float tensor the weighted mean, integers the anchor's.
        # Heads of different shapes cannot be averaged: then the anchor's head is kept.
        data["parameters"] = dict(data.get("parameters") or {}, uniform_until=1.0,
                                  heads="uniform" if _same_heads(data) else "anchor")
    return data


def _same_heads(recipe: dict) -> bool:
    from layerseg_merge.architectures import layout_of

    layouts = [layout_of(entry["model"]) for entry in recipe["models"]]
    shapes = [{t.name: t.shape for t in layout.heads} for layout in layouts]
    return all(s == shapes[0] for s in shapes[1:])


def merge(recipe: dict, out: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from layerseg_merge.plugin import register

    register()  # with mergekit (the start-up hook may be off)

    run_merge(MergeConfiguration.model_validate(recipe), str(out),
              MergeOptions(quiet=True, copy_tokenizer=False))
    return out


def score(model: Path, test: Path, limit: int | None, panoptic: bool) -> dict:
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

    infer = InferenceOptions(batch_size=16)
    row = {"mIoU": evaluate(model, DataOptions(f"folder:{test}", limit=limit, workers=0), infer=infer,
                            progress=False)["mIoU"]}
    if panoptic:
        spec = f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}"
        report = evaluate(model, DataOptions(spec, limit=limit, workers=0), "panoptic", infer, progress=False)
        row["PQ"] = report["All"]["pq"]
    return row


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread inside, as before after.

    The demo's models and 64x64 images are too small to gain from intra-op threads, and on a shared
    machine those threads wait for each other: a forward pass of 16 images took 203 ms with torch's
    2 threads against 22 ms with one, on 2 cores at a load average of 3.9 (the whole demo: 62 s
    against 16 s, with identical results).
    """
    from layerseg_merge.io.cpus import keep_openmp_from_spinning

    keep_openmp_from_spinning()  # (before torch loads)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_demo(out: Path, limit: int | None = None, assets: Path | None = None) -> list[dict]:
    """Score singles and merges into ``out``; ``assets`` overrides the shipped models (other seeds)."""
    from layerseg_merge.models.transformers_loader import quiet_transformers

    with one_thread(), quiet_transformers():
        return _run_demo(out, limit, assets)


def _run_demo(out: Path, limit: int | None, assets: Path | None) -> list[dict]:
    from layerseg_merge.resources import demo_assets

    assets = assets or demo_assets()
    test = assets / "target_test"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def add(name, kind, scenario, model_dir):
        panoptic = ModelInfo.from_dir(model_dir).gives_panoptic
        row = {"name": name, "kind": kind, "scenario": scenario} | score(model_dir, test, limit, panoptic)
        rows.append(row)
        pq = f"  PQ {100 * row['PQ']:5.1f}" if "PQ" in row else ""
        click.echo(f"  {name:38s} {kind:14s} mIoU {100 * row['mIoU']:5.1f}{pq}", err=True)

    click.echo("single models (target test split):", err=True)
    for name in SINGLES:
        add(name, "single", None, assets / "models" / name)
    for scenario, recipe in SCENARIOS:
        click.echo(f"scenario {scenario} (recipe {recipe}):", err=True)
        for kind in ("uniform", "layerwise_seg"):
            data = recipe_for(recipe, kind == "uniform", assets)
            merged = merge(data, out / "merged" / f"{scenario}_{kind}")
            add(f"{scenario}/{kind}", kind, scenario, merged)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | kind | target mIoU | PQ |", "| --- | --- | ---: | ---: |"]
    for row in rows:
        pq = f"{100 * row['PQ']:.2f}" if row.get("PQ") is not None else ""
        lines.append(f"| {row['name']} | {row['kind']} | {100 * row['mIoU']:.2f} | {pq} |")
    return "\n".join(lines)


KIND_COLOURS = {"single": "#9a9a9a", "uniform": "#e8a33d", "layerwise_seg": "#2f6db5"}


def scenario_inputs(recipe: str) -> list[str]:
    """The names of the shipped models a scenario's recipe merges, anchor first."""
    from layerseg_merge.resources import recipe_files

    data = yaml.safe_load(recipe_files()[recipe].read_text())
    names = [Path(entry["model"]).name for entry in data["models"]]
    anchor = Path(data["base_model"]).name
    return [anchor] + [name for name in names if name != anchor]


def plot_results(rows: list[dict], path: Path) -> None:
    """One panel per scenario and metric: its input models, the uniform average and layerwise_seg, in the
    colours of :data:`KIND_COLOURS`, with the best input as a dotted line (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    by_name = {row["name"]: row for row in rows}
    panels = []
    for scenario, recipe in SCENARIOS:
        inputs = [by_name[name] for name in scenario_inputs(recipe) if name in by_name]
        merges = [by_name[f"{scenario}/{kind}"] for kind in ("uniform", "layerwise_seg")]
        for metric in ("mIoU", "PQ"):
            shown = [row for row in inputs + merges if row.get(metric) is not None]
            if any(row["kind"] != "single" for row in shown):
                panels.append((f"{scenario.replace('_', ' ')}\n{metric}", metric, shown))
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.9), dpi=130)
    top = max(100 * row[metric] for _, metric, shown in panels for row in shown)
    for axis, (title, metric, shown) in zip(axes, panels):
        labels = [row["name"] + (" (anchor)" if i == 0 else "") if row["kind"] == "single" else row["kind"]
                  for i, row in enumerate(shown)]
        values = [100 * row[metric] for row in shown]
        bars = axis.barh(range(len(shown)), values, color=[KIND_COLOURS[row["kind"]] for row in shown])
        axis.bar_label(bars, fmt="%.1f", padding=3, fontsize=9)
        best = max(100 * row[metric] for row in shown if row["kind"] == "single")
        axis.axvline(best, color="#555555", linestyle=":", linewidth=1.2)
        axis.set_yticks(range(len(shown)), labels, fontsize=9)
        axis.invert_yaxis()
        axis.set_xlim(0, top * 1.22)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(f"target test {metric} (%)", fontsize=9)
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle("Miniature UDA demo: merged models vs their inputs (BatchNorm statistics as stored)", fontsize=11)
    figure.legend(handles=[Patch(color=c, label="input model" if k == "single" else k) for k, c in KIND_COLOURS.items()]
                  + [plt.Line2D([], [], color="#555555", linestyle=":", label="best input")],
                  loc="lower center", ncol=4, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    figure.savefig(path)
    plt.close(figure)


def is_demo_output(path: Path) -> bool:
    """A previous `layerseg demo` output, which a new run may replace."""
    names = {entry.name for entry in path.iterdir()}
    return "results.json" in names and names <= DEMO_FILES


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"),
              show_default=True, help="where merged models, results.json and the chart go (replaces only a "
              "previous demo output)")
@click.option("--limit", type=int, default=None, help="score only the first N test images")
def demo(out: Path, limit: int | None) -> None:
    """Merge the miniature UDA models with mergekit and compare singles, uniform and layerwise_seg.

    Works from any directory: the models, the target test split and the recipes ship with the package.
    """
    from layerseg_merge.cli.reporting import reported
    from layerseg_merge.io.output import StagedOutput
    from layerseg_merge.resources import demo_assets

    started = time.perf_counter()
    with reported("demo"):
        with StagedOutput(out, overwrite=True, inputs=[demo_assets()], replaceable=is_demo_output,
                          log=lambda message: click.echo(message, err=True)) as staged:
            rows = run_demo(staged.staging, limit)
            (staged.staging / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
            plot_results(rows, staged.staging / "results.png")
            staged.commit()
    click.echo(table(rows))
    click.echo(f"\nresults: {out / 'results.json'}, chart: {out / 'results.png'} "
               f"({time.perf_counter() - started:.0f} s)", err=True)
