"""``layerseg cache``: the import cache of ``.pth`` checkpoints named in recipes (list, clear)."""

from __future__ import annotations

import math
import time

import click

from layerseg_merge.cli.reporting import reported


@click.group("cache", invoke_without_command=True)
@click.pass_context
def cache_group(ctx: click.Context) -> None:
    """List the import cache of .pth checkpoints (or clear it)."""
    if ctx.invoked_subcommand is not None:
        return
    with reported("cache"):
        from layerseg_merge.formats.cache import cache_root, entries, max_bytes

        found = entries()
        total, limit = sum(e.size for e in found), max_bytes()
        click.echo(f"{cache_root() / 'mmseg'}: {len(found)} entries, {total / 1e9:.2f} GB "
                   f"(limit {f'{limit / 1e9:g} GB' if limit < math.inf else 'none'}: LAYERSEG_CACHE_MAX_GB; "
                   "location: LAYERSEG_CACHE)")
        for entry in found:
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
            click.echo(f"  {entry.path.name}  {entry.size / 1e9:.2f} GB  last used {used}  from {entry.source}")


@cache_group.command("clear")
def clear() -> None:
    """Remove every entry of the import cache (they are imported again when a recipe needs them)."""
    with reported("cache clear"):
        from layerseg_merge.formats.cache import entries, remove

        found = entries()
        for entry in found:
            remove(entry.path)
        click.echo(f"removed {len(found)} cache entries ({sum(e.size for e in found) / 1e9:.2f} GB)")
