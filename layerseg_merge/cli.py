"""The ``layerseg`` command line."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click


@click.group()
@click.version_option(package_name="layerseg-merge")
def main() -> None:
    """Layer-wise model merging for semantic and panoptic segmentation."""


def _merge_command():
    from mergekit.options import add_merge_options

    @main.command("merge")
    @click.argument("recipe", type=click.Path(dir_okay=False))
    @click.argument("out", type=click.Path(file_okay=False))
    @click.option("--overwrite", is_flag=True, help="Replace OUT if it already holds files.")
    @add_merge_options
    def merge(merge_options, recipe: str, out: str, overwrite: bool) -> None:
        """Merge the models of RECIPE into OUT (takes every mergekit-yaml option).

        The result is written next to OUT and moved into place only when the merge
        succeeded, so a failed merge never leaves something that looks complete.
        """
        from mergekit.merge import run_merge

        import layerseg_merge  # noqa: F401  (registers with mergekit)
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
        except Exception as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, ValueError | RuntimeError | FileNotFoundError):
                raise click.ClickException(f"merge failed: {error}") from error
            raise
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        click.echo(f"merged model written to {target}", err=True)

    return merge


if "merge" not in main.commands:
    _merge_command()


if __name__ == "__main__":
    sys.exit(main())
