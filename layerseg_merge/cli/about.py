"""Commands about the package itself: its architectures, its recipes, its test suite."""

from __future__ import annotations

import click


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
    tests run with `-m slow`. The tests run in one process per CPU core, at most 4
    (pytest-xdist, `-n N` to choose; `-n 0` runs them in this process).
    """
    import sys

    from layerseg_merge.resources import tests_dir

    try:
        import pytest
    except ImportError as error:
        raise click.ClickException("pytest is not installed; install the test extra: "
                                   "pip install 'layerseg-merge[test]'") from error
    options = [] if "-m" in pytest_args else ["-m", "not slow"]
    options += _parallel(pytest_args)
    suite = tests_dir()
    click.echo(f"running {suite}", err=True)
    sys.exit(pytest.main([str(suite), "-p", "no:cacheprovider", *options, *pytest_args]))


def _parallel(pytest_args: tuple[str, ...]) -> list[str]:
    """``-n N --dist worksteal`` (idle workers take queued tests from busy ones) unless the arguments
    choose, or pytest-xdist is missing; N: the CPU cores this process may use, at most 4."""
    import importlib.util
    import os

    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in pytest_args)
    if chosen or importlib.util.find_spec("xdist") is None:
        return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return ["-n", str(min(cores, 4)), "--dist", "worksteal"] if cores > 1 else []
