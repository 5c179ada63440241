"""``layerseg merge``: a mergekit-yaml that writes its output only when the merge succeeded."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click
from mergekit.options import add_merge_options


def check_output_names(out: Path, anchor: str) -> None:
    """Fail unless the merged checkpoint holds exactly the anchor's tensors."""
    from layerseg_merge.checkpoint import read_tensor_headers

    written, expected = set(read_tensor_headers(str(out))), set(read_tensor_headers(anchor))
    if written != expected:
        missing, extra = sorted(expected - written), sorted(written - expected)
        raise click.ClickException(
            f"merged model does not hold exactly the anchor's tensors: missing {missing[:5]} "
            f"({len(missing)}), unexpected {extra[:5]} ({len(extra)}); nothing was written"
        )


@click.command("merge")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it already holds files.")
@add_merge_options
def merge(merge_options, recipe: str, out: str, overwrite: bool) -> None:
    """Merge the models of RECIPE into OUT (takes every mergekit-yaml option).

    The result is written next to OUT and moved into place only when the merge
    succeeded (and, for layerwise_seg, holds exactly the anchor's tensors), so a
    failed merge never leaves something that looks complete.
    """
    from mergekit.merge import run_merge

    import layerseg_merge  # noqa: F401  (registers with mergekit)
    from layerseg_merge.method import METHOD_NAME
    from layerseg_merge.recipe import RecipeError, load_recipe

    target = Path(out)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise click.ClickException(f"{target} is not empty; pass --overwrite to replace it")
    try:
        config, source = load_recipe(recipe)
    except (RecipeError, ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    # Vision checkpoints have no tokenizer to copy.
    merge_options = merge_options.model_copy(update={"copy_tokenizer": False})
    merge_options.apply_global_options()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        run_merge(config, str(staging), options=merge_options, config_source=source)
        if config.merge_method == METHOD_NAME:
            check_output_names(staging, config.base_model.model.path)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, ValueError | RuntimeError | FileNotFoundError):
            raise click.ClickException(f"merge failed: {error}") from error
        raise
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    click.echo(f"merged model written to {target}", err=True)
