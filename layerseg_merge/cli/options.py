"""The command-line options of ``eval``, ``sweep`` and ``recalibrate`` that say what to run on and how to infer.

``@data_options(...)`` and ``@inference_options(...)`` declare the click options once and hand the
command one :class:`~layerseg_merge.eval.options.DataOptions` (argument ``on``) and one
:class:`~layerseg_merge.eval.options.InferenceOptions` (argument ``infer``). The option objects check
the values; an impossible one is a one-line error before the command starts. No torch here, so that
``--help`` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import click

from layerseg_merge.eval.options import AMP_MODES, PREPROCESS_MODES, DataOptions, InferenceOptions
from layerseg_merge.io.errors import one_line

Decorator = Callable[[Callable], Callable]


def gathered(into: str, names: tuple[str, ...], make: Callable[..., object],
             options: list[Decorator]) -> Decorator:
    """Add ``options`` (in order) to a command and pass it ``make(**their values)`` as ``into``."""
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            try:
                kwargs[into] = make(**values)
            except ValueError as error:
                raise click.ClickException(one_line(error)) from error
            return command(*args, **kwargs)

        for option in reversed(options):  # click lists the options of a stack of decorators top down
            run = option(run)
        return run

    return decorate


def data_options(data_help: str, *, split_help: str | None = None, workers_help: str | None = None,
                 limit: Decorator | None = None) -> Decorator:
    """``--data``, ``--split``, ``limit`` (a ``click.option`` whose value is named ``limit``, e.g. ``--limit`` or
    ``--images``; none: all images) and ``--workers``, handed to the command as ``on``."""
    options = [click.option("--data", required=True, help=data_help),
               click.option("--split", default="val", show_default=True, help=split_help),
               *([limit] if limit else []),
               click.option("--workers", type=int, default=None,
                            help=(workers_help or "DataLoader workers") + " (default: as the cores allow beside the "
                            "torch threads, at most 2)")]
    return gathered("on", ("data", "split", "limit", "workers"), DataOptions, options)


def _slide(value: str | None) -> tuple[int, int] | None:
    """``--slide CROP,STRIDE`` as two numbers (:class:`InferenceOptions` checks them)."""
    if value is None:
        return None
    try:
        crop, stride = (int(v) for v in value.split(","))
    except ValueError:
        raise click.ClickException(f"--slide {value}: use CROP,STRIDE in pixels, e.g. 512,341") from None
    return crop, stride


def parse_test_scale(value: str | None) -> tuple[int, int] | None:
    """``--test-scale W,H`` as two checked sizes (import and eval), before any checkpoint is read."""
    if value is None:
        return None
    from layerseg_merge.eval.pipeline_sizes import PipelineError, checked_test_scale

    try:
        width, height = (int(v) for v in value.split(","))
    except ValueError:
        raise click.ClickException(f"--test-scale {value}: use W,H, e.g. 1024,512") from None
    try:
        return checked_test_scale((width, height), value)
    except PipelineError as error:
        raise click.ClickException(str(error)) from None


def note_test_scale(infer: InferenceOptions) -> None:
    """Say, before the work, that ``--test-scale`` leaves the paper's protocol (the report records it)."""
    import os

    if infer.test_scale is not None and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 says it
        width, height = infer.test_scale
        click.echo(f"--test-scale {width},{height}: the test img_scale replaces the imported model's; the numbers "
                   "are not those of its paper's protocol (the report's provenance records the scale)", err=True)


def _inference(slide: str | None = None, compile_model: bool = False, test_scale: str | None = None,
               **values) -> InferenceOptions:
    return InferenceOptions(slide=_slide(slide), compile=compile_model, test_scale=parse_test_scale(test_scale),
                            **values)


def inference_options(batch_size: int, *, device_help: str | None = None, batch_help: str | None = None,
                      tuning: bool = False) -> Decorator:
    """``--device`` and ``--batch-size`` (default ``batch_size``), with ``tuning`` also ``--amp``, ``--slide``,
    ``--preprocess`` and ``--compile``, handed to the command as ``infer``."""
    options = [click.option("--device", default="auto", show_default=True, help=device_help),
               click.option("--batch-size", default=batch_size, show_default=True, help=batch_help)]
    if tuning:
        options += [
            click.option("--amp", type=click.Choice(sorted(AMP_MODES)), default="off", show_default=True),
            click.option("--slide", default=None, help="sliding-window inference CROP,STRIDE (semantic models)"),
            click.option("--preprocess", type=click.Choice(list(PREPROCESS_MODES)), default="auto",
                         show_default=True,
                         help="auto/device: resize and normalise on the device (SegFormer, Mask2Former, MaskFormer "
                         "processors); processor: the transformers image processor on the CPU"),
            click.option("--compile", "compile_model", is_flag=True,
                         help="torch.compile the model (one static shape per batch; falls back to eager with a "
                         "message)"),
            click.option("--test-scale", metavar="W,H", default=None,
                         help="imported DAFormer/HRDA/MIC models: the test img_scale instead of the imported one, for "
                         "data far from its size; leaves the paper's protocol (recorded in the report)")]
    names = ("device", "batch_size", "amp", "slide", "preprocess", "compile_model", "test_scale")
    return gathered("infer", names, _inference, options)


THREADS_HELP = ("torch threads (default: the cores this process may use, from its affinity mask and cgroup quota and "
                "shared by torchrun ranks on one machine, less the DataLoader workers; OMP_NUM_THREADS is honoured)")


def threads_option(command):
    """``--threads``: torch's intra-op threads (:mod:`layerseg_merge.io.cpus` chooses when it is not given)."""
    return click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP)(command)


@contextlib.contextmanager
def sharing_cores(on: DataOptions, device: str, threads: int | None) -> Iterator[DataOptions]:
    """Inside, threads and DataLoader workers within the cores this process may use (``on`` with its workers);
    says what it chose (rank 0); torch's thread count restored at the end."""
    import os
    from dataclasses import replace

    from layerseg_merge.io.cpus import configured

    with configured(threads, on.workers, device) as plan:
        if os.environ.get("RANK", "0") == "0":
            click.echo(f"threads: {plan.describe()}", err=True)
        yield replace(on, workers=plan.workers)
