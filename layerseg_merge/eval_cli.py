"""``layerseg eval``, ``layerseg score`` and ``layerseg compare``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from layerseg_merge.eval.reports import bar_chart, compare, markdown, per_class_values, write_json


def _finish(report: dict, out: str | None, plot: str | None, title: str) -> None:
    click.echo(markdown(report))
    if out:
        write_json(report, out)
        click.echo(f"report written to {out}", err=True)
    if plot:
        bar_chart(per_class_values(report), plot, title)
        click.echo(f"per-class chart written to {plot}", err=True)


def _slide(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        crop, stride = (int(v) for v in value.split(","))
    except ValueError as error:
        raise click.BadParameter("use CROP,STRIDE, e.g. 512,341") from error
    return crop, stride


def _run(action):
    from layerseg_merge.eval.datasets import DatasetError
    from layerseg_merge.eval.metrics import LabelError

    try:
        return action()
    except (DatasetError, LabelError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error


@click.command("eval")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True,
              help="cityscapes:ROOT | coco-panoptic:IMAGES,JSON,PNG_DIR | folder:ROOT")
@click.option("--split", default="val", show_default=True)
@click.option("--task", type=click.Choice(["semantic", "panoptic"]), default="semantic", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto = CUDA when available, else CPU")
@click.option("--batch-size", default=4, show_default=True)
@click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]), default="off", show_default=True)
@click.option("--slide", default=None, help="sliding-window inference CROP,STRIDE (semantic models)")
@click.option("--workers", default=2, show_default=True, help="DataLoader workers decoding images")
@click.option("--out", type=click.Path(dir_okay=False), help="write the report JSON here")
@click.option("--plot", type=click.Path(dir_okay=False), help="write a per-class bar chart (PNG)")
def eval_command(model, data, split, task, device, batch_size, amp, slide, workers, out, plot) -> None:
    """Run MODEL (a transformers directory) over a dataset and score it."""
    from layerseg_merge.eval.evaluate import evaluate

    report = _run(lambda: evaluate(model, data, split=split, task=task, device=device,
                                   batch_size=batch_size, amp=amp, slide=_slide(slide), workers=workers))
    timing = report.pop("timing")
    click.echo(f"{timing['images']} images in {timing['seconds']:.1f} s on {timing['device']} "
               f"({timing['images'] / max(timing['seconds'], 1e-9):.1f} img/s)", err=True)
    _finish(report, out, plot, f"{Path(model).name} on {data}")


@click.group("score")
def score() -> None:
    """Score predictions already on disk."""


@score.command("semantic")
@click.option("--gt", "gt_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--pred", "pred_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--num-classes", required=True, type=int)
@click.option("--ignore-index", default=255, show_default=True)
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False), help="one name per line")
@click.option("--out", type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False))
def score_semantic_command(gt_dir, pred_dir, num_classes, ignore_index, class_names, out, plot) -> None:
    """Class-index PNGs in --pred against --gt, paired by relative path (mmsegmentation IoUMetric)."""
    from layerseg_merge.eval.score import score_semantic

    names = [n for n in Path(class_names).read_text().splitlines() if n] if class_names else None
    report = _run(lambda: score_semantic(Path(gt_dir), Path(pred_dir), num_classes, ignore_index, names))
    _finish(report, out, plot, "per-class IoU")


@score.command("panoptic")
@click.option("--gt-json", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--gt-folder", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--pred-json", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--pred-folder", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False))
def score_panoptic_command(gt_json, gt_folder, pred_json, pred_folder, out, plot) -> None:
    """COCO panoptic predictions (panopticapi pq_compute inputs) against ground truth."""
    from layerseg_merge.eval.score import score_panoptic

    report = _run(lambda: score_panoptic(Path(gt_json), Path(gt_folder), Path(pred_json), Path(pred_folder)))
    _finish(report, out, plot, "per-category PQ")


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def compare_command(reports) -> None:
    """Print several report JSONs side by side (singles vs merges)."""
    loaded = {Path(r).stem: json.loads(Path(r).read_text()) for r in reports}
    kinds = {"All" in r for r in loaded.values()}
    if len(kinds) > 1:
        raise click.ClickException("mixing semantic and panoptic reports; compare them separately")
    click.echo(compare(loaded))
