"""``layerseg predict``: write a model's predictions as files, in the benchmark servers' submission formats."""

from __future__ import annotations

from pathlib import Path

import click

from layerseg_merge.cli.options import (
    data_options,
    inference_options,
    note_test_scale,
    sharing_cores,
    threads_option,
)
from layerseg_merge.cli.reporting import reported
from layerseg_merge.cli.tools import _ranks_joined
from layerseg_merge.eval.datasets import KINDS
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.submission import FORMATS


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@data_options(" | ".join(kind.spec for kind in KINDS.values()),
              split_help="the split to predict, e.g. test (the test splits need no labels)",
              workers_help="DataLoader workers decoding images")
@click.option("--task", type=click.Choice(["semantic", "panoptic"]), default=None,
              help="semantic (default) or panoptic; a --format implies its task")
@click.option("--format", "form", type=click.Choice(list(FORMATS)), default=None,
              help="; ".join(f"{form.name}: {form.summary}" for form in FORMATS.values())
              + " (default: train-ids, or coco-panoptic with --task panoptic)")
@inference_options(4, device_help="auto = CUDA when available, else CPU", tuning=True)
@threads_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="the folder to write")
@click.option("--zip", "archive", is_flag=True, help="also write OUT/submission.zip, the archive the server takes")
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds a previous predict output")
def predict_command(model, on: DataOptions, task, form, infer: InferenceOptions, threads, out, archive,
                    overwrite) -> None:
    """Write MODEL's predictions on a split (labels not needed) as files, in a benchmark server's format.

    The inference is that of `layerseg eval` (the same batches, test pipeline, --slide, --amp), so `layerseg
    score` on the files gives eval's numbers. Classes are matched by name: a semantic prediction is written in
    the dataset's class indices (the 19 Cityscapes train ids for Cityscapes, ACDC and Dark Zurich; label ids for
    --format cityscapes). Under torchrun each process writes its own images and rank 0 the JSON files and the
    archive. OUT appears in one step: an interrupted run leaves the previous output or none.
    """
    note_test_scale(infer)
    with reported("prediction"), _ranks_joined(), sharing_cores(on, infer.device, threads) as on:
        from layerseg_merge.eval.predict import predict

        manifest = predict(model, on, out, task, form, infer, archive=archive, overwrite=overwrite,
                           log=lambda message: click.echo(message, err=True))
    if manifest is not None:
        archived = f"; the archive for the server: {Path(out) / 'submission.zip'}" if archive else ""
        click.echo(f"{manifest['images']} predictions ({manifest['format']}) written to {out} in "
                   f"{manifest['seconds']:.1f} s{archived}", err=True)
