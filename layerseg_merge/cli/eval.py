"""``layerseg eval``, ``layerseg score`` and ``layerseg compare``."""

from __future__ import annotations

import json
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
from layerseg_merge.eval.datasets import KINDS, split_readers
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.reports import (
    FORMATS,
    bar_chart,
    comparison,
    markdown,
    per_class_values,
    reference_label,
    table,
    write_json,
)
from layerseg_merge.io.errors import writing


def _same_file(a: str, b: str) -> bool:
    if Path(a).resolve() == Path(b).resolve():
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).samefile(b)


def _check_outputs(out: str | None, plot: str | None, inputs: tuple[str, ...] = ()) -> None:
    """Refuse unwritable report paths, paths inside an input, or one file for both, before the work, not after it."""
    from layerseg_merge.io.output import check_writable_file

    for path in (out, plot):
        if path:
            check_writable_file(path, inputs)
    if out and plot and _same_file(out, plot):
        chart = Path(plot).with_name(f"{Path(plot).stem}-chart.png")
        raise click.ClickException(f"--out and --plot name the same file {plot}: the chart would replace the report; "
                                   f"give the chart its own file, e.g. --plot {chart}")


def _write(path: str, write, what: str):
    """``write()`` for the file ``path``: a failure (a full disk, say) is one line naming it."""
    with reported(what), writing(path):
        return write()


def _finish(report: dict, out: str | None, plot: str | None, title: str, what: str) -> None:
    click.echo(markdown(report))
    if out:
        _write(out, lambda: write_json(report, out), what)
        click.echo(f"report written to {out}", err=True)
    if plot:
        _write(plot, lambda: bar_chart(per_class_values(report), plot, title), what)
        click.echo(f"per-class chart written to {plot}", err=True)


def _run(action, what: str = "evaluation"):
    with reported(what):
        return action()


@click.command("eval")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@data_options(" | ".join(kind.spec for kind in KINDS.values() if kind.tasks != ("images",)),
              split_help=f"for {', '.join(split_readers())}; "
              f"{', '.join(name for name in KINDS if name not in split_readers())} data are read whole",
              workers_help="DataLoader workers decoding images")
@click.option("--task", type=click.Choice(["semantic", "panoptic"]), default="semantic", show_default=True)
@inference_options(4, device_help="auto = CUDA when available, else CPU", tuning=True)
@threads_option
@click.option("--classes", type=click.Choice(["19", "16", "13"]), default="19", show_default=True,
              help="average over the 19 Cityscapes classes, or SYNTHIA's 16 (no terrain, truck, train) or 13 (also no "
              "wall, fence, pole)")
@click.option("--out", type=click.Path(dir_okay=False), help="write the report JSON here")
@click.option("--plot", type=click.Path(dir_okay=False), help="write a per-class bar chart (PNG)")
@click.option("--card", is_flag=True, help="add the result to MODEL/README.md as Hugging Face model-index metadata")
@click.option("--show-dir", type=click.Path(file_okay=False),
              help="paint the predictions into this folder: the image with the prediction, the ground truth and an "
              "error map, with a legend (replaces an earlier painting there, nothing else)")
@click.option("--show", type=click.IntRange(min=1), default=None,
              help="paint N images spread evenly over the split (default: all; needs --show-dir)")
def eval_command(model, on: DataOptions, task, infer: InferenceOptions, classes, out, plot, card, threads,
                 show_dir, show) -> None:
    """Run MODEL (a transformers directory) over a dataset and score it."""
    from layerseg_merge.eval.datasets import input_paths
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.io.output import check_writable_file

    data_paths = input_paths(on.data)
    _run(lambda: _check_outputs(out, plot, inputs=(model, *data_paths)))
    if show_dir or show:
        from layerseg_merge.eval.painting import check_show, check_show_dir

        _run(lambda: check_show(show_dir, show))
        if show_dir:
            _run(lambda: check_show_dir(show_dir, (model, *data_paths)))
    model_card = str(Path(model) / "README.md")
    if card:  # the one file of MODEL this command may write
        _run(lambda: check_writable_file(model_card, inputs=data_paths))
    note_test_scale(infer)
    with reported("evaluation"), sharing_cores(on, infer.device, threads) as on:
        report = evaluate(model, on, task, infer, classes=int(classes), show_dir=show_dir, show=show)
    timing = report.pop("timing")
    click.echo(f"{timing['images']} images in {timing['seconds']:.1f} s on {timing['device']} "
               f"({timing['images'] / max(timing['seconds'], 1e-9):.1f} img/s; start-up before the first batch "
               f"{timing['startup_seconds']:.1f} s, not counted)", err=True)
    _finish(report, out, plot, f"{Path(model).name} on {on.data}", "evaluation")
    if show_dir:
        click.echo(f"painted predictions written to {show_dir}", err=True)
    if card:
        from layerseg_merge.eval.card_results import add_eval_result

        written = _write(model_card, lambda: add_eval_result(model, report, on.data, on.split), "evaluation")
        click.echo(f"result added to the model card {written}", err=True)


@click.group("score")
def score() -> None:
    """Score predictions already on disk."""


@score.command("semantic")
@click.option("--gt", "gt_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--pred", "pred_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--num-classes", required=True, type=int, help="number of classes (at least 1)")
@click.option("--ignore-index", default=255, show_default=True)
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False), help="one name per line")
@click.option("--workers", type=int, default=None, help="processes decoding and scoring (default: CPUs, up to 4)")
@click.option("--out", type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False))
def score_semantic_command(gt_dir, pred_dir, num_classes, ignore_index, class_names, workers, out, plot) -> None:
    """Class-index PNGs in --pred against --gt, paired by relative path (mmsegmentation IoUMetric)."""
    from layerseg_merge.eval.score import score_semantic

    if num_classes < 1:
        raise click.ClickException(f"--num-classes must be at least 1; got {num_classes}")
    _run(lambda: _check_outputs(out, plot, inputs=(gt_dir, pred_dir)), "scoring")
    names = [n for n in Path(class_names).read_text().splitlines() if n] if class_names else None
    report = _run(lambda: score_semantic(Path(gt_dir), Path(pred_dir), num_classes, ignore_index, names,
                                         workers=workers), "scoring")
    _finish(report, out, plot, "per-class IoU", "scoring")


@score.command("panoptic")
@click.option("--gt-json", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--gt-folder", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--pred-json", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--pred-folder", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--workers", type=int, default=None, help="processes decoding and scoring (default: CPUs, up to 4)")
@click.option("--out", type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False))
def score_panoptic_command(gt_json, gt_folder, pred_json, pred_folder, workers, out, plot) -> None:
    """COCO panoptic predictions (panopticapi pq_compute inputs) against ground truth."""
    from layerseg_merge.eval.score import score_panoptic

    _run(lambda: _check_outputs(out, plot, inputs=(gt_json, gt_folder, pred_json, pred_folder)), "scoring")
    report = _run(lambda: score_panoptic(Path(gt_json), Path(gt_folder), Path(pred_json), Path(pred_folder),
                                         workers=workers, warn=lambda message: click.echo(message, err=True)),
                  "scoring")
    _finish(report, out, plot, "per-category PQ", "scoring")


def _read_report(path: str) -> dict:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise click.ClickException(f"{path}: not a report JSON ({error}); pass files written by `layerseg eval "
                                   "--out` or `layerseg score --out`") from error
    semantic = isinstance(report, dict) and {"mIoU", "aAcc", "mAcc"} <= set(report)
    panoptic = isinstance(report, dict) and all(isinstance(report.get(s), dict) for s in ("All", "Things", "Stuff"))
    if not (semantic or panoptic):
        raise click.ClickException(f"{path}: not a layerseg report (no mIoU, nor All/Things/Stuff); pass files "
                                   "written by `layerseg eval --out` or `layerseg score --out`")
    return report


def report_labels(paths: list[str]) -> list[str]:
    """A unique label per report: its file stem, or its path where stems repeat."""
    stems = [Path(p).stem for p in paths]
    labels = [stem if stems.count(stem) == 1 else str(Path(p).with_suffix("")) for stem, p in zip(stems, paths)]
    if len(set(labels)) != len(labels):
        labels = list(paths)
    return labels


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--label", "labels", multiple=True,
              help="row label, once per report in order (default: file name, or path where names repeat)")
@click.option("--per-class", is_flag=True, help="a column per class: IoU (panoptic: PQ per category), then mIoU "
              "(PQ), as UDA papers print them")
@click.option("--delta-to", metavar="LABEL_OR_INDEX", is_flag=False, flag_value="1", default=None,
              help="after each value, its difference in points to this report (a label, or a position from 1); "
              "alone: to the first")
@click.option("--format", "table_format", type=click.Choice(FORMATS), default="markdown", show_default=True,
              help="the table printed (csv: each difference in a column of its own; latex: booktabs)")
@click.option("--html", "page", type=click.Path(dir_okay=False),
              help="also write a self-contained report page (HTML): tables with the differences to the --delta-to "
              "report (default: the first) coloured, per-class bars, painted predictions side by side")
@click.option("--images", type=click.IntRange(min=0), default=6, show_default=True,
              help="painted predictions (eval --show-dir) per model on the page, spread over those written")
def compare_command(reports, labels, per_class, delta_to, table_format, page, images) -> None:
    """Print several report JSONs side by side (singles vs merges)."""
    if labels and len(labels) != len(reports):
        raise click.ClickException(f"--label given {len(labels)} times for {len(reports)} reports; give one per "
                                   "report or none")
    labels = list(labels) or report_labels(list(reports))
    if len(set(labels)) != len(labels):
        raise click.ClickException("--label values repeat; give each report its own label")
    try:
        reference = reference_label(labels, delta_to) if delta_to is not None else None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    loaded = {label: _read_report(path) for label, path in zip(labels, reports)}
    kinds = {"All" in r for r in loaded.values()}
    if len(kinds) > 1:
        raise click.ClickException("mixing semantic and panoptic reports; compare them separately")
    click.echo(table(comparison(loaded, per_class, reference), table_format))
    if page:
        _write_page(page, loaded, dict(zip(labels, map(Path, reports))), reference or labels[0], images)


def _write_page(path: str, reports: dict[str, dict], sources: dict[str, Path], reference: str, images: int) -> None:
    """The report page of ``reports`` (read from ``sources``), written atomically; not into an input."""
    from layerseg_merge.eval.provenance import versions
    from layerseg_merge.eval.report_page import page, painted_images
    from layerseg_merge.io.output import check_writable_file, write_file_atomically

    folders = [painted_images(report, sources[label])[0] for label, report in reports.items()]
    _run(lambda: check_writable_file(path, inputs=[*sources.values(), *filter(None, folders)]), "compare")
    text = page(reports, sources, reference, images, versions()["layerseg-merge"])

    def write() -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, text)

    _write(path, write, "compare")
    click.echo(f"report page written to {path}", err=True)
