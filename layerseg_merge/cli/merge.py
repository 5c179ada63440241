"""``layerseg merge``: mergekit-yaml with strict recipes and safe, atomic output.

Start-up is kept short: the recipe file, its YAML, the output path and the inputs' existence
are checked before mergekit or torch is imported (that takes seconds), and ``--help`` lists
mergekit's options from :mod:`layerseg_merge.cli.merge_options` without importing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from layerseg_merge.cli.merge_options import given_arguments, merge_option_params, parse_merge_options
from layerseg_merge.cli.reporting import reported

if TYPE_CHECKING:
    from layerseg_merge.engine.recipe_yaml import RecipeFile

MERGEKIT_OPTIONS, _ = merge_option_params()


def _is_local(path: str) -> bool:
    from layerseg_merge.io.hub import is_hub_id

    return not is_hub_id(path.split("@", 1)[0])


def quick_checks(recipe: str, out: str, overwrite: bool) -> RecipeFile:
    """What fails without mergekit: the recipe file and its YAML, the output path, missing local models; returns
    the recipe as read (once: a pipe gives its text only once)."""
    from layerseg_merge.engine.recipe_yaml import RecipeError, RecipeFile, model_paths
    from layerseg_merge.io.output import check_replaceable, check_target

    read = RecipeFile.read(recipe)
    local = [path for path in model_paths(read.data) if _is_local(path)]
    for path in local:
        if not os.path.exists(path.split("@", 1)[0]) and "+" not in path:
            raise RecipeError(f"{recipe}: model {path} not found: no such folder or checkpoint file (relative paths "
                              f"start at the current directory, {os.getcwd()})")
    target = Path(out)
    check_target(target, [p.split("@", 1)[0] for p in local if "+" not in p], recipe)
    check_replaceable(target, overwrite, "file" if out.lower().endswith(".pth") else "dir")
    return read


@click.command("merge", params=MERGEKIT_OPTIONS)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace OUT if it holds a previous model output.")
@click.option("--recalibrate", "recalibrate_data", default=None, metavar="KIND:PATH",
              help="re-estimate the merge's BatchNorm statistics on these target images (labels unused)")
@click.option("--recalibrate-images", type=click.IntRange(min=1), default=None, help="use the first N images")
@click.pass_context
def merge(ctx: click.Context, recipe: str, out: str, overwrite: bool, recalibrate_data: str | None,
          recalibrate_images: int | None, **mergekit_options) -> None:
    """Merge the models of RECIPE into OUT (takes every mergekit-yaml option).

    Models may be model folders, Hub ids or mmseg checkpoints (.pth, imported
    once into a cache; see `layerseg cache`). OUT is a folder, or a .pth file to
    export the merge in the anchor's mmseg format. The result is written beside
    OUT and moved into place in one step only when the merge succeeded (and, for
    layerwise_seg, holds exactly the anchor's tensors). OUT may not be or hold an
    input, the current directory or the recipe's folder; --overwrite replaces
    only a previous model output.
    """
    with reported("merge"):
        read = quick_checks(recipe, out, overwrite)
        from layerseg_merge.api import merge as merge_recipe
        from layerseg_merge.io.cpus import configured

        merge_options = parse_merge_options(given_arguments(ctx, list(mergekit_options)))
        # torch's threads: mergekit's --num-threads (mergekit applies it too), else the cores this process may use,
        # less the DataLoader workers of a --recalibrate
        with configured(merge_options.num_threads, None if recalibrate_data else 0,
                        str(merge_options.device or "cpu")) as plan:
            click.echo(f"threads: {plan.describe()}", err=True)
            merge_recipe(read, out, overwrite=overwrite, options=merge_options, recalibrate=recalibrate_data,
                         recalibrate_images=recalibrate_images, log=lambda message: click.echo(message, err=True))
    click.echo(f"merged model written to {out}", err=True)
