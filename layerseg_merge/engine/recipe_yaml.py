"""Reading a recipe's YAML strictly, without importing mergekit or torch (so bad files fail at once).

PyYAML's ``safe_load`` keeps the last of two equal keys (a second ``parameters:`` block silently
replaces the first), expands aliases lazily (an "alias bomb" of a few lines makes anything that
walks the result hang) and overflows Python's stack on deep nesting. Here each is a one-line
:class:`RecipeError` naming the file, and the line where it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_VALUES = 100_000  # a recipe with thousands of tensor filters is still far below this
MAX_DEPTH = 32


class RecipeError(ValueError):
    """A recipe that cannot be merged as written."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise RecipeError(f"key {key!r} appears twice (lines {seen[key]} and {line}); YAML would "
                                          "keep only the second: merge the two into one")
                    seen[key] = line
                except TypeError:  # an unhashable key: PyYAML reports it below
                    pass
        return super().construct_mapping(node, deep=deep)


def check_size(data: Any) -> None:
    """Walk the loaded recipe as a consumer would (aliases expanded), refusing huge or deep ones."""
    count = 0
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise RecipeError(f"it expands to more than {MAX_VALUES} values (YAML aliases that refer to aliases?); "
                              "write the recipe out plainly")
        if depth > MAX_DEPTH:
            raise RecipeError(f"it is nested more than {MAX_DEPTH} levels deep; a recipe needs a handful")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def parse_yaml(source: str, where: str) -> Any:
    """The YAML document ``source`` (``where`` names it in errors), strictly."""
    try:
        data = yaml.load(source, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
        check_size(data)
    except RecipeError as error:
        raise RecipeError(f"{where}: {error}") from None
    except RecursionError:
        raise RecipeError(f"{where}: it is nested too deeply to read; a recipe needs a handful of levels") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{where}: not valid YAML: {' '.join(str(error).split())}") from None
    return data


def read_recipe_file(path: str | Path) -> tuple[dict, str]:
    """The mapping and source text of a recipe file; one-line errors for missing, unreadable or bad files."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file (relative paths start at {Path.cwd()})") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a folder; give the recipe's .yaml file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot read recipe ({getattr(error, 'strerror', None) or error})") from None
    data = parse_yaml(source, str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with merge_method, models, ...")
    return data, source


@dataclass(frozen=True)
class RecipeFile:
    """A recipe file read once: its path, mapping and source text (a pipe or ``/dev/stdin`` can be read only
    once, so whoever reads it first passes this on)."""

    path: str
    data: dict
    source: str

    @classmethod
    def read(cls, path: str | Path) -> RecipeFile:
        data, source = read_recipe_file(path)
        return cls(str(path), data, source)


def replace_model_paths(data: dict, replace) -> None:
    """Apply ``replace`` to every model path string of a raw recipe (models, slices, modules, base_model)."""
    def one(holder: dict, key: str) -> None:
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            holder[key] = replace(holder[key])

    def section(part: dict) -> None:
        one(part, "base_model")
        for entry in part.get("models") or []:
            one(entry, "model")
        for piece in part.get("slices") or []:
            one(piece, "base_model")
            for source in (piece.get("sources") or []) if isinstance(piece, dict) else []:
                one(source, "model")

    section(data)
    for module in (data.get("modules") or {}).values():
        if isinstance(module, dict):
            section(module)


def model_paths(data: dict) -> list[str]:
    """The model paths of a raw recipe, in recipe order, each once."""
    found: list[str] = []
    replace_model_paths(data, lambda path: found.append(path) or path)
    return list(dict.fromkeys(found))
