"""`layerseg demo`: the miniature UDA experiment end to end (merge with mergekit, evaluate, compare).

Merges the shipped miniature models with the recipes in ``plugin_configs/miniature_*.yaml``
(``layerwise_seg``) and with a uniform average of the same models, then scores every single
model and every merge on the shifted target test split: mIoU for all, PQ for panoptic models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import yaml

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

    import layerseg_merge  # noqa: F401  (registers with mergekit)

    run_merge(MergeConfiguration.model_validate(recipe), str(out),
              MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    return out


def score(model: Path, test: Path, limit: int | None, panoptic: bool) -> dict:
    from layerseg_merge.eval.evaluate import evaluate

    row = {"mIoU": evaluate(model, f"folder:{test}", batch_size=16, workers=0, progress=False,
                            limit=limit)["mIoU"]}
    if panoptic:
        report = evaluate(model, f"coco-panoptic:{test / 'images'},{test / 'panoptic.json'},{test / 'panoptic'}",
                          task="panoptic", batch_size=16, workers=0, progress=False, limit=limit)
        row["PQ"] = report["All"]["pq"]
    return row


def run_demo(out: Path, limit: int | None = None, assets: Path | None = None) -> list[dict]:
    """Score singles and merges into ``out``; ``assets`` overrides the shipped models (other seeds)."""
    from layerseg_merge.resources import demo_assets

    assets = assets or demo_assets()
    test = assets / "target_test"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def add(name, kind, scenario, model_dir):
        is_panoptic = "panoptic_head" in json.loads((model_dir / "config.json").read_text())
        row = {"name": name, "kind": kind, "scenario": scenario} | score(model_dir, test, limit, is_panoptic)
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
    from layerseg_merge.errors import reported
    from layerseg_merge.eval.reports import bar_chart
    from layerseg_merge.output import StagedOutput
    from layerseg_merge.resources import demo_assets

    started = time.perf_counter()
    with reported("demo"):
        with StagedOutput(out, overwrite=True, inputs=[demo_assets()], replaceable=is_demo_output,
                          log=lambda message: click.echo(message, err=True)) as staged:
            rows = run_demo(staged.staging, limit)
            (staged.staging / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
            bar_chart({r["name"]: r["mIoU"] for r in rows}, staged.staging / "results.png",
                      "target mIoU (BN statistics as stored)")
            staged.commit()
    click.echo(table(rows))
    click.echo(f"\nresults: {out / 'results.json'}, chart: {out / 'results.png'} "
               f"({time.perf_counter() - started:.0f} s)", err=True)
