"""mergekit-yaml's options for ``layerseg merge``, without importing mergekit (it takes seconds).

``merge_options.json`` describes the options of the mergekit release we pin (what
``mergekit.options.add_merge_options`` declares). ``layerseg merge --help`` and the parsing of
the command line use it; once the fast checks have passed, the options given are parsed again
by mergekit's own ``add_merge_options`` into a ``MergeOptions``, so their meaning is mergekit's.
Where the installed mergekit declares other options (another release, or one with the upstream
series applied: ``source`` is a digest of its ``options.py``), mergekit's options are used directly
(slower start-up, never stale). ``python -m layerseg_merge.cli.merge_options`` rewrites the file; a test
checks it against the installed mergekit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

SPEC = Path(__file__).with_name("merge_options.json")
_TYPES = {"BoolParamType": click.BOOL, "IntParamType": click.INT, "FloatParamType": click.FLOAT}


def mergekit_version() -> str | None:
    try:
        return version("mergekit")
    except PackageNotFoundError:
        return None


def options_source() -> str | None:
    """sha256 of the ``mergekit/options.py`` that ``import mergekit`` would load (found without importing it)."""
    for entry in sys.path:
        path = Path(entry or ".") / "mergekit" / "options.py"
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def live_spec() -> dict[str, Any]:
    """The description of the installed mergekit's options (imports mergekit)."""
    from mergekit.options import add_merge_options

    @click.command()
    @add_merge_options
    def probe(merge_options) -> None:  # pragma: no cover (never run)
        pass

    options = [{"name": p.name, "opts": p.opts, "secondary_opts": p.secondary_opts, "type": type(p.type).__name__,
                "default": p.default, "is_flag": p.is_flag, "count": p.count, "show_default": p.show_default,
                "help": p.help} for p in probe.params]
    return {"mergekit": mergekit_version(), "source": options_source(), "options": options}


def _option(entry: dict[str, Any]) -> click.Option:
    declarations = ["/".join([*entry["opts"], *entry["secondary_opts"]]) if entry["secondary_opts"]
                    else entry["opts"][0], *([] if entry["secondary_opts"] else entry["opts"][1:])]
    if entry["count"]:
        declarations = [*entry["opts"], entry["name"]]
    extra: dict[str, Any] = {"count": True} if entry["count"] else {}
    if entry["is_flag"] and not entry["secondary_opts"]:
        extra["is_flag"] = True
    kind = _TYPES.get(entry["type"], click.STRING)  # others (shard sizes): mergekit parses the text later
    return click.Option(declarations, type=None if entry["count"] or extra.get("is_flag") else kind,
                        default=entry["default"], help=entry["help"], show_default=entry["show_default"], **extra)


def merge_option_params() -> tuple[list[click.Option], bool]:
    """Click options for mergekit's merge options, and whether they came from the shipped description."""
    spec = json.loads(SPEC.read_text())
    if spec.get("source") == options_source():
        return [_option(entry) for entry in spec["options"]], True
    return [_option(entry) for entry in live_spec()["options"]], False


def given_arguments(ctx: click.Context, names: list[str]) -> list[str]:
    """The command-line words of the options ``names`` the user gave (to be parsed again by mergekit)."""
    words: list[str] = []
    for param in ctx.command.params:
        if param.name not in names or ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.count:
            words += [param.opts[0]] * value
        elif param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            words += [param.opts[0]] if value else []
        else:
            words += [param.opts[0], str(value)]
    return words


def parse_merge_options(words: list[str]):
    """A ``MergeOptions`` from command-line words, parsed by mergekit's own ``add_merge_options``."""
    from mergekit.options import add_merge_options

    @click.command()
    @add_merge_options
    def parse(merge_options):
        return merge_options

    return parse.main(words, standalone_mode=False)


if __name__ == "__main__":
    SPEC.write_text(json.dumps(live_spec(), indent=1) + "\n")
    print(f"wrote {SPEC} for mergekit {mergekit_version()}")
