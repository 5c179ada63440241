"""``layerseg analyze``, ``layerseg sweep`` and ``layerseg recalibrate``."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

import click

from layerseg_merge.cli.options import data_options, gathered, inference_options, sharing_cores, threads_option
from layerseg_merge.cli.reporting import reported
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.report_metrics import headlines


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _data_paths(data: str) -> list[str]:
    """The files and folders a dataset spec reads (not ACDC's conditions), for the output-path check."""
    from layerseg_merge.eval.datasets import input_paths

    return list(input_paths(data))


def _launch_rank() -> int:
    """This process's rank under torchrun (0 otherwise): rank 0 alone writes the outputs."""
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def _ranks_joined():
    """Leave torchrun's process group (if this command joined one) once every rank is done."""
    try:
        yield
    finally:
        import sys

        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()


@click.command("analyze")
@click.argument("models", nargs=-1, required=True)
@click.option("--anchor", default=None, help="the model the others are compared with (default: the first)")
@click.option("--base", default=None, metavar="DIR",
              help="the models' shared initialisation: adds each task vector's cosine with the anchor's, per layer")
@click.option("--interpolate", "interpolate_data", default=None, metavar="KIND:PATH",
              help="score the straight line from the anchor to each model on this data (labels: the headline "
              "metric; images:DIR: mIoU against the models' ensemble)")
@click.option("--steps", type=click.IntRange(min=2), default=5, show_default=True,
              help="points along each line of --interpolate, both ends included")
@click.option("--task", type=click.Choice(["semantic", "panoptic"]), default="semantic", show_default=True,
              help="what --interpolate scores")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto")
@click.option("--out", type=click.Path(dir_okay=False), help="write the per-layer figures as JSON")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="write a line plot over depth (PNG); with --interpolate also PLOT's name + -interpolation.png")
@threads_option
def analyze_command(models, anchor, base, interpolate_data, steps, task, device, out, plot, threads) -> None:
    """Per layer, how far MODELS are from the anchor and from their mean (relative L2, cosine).

    With --base, their task vectors against the anchor's; with --interpolate, a metric along the line
    from the anchor to each model. Streams one tensor at a time, on every supported host and on imported
    mmseg models.
    """
    if len(models) < 2:
        raise click.ClickException("analyze compares at least 2 models")
    line_plot = str(Path(plot).with_name(Path(plot).stem + "-interpolation.png")) if plot and interpolate_data \
        else None
    with reported("analyze"), sharing_cores(DataOptions("images:", workers=0), device, threads):
        from layerseg_merge.io.output import check_writable_file
        from layerseg_merge.tools.analyze import analyze, write_report
        from layerseg_merge.tools.analyze import plot as draw

        inputs = [*models, *([base] if base else []), *(_data_paths(interpolate_data) if interpolate_data else [])]
        for path in (out, plot, line_plot):
            if path:
                check_writable_file(path, inputs)
        index = 0 if anchor is None else list(models).index(anchor) if anchor in models else None
        if index is None:
            raise click.ClickException(f"--anchor {anchor} is not one of the models")
        report = analyze(models, index, device, base=base)
        if interpolate_data:
            from layerseg_merge.tools.interpolation import interpolate
            from layerseg_merge.tools.interpolation import plot as draw_line

            report["interpolation"] = interpolate(models, index, DataOptions(interpolate_data, workers=0), task,
                                                  InferenceOptions(device=device), steps)
            if line_plot:
                draw_line(report["interpolation"], line_plot)
                _echo(f"interpolation plot written to {line_plot}")
        if out:
            write_report(report, out)
            _echo(f"report written to {out}")
        if plot:
            draw(report, plot)
            _echo(f"plot written to {plot}")
    click.echo(f"relative L2 distance to the anchor {report['anchor']} (cosine similarity), per backbone layer:")
    others = [m for m in report["models"] if m != report["anchor"]]
    for layer in report["layers"]:
        where = f"depth {layer['depth']:.2f}" if layer["role"] == "backbone" else "heads     "
        values = "  ".join(f"{Path(m).name}: {layer['to_anchor'][m]['relative_l2']:.4f} "
                           f"({layer['to_anchor'][m]['cosine']:.4f})" for m in others if m in layer["to_anchor"])
        click.echo(f"  {where}  {values}")
    if base:
        click.echo(f"task vectors (w - {base}): cosine with the anchor's (size relative to the base), per layer:")
        for layer in report["layers"]:
            if "task_vectors" not in layer:
                continue
            where = f"depth {layer['depth']:.2f}" if layer["role"] == "backbone" else "heads     "
            values = "  ".join(f"{Path(m).name}: {v['cosine_to_anchor']:.4f} ({v['relative_norm']:.4f})"
                               for m, v in layer["task_vectors"].items() if m in others
                               and v["cosine_to_anchor"] is not None)
            click.echo(f"  {where}  {values}")
    if interpolate_data:
        line = report["interpolation"]
        lambdas = ", ".join(f"{v:g}" for v in line["steps"])
        click.echo(f"{line['metric']} along the line from the anchor (lambda {lambdas}):")
        for model, curve in line["curves"].items():
            values = ", ".join("n/a" if v is None else f"{100 * v:.2f}" for v in curve["values"])
            click.echo(f"  {Path(model).name}: {values}")


def _search(**values):
    from layerseg_merge.tools.sweep import SweepOptions

    return SweepOptions(**values)


def _search_options():
    """``--metric``, ``--budget``, ``--unsupervised``, ``--selector``, ``--confidence``, ``--source-data``,
    ``--veto-margin`` and ``--cache-gb``, handed to the sweep as ``search`` (a
    :class:`~layerseg_merge.tools.sweep.SweepOptions`; its grid and anchors come from ``--grid`` and the recipe)."""
    names = ("metric", "budget", "unsupervised", "selector", "confidence", "source_data", "veto_margin", "cache_gb")
    return gathered("search", names, _search, [
        click.option("--metric", type=click.Choice(list(headlines())), default="mIoU", show_default=True),
        click.option("--budget", type=click.IntRange(min=1), default=None,
                     help="score at most N merges (each input alone is scored besides)"),
        click.option("--unsupervised", is_flag=True, help="rank without target labels (--selector)"),
        click.option("--selector", type=click.Choice(["pseudo-miou", "agreement-entropy"]), default="pseudo-miou",
                     show_default=True,
                     help="--unsupervised: mIoU against the inputs' ensemble where it is confident (pseudo-miou), or "
                     "agreement with the ensemble minus entropy"),
        click.option("--confidence", type=float, default=0.5, show_default=True,
                     help="pseudo-miou: the ensemble's least mean probability for a pixel to be scored"),
        click.option("--source-data", default=None, metavar="KIND:PATH",
                     help="labelled SOURCE validation data: drop a merge that loses more than --veto-margin of its "
                     "anchor's source mIoU"),
        click.option("--veto-margin", type=float, default=0.05, show_default=True,
                     help="source mIoU a merge may lose against its anchor alone (0.05: 5 points)"),
        click.option("--cache-gb", type=click.FloatRange(min=0), default=8.0, show_default=True,
                     help="keep the decoded validation data in memory up to this size (per process; 0: decode per "
                     "candidate; inf: no limit)")])


@click.command("sweep")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@data_options("the VALIDATION data: KIND:PATH as for eval (images:ROOT with --unsupervised)",
              limit=click.option("--limit", type=int, default=None, help="use only the first N images"))
@click.option("--grid", "grid_options", multiple=True,
              help="KEY=V1,V2 (uniform_until, anchor_max, schedule, anchor=all|model|index); repeat for more keys")
@_search_options()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder for best_recipe.yaml, candidates.json / .md and candidates.png")
@inference_options(8)
@threads_option
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds a previous sweep's output")
def sweep_command(recipe, on: DataOptions, grid_options, search, out, infer: InferenceOptions, threads,
                  overwrite) -> None:
    """Choose the anchor and schedule of RECIPE on a validation split; write the best recipe.

    The inputs are loaded and the validation images decoded once; each candidate is merged in memory
    and copied into one model per anchor. Under torchrun the images are sharded over the ranks and
    rank 0 writes OUT.
    """
    with reported("sweep"), _ranks_joined(), sharing_cores(on, infer.device, threads) as on:
        import json

        import yaml

        from layerseg_merge.io.output import StagedOutput
        from layerseg_merge.tools.sweep import best_recipe, parse_grid, plot, read_recipe, run_sweep, table

        setup = read_recipe(recipe, _echo)
        grid, anchors = parse_grid(grid_options, setup.models)
        search = replace(search, grid=grid, anchors=anchors)

        def sweep(log) -> dict:
            return run_sweep(setup, on, search, infer, log=log, progress=log is _echo)

        if _launch_rank() != 0:
            sweep(lambda message: None)
            return
        outputs = {"best_recipe.yaml", "candidates.json", "candidates.md", "candidates.png"}
        data_paths = [*_data_paths(on.data), *(_data_paths(search.source_data) if search.source_data else [])]
        with StagedOutput(out, "dir", overwrite=overwrite, inputs=[*setup.dirs, *data_paths], recipe=recipe,
                          log=_echo, replaceable=lambda p: {e.name for e in p.iterdir()} <= outputs) as staged:
            result = sweep(_echo)
            best = result.pop("best")
            recipe_text = best_recipe(setup, best)
            alone = result["candidates"][0].get("alone")
            header = (f"# Chosen by `layerseg sweep` on {on.data} (split {on.split}) by {result['selector']}"
                      f"{' (label-free)' if search.unsupervised else ''}; see candidates.md\n"
                      + (f"# No merge beat {Path(setup.models[best.anchor]).name} alone: this recipe reproduces it "
                         "(the other inputs at weight 0)\n" if alone else ""))
            (staged.staging / "best_recipe.yaml").write_text(header + yaml.safe_dump(recipe_text, sort_keys=False))
            (staged.staging / "candidates.json").write_text(json.dumps(result, indent=2) + "\n")
            (staged.staging / "candidates.md").write_text(table(result) + "\n")
            plot(result, staged.staging / "candidates.png")
            staged.commit()
    click.echo(table(result))
    ranks = f" on {result['ranks']} processes" if result["ranks"] > 1 else ""
    _echo(f"{len(result['candidates'])} candidates, {result['seconds_per_candidate']:.2f} s each{ranks}; best recipe: "
          f"{Path(out) / 'best_recipe.yaml'}")


@click.command("recalibrate")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@data_options("target images: KIND:PATH (labels are not used), e.g. images:ROOT",
              limit=click.option("--images", "limit", type=click.IntRange(min=1), default=None,
                                 help="use the first N images (default: all)"))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@inference_options(8, batch_help="images per BatchNorm batch")
@threads_option
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds a previous model output")
def recalibrate_command(model, on: DataOptions, out, infer: InferenceOptions, threads, overwrite) -> None:
    """Re-estimate MODEL's BatchNorm statistics on target images; every other tensor stays bit-identical.

    Under torchrun the batches are dealt to the ranks and rank 0 writes OUT (the same statistics as one
    process).
    """
    with reported("recalibration"), _ranks_joined(), sharing_cores(on, infer.device, threads) as on:
        from layerseg_merge.io.output import StagedOutput
        from layerseg_merge.tools.recalibrate import recalibrate_directory

        if _launch_rank() != 0:
            recalibrate_directory(model, on, None, None, infer, progress=False)
            return
        with StagedOutput(out, "dir", overwrite=overwrite, inputs=[model, *_data_paths(on.data)], log=_echo) as staged:
            done = recalibrate_directory(model, on, staged.staging, staged.workdir(), infer)
            if done is None:
                click.echo(f"{model} has no BatchNorm layers: there is nothing to recalibrate; nothing was written",
                           err=True)
                return
            staged.commit()
    _echo(f"{done.layers} BatchNorm layers re-estimated on {done.images} images ({done.batches} batches); "
          f"written to {out}")


@click.command("fit")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@data_options("unlabelled TARGET images: KIND:PATH (labels are not used), e.g. images:ROOT",
              limit=click.option("--limit", type=click.IntRange(min=1), default=None,
                                 help="use only the first N images"))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder for recipe.yaml (the fitted recipe), fit.json and model/ (its merge)")
@click.option("--steps", type=click.IntRange(min=1), default=40, show_default=True, help="gradient steps")
@click.option("--lr", type=float, default=0.05, show_default=True, help="Adam's learning rate")
@click.option("--images", type=click.IntRange(min=1), default=8, show_default=True, help="images per step")
@click.option("--objective", type=click.Choice(["kl", "entropy"]), default="kl", show_default=True,
              help="kl: match the inputs' ensemble (KL divergence); entropy: make the merge confident")
@click.option("--device", default="auto", show_default=True, help="auto = CUDA when available, else CPU")
@threads_option
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds a previous fit's output")
def fit_command(recipe, on: DataOptions, out, steps, lr, images, objective, device, threads, overwrite) -> None:
    """Learn RECIPE's coefficients per input and depth step on unlabelled target images.

    Writes the fitted recipe (mergekit gradient lists: `layerseg merge` and `mergekit-yaml` reproduce it)
    and its merge. Under torchrun each rank takes its share of every step's images and rank 0 writes OUT (the same
    coefficients as one process).
    """
    with reported("fit"), _ranks_joined(), sharing_cores(on, device, threads) as on:
        import json

        import yaml

        from layerseg_merge.api import merge
        from layerseg_merge.io.output import StagedOutput
        from layerseg_merge.tools.fit import FitOptions, fit
        from layerseg_merge.tools.sweep import read_recipe

        options = FitOptions(steps, lr, images, objective)
        setup = read_recipe(recipe, _echo)

        def run(log) -> dict:
            return fit(setup, on, options, InferenceOptions(device=device), log=log, progress=log is _echo)

        if _launch_rank() != 0:
            run(lambda message: None)
            return
        outputs = {"recipe.yaml", "fit.json", "model"}
        with StagedOutput(out, "dir", overwrite=overwrite, inputs=[*setup.dirs, *_data_paths(on.data)], recipe=recipe,
                          log=_echo, replaceable=lambda p: {e.name for e in p.iterdir()} <= outputs) as staged:
            result = run(lambda message: None)
            header = (f"# Fitted by `layerseg fit` on {on.data} ({objective}, {steps} steps of {images} images, "
                      f"lr {lr:g}): each weight is the input's coefficient per depth step\n")
            (staged.staging / "recipe.yaml").write_text(header + yaml.safe_dump(result["recipe"], sort_keys=False))
            (staged.staging / "fit.json").write_text(json.dumps({k: v for k, v in result.items() if k != "recipe"},
                                                                indent=2) + "\n")
            merge(result["recipe"], staged.staging / "model", log=_echo)
            staged.commit()
    history = result["history"]
    _echo(f"{objective}: {history[0]:.6f} -> {history[-1]:.6f} over {len(history)} steps; the fitted recipe and its "
          f"merge are in {out}")
