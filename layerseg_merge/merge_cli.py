"""``layerseg merge``: mergekit-yaml with strict recipes and safe, atomic output."""

from __future__ import annotations

import click
from mergekit.options import add_merge_options

from layerseg_merge.errors import reported


def _check_device(merge_options) -> None:
    device = str(merge_options.device or "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise click.ClickException("--cuda / --device cuda asked for, but this machine has no CUDA device "
                                       "torch can use; drop the option to merge on the CPU")


@click.command("merge")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace OUT if it holds a previous model output.")
@click.option("--recalibrate", "recalibrate_data", default=None, metavar="KIND:PATH",
              help="re-estimate the merge's BatchNorm statistics on these target images (labels unused)")
@click.option("--recalibrate-images", type=click.IntRange(min=1), default=None, help="use the first N images")
@add_merge_options
def merge(merge_options, recipe: str, out: str, overwrite: bool, recalibrate_data: str | None,
          recalibrate_images: int | None) -> None:
    """Merge the models of RECIPE into OUT (takes every mergekit-yaml option).

    The result is written beside OUT and moved into place in one step only when
    the merge succeeded (and, for layerwise_seg, holds exactly the anchor's
    tensors). OUT may not be or hold an input, the current directory or the
    recipe's folder; --overwrite replaces only a previous model output.
    """
    with reported("merge"):
        from layerseg_merge.api import merge as merge_recipe

        _check_device(merge_options)
        merge_recipe(recipe, out, overwrite=overwrite, options=merge_options, recalibrate=recalibrate_data,
                     recalibrate_images=recalibrate_images, log=lambda message: click.echo(message, err=True))
    click.echo(f"merged model written to {out}", err=True)
