"""``layerseg analyze``, ``layerseg sweep`` and ``layerseg recalibrate``."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

import click

from layerseg_merge.cli.options import data_options, gathered, inference_options
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


def _passive_threads() -> None:
    """Idle OpenMP threads sleep rather than spin (unless the user set ``OMP_WAIT_POLICY``; it takes effect when
    torch is first imported): with busy cores, spinning threads cost a sweep of small models 10-40x."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto")
@click.option("--out", type=click.Path(dir_okay=False), help="write the per-layer figures as JSON")
@click.option("--plot", type=click.Path(dir_okay=False), help="write a line plot over depth (PNG)")
def analyze_command(models, anchor, device, out, plot) -> None:
    """Per layer, how far MODELS are from the anchor and from their mean (relative L2, cosine).

    Streams one tensor at a time, on every supported host and on imported mmseg models.
    """
    if len(models) < 2:
        raise click.ClickException("analyze compares at least 2 models")
    with reported("analyze"):
        from layerseg_merge.io.output import check_writable_file
        from layerseg_merge.tools.analyze import analyze, write_report
        from layerseg_merge.tools.analyze import plot as draw

        for path in (out, plot):
            if path:
                check_writable_file(path, models)
        index = 0 if anchor is None else list(models).index(anchor) if anchor in models else None
        if index is None:
            raise click.ClickException(f"--anchor {anchor} is not one of the models")
        report = analyze(models, index, device)
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


def _search(**values):
    from layerseg_merge.tools.sweep import SweepOptions

    return SweepOptions(**values)


def _search_options():
    """``--metric``, ``--budget``, ``--unsupervised`` and ``--cache-gb``, handed to the sweep as ``search`` (a
    :class:`~layerseg_merge.tools.sweep.SweepOptions`; its grid and anchors come from ``--grid`` and the recipe)."""
    return gathered("search", ("metric", "budget", "unsupervised", "cache_gb"), _search, [
        click.option("--metric", type=click.Choice(list(headlines())), default="mIoU", show_default=True),
        click.option("--budget", type=click.IntRange(min=1), default=None, help="score at most N candidates"),
        click.option("--unsupervised", is_flag=True,
                     help="rank without labels (entropy, agreement with the ensemble)"),
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
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds a previous sweep's output")
def sweep_command(recipe, on: DataOptions, grid_options, search, out, infer: InferenceOptions, overwrite) -> None:
    """Choose the anchor and schedule of RECIPE on a validation split; write the best recipe.

    The inputs are loaded and the validation images decoded once; each candidate is merged in memory
    and copied into one model per anchor. Under torchrun the images are sharded over the ranks and
    rank 0 writes OUT.
    """
    _passive_threads()
    with reported("sweep"), _ranks_joined():
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
        with StagedOutput(out, "dir", overwrite=overwrite, inputs=[*setup.dirs, *_data_paths(on.data)], recipe=recipe,
                          log=_echo, replaceable=lambda p: {e.name for e in p.iterdir()} <= outputs) as staged:
            result = sweep(_echo)
            best = best_recipe(setup, result.pop("best"))
            header = (f"# Chosen by `layerseg sweep` on {on.data} (split {on.split}) by {result['metric']}"
                      f"{' — a label-free heuristic' if search.unsupervised else ''}; see candidates.md\n")
            (staged.staging / "best_recipe.yaml").write_text(header + yaml.safe_dump(best, sort_keys=False))
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
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds a previous model output")
def recalibrate_command(model, on: DataOptions, out, infer: InferenceOptions, overwrite) -> None:
    """Re-estimate MODEL's BatchNorm statistics on target images; every other tensor stays bit-identical.

    Under torchrun the batches are dealt to the ranks and rank 0 writes OUT (the same statistics as one
    process).
    """
    _passive_threads()
    with reported("recalibration"), _ranks_joined():
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
