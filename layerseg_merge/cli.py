"""The ``layerseg`` command line. Subcommands import their (heavy) modules only when run.

``layerseg --help`` lists the commands from the table below, without importing
them, so it answers at once; a test checks that each summary matches its command.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "merge": ("layerseg_merge.merge_cli", "merge",
              "Merge the models of RECIPE into OUT (takes every mergekit-yaml option)."),
    "architectures": ("layerseg_merge.cli", "architectures",
                      "List the supported hosts (config.json `architectures`) and backbones."),
    "recipes": ("layerseg_merge.cli", "recipes", "List the shipped recipes, or print one (NAME)."),
    "eval": ("layerseg_merge.eval_cli", "eval_command", "Run MODEL (a transformers directory) over a dataset and "
             "score it."),
    "score": ("layerseg_merge.eval_cli", "score", "Score predictions already on disk."),
    "compare": ("layerseg_merge.eval_cli", "compare_command",
                "Print several report JSONs side by side (singles vs merges)."),
    "demo": ("layerseg_merge.demo", "demo",
             "Merge the miniature UDA models with mergekit and compare singles, uniform and layerwise_seg."),
    "selftest": ("layerseg_merge.cli", "selftest", "Run the test suite shipped with the package (pytest)."),
    "analyze": ("layerseg_merge.tools_cli", "analyze_command",
                "Per layer, how far MODELS are from the anchor and from their mean (relative L2, cosine)."),
    "sweep": ("layerseg_merge.tools_cli", "sweep_command",
              "Choose the anchor and schedule of RECIPE on a validation split; write the best recipe."),
    "recalibrate": ("layerseg_merge.tools_cli", "recalibrate_command",
                    "Re-estimate MODEL's BatchNorm statistics on target images; every other tensor stays "
                    "bit-identical."),
    "import": ("layerseg_merge.formats_cli", "import_group", "Import checkpoints of other toolkits as model "
               "directories."),
    "export": ("layerseg_merge.formats_cli", "export_group", "Export model directories to other toolkits' "
               "checkpoint formats."),
    "cache": ("layerseg_merge.cache_cli", "cache_group", "List the import cache of .pth checkpoints (or clear it)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="layerseg-merge")
def main() -> None:
    """Layer-wise model merging for semantic and panoptic segmentation."""


@click.command("architectures")
def architectures() -> None:
    """List the supported hosts (config.json `architectures`) and backbones."""
    from layerseg_merge.architectures import FAMILIES, HOSTS

    click.echo(f"{'host (transformers class)':40s} {'backbone prefix':36s} backbone")
    for name, host in sorted(HOSTS.items()):
        backbone = host.backbone or "any, from backbone_config.model_type"
        click.echo(f"{name:40s} {host.prefix or '(root)':36s} {backbone}")
    click.echo("\nbackbone families (model_type in config.json):")
    for family in sorted({f.name: f for f in FAMILIES.values()}.values(), key=lambda f: f.name):
        click.echo(f"  {family.name:10s} {', '.join(family.model_types)}")


@click.command("recipes")
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the shipped recipes, or print one (NAME).

    The recipes are mergekit YAML files for the paper's scenarios and a commented
    template; copy one and edit the model paths: `layerseg recipes NAME > my.yaml`.
    The miniature_* recipes use the demo's models shipped with the package; the copy
    names them by their absolute installed path, so it works from any directory.
    """
    import shutil
    import textwrap

    from layerseg_merge.resources import DEMO_ASSETS, recipe_files, recipe_summary, recipe_text

    files = recipe_files()
    if name is None:
        column = max(map(len, files)) + 2
        width = max(shutil.get_terminal_size((110, 24)).columns, column + 40)
        for stem, path in files.items():
            click.echo(textwrap.fill(recipe_summary(path), width, initial_indent=f"{stem:{column}s}",
                                     subsequent_indent=" " * column, break_on_hyphens=False))
        click.echo(f"\nThe miniature_* recipes merge the demo's models, installed in {DEMO_ASSETS / 'models'}.")
        return
    if name.removesuffix(".yaml") not in files:
        raise click.ClickException(f"no shipped recipe {name!r}; `layerseg recipes` lists them")
    click.echo(recipe_text(files[name.removesuffix(".yaml")]), nl=False)


@click.command("selftest", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def selftest(pytest_args: tuple[str, ...]) -> None:
    """Run the test suite shipped with the package (pytest).

    Inside a clone it runs the clone's tests/, elsewhere the copy shipped in the wheel;
    extra arguments go to pytest (e.g. `layerseg selftest -x -k merge`). Slow opt-in
    tests run with `-m slow`.
    """
    import sys

    from layerseg_merge.resources import tests_dir

    try:
        import pytest
    except ImportError as error:
        raise click.ClickException("pytest is not installed; install the test extra: "
                                   "pip install 'layerseg-merge[test]'") from error
    options = [] if "-m" in pytest_args else ["-m", "not slow"]
    suite = tests_dir()
    click.echo(f"running {suite}", err=True)
    sys.exit(pytest.main([str(suite), "-p", "no:cacheprovider", *options, *pytest_args]))
