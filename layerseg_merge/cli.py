"""The ``layerseg`` command line. Subcommands import their (heavy) modules only when run."""

from __future__ import annotations

import importlib

import click

_COMMANDS = {
    "merge": ("layerseg_merge.merge_cli", "merge"),
    "architectures": ("layerseg_merge.cli", "architectures"),
    "eval": ("layerseg_merge.eval_cli", "eval_command"),
    "score": ("layerseg_merge.eval_cli", "score"),
    "compare": ("layerseg_merge.eval_cli", "compare_command"),
    "demo": ("layerseg_merge.demo", "demo"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attribute = _COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)


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
