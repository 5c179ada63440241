"""Files shipped with the package: recipe templates (``plugin_configs/``) and the demo's assets.

In a wheel the recipes live inside the package (``layerseg_merge/plugin_configs``);
in a clone or an editable install they are the repository's top-level ``plugin_configs/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEMO_ASSETS = PACKAGE / "assets" / "miniature_uda"
# How the shipped recipes name the demo's models (paths from the repository root).
DEMO_ASSETS_IN_RECIPES = "layerseg_merge/assets/miniature_uda"
_SHIPPED_MODEL = re.compile(rf"^(\s*(?:-\s+)?(?:base_model|model):\s+){re.escape(DEMO_ASSETS_IN_RECIPES)}/(\S+)\s*$",
                            re.MULTILINE)
_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")


def recipes_dir() -> Path:
    for candidate in (PACKAGE / "plugin_configs", PACKAGE.parent / "plugin_configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the shipped recipes (plugin_configs) are missing from this installation; "
                            "reinstall layerseg-merge")


def recipe_files() -> dict[str, Path]:
    """Shipped recipes by name (file stem)."""
    return {path.stem: path for path in sorted(recipes_dir().glob("*.yaml"))}


def recipe_text(path: Path) -> str:
    """A shipped recipe as ``layerseg recipes NAME`` prints it: the demo's models as absolute paths of this
    installation, so that the copy works from any directory (with ``layerseg merge`` and ``mergekit-yaml``)."""

    def absolute(match: re.Match) -> str:
        where = (DEMO_ASSETS / match[2]).as_posix()
        return match[1] + (where if _PLAIN.fullmatch(where) else json.dumps(where))  # JSON strings are YAML

    return _SHIPPED_MODEL.sub(absolute, path.read_text(encoding="utf-8"))


def recipe_summary(path: Path) -> str:
    """The first sentence of a recipe's leading comment, whole (it may span several comment lines)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or not line[1:].strip():
            break
        lines.append(line[1:].strip())
    text = " ".join(lines)
    end = re.search(r"\.(?=\s+[A-Z`(]|$)", text)
    return text[:end.end()] if end else text


def _is_clone(folder: Path) -> bool:
    project = folder / "pyproject.toml"
    return (folder / "tests" / "conftest.py").is_file() and project.is_file() and \
        'name = "layerseg-merge"' in project.read_text(encoding="utf-8", errors="replace")


def tests_dir() -> Path:
    """The test suite to run: the clone's ``tests/`` when run inside a clone, else the installed copy."""
    for folder in (Path.cwd(), *Path.cwd().parents, PACKAGE.parent):
        if _is_clone(folder):
            return folder / "tests"
    if (PACKAGE / "tests" / "conftest.py").is_file():  # the copy the wheel ships
        return PACKAGE / "tests"
    raise FileNotFoundError("the test suite is missing from this installation; reinstall layerseg-merge")


def demo_assets() -> Path:
    if not (DEMO_ASSETS / "models").is_dir():
        raise FileNotFoundError(f"the demo's models are missing from this installation ({DEMO_ASSETS}); "
                                "reinstall layerseg-merge")
    return DEMO_ASSETS
