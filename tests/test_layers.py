"""The package's layers (layerseg_merge/models/__init__.py): who may import whom, read from the source."""

import ast
from pathlib import Path

import layerseg_merge

PACKAGE = Path(layerseg_merge.__file__).parent
LAYERS = ("architectures", "models", "formats", "eval", "tools", "cli")
# layer -> the layers it must never import, not even inside a function
NEVER = {
    "models": {"eval", "formats", "tools", "cli"},
    "eval": {"formats", "tools", "cli"},
    "formats": {"tools", "cli"},
    "tools": {"cli"},
    "architectures": {"cli"},
    "core": {"cli"},
    "cli": set(),
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def imports() -> list[tuple[str, str]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if {"tests", "plugin_configs"} & set(relative.parts):
            continue
        module = ".".join(relative.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            found += [(module, name) for name in names if name.startswith("layerseg_merge")]
    return found


def test_each_layer_imports_only_what_it_may():
    edges = imports()
    assert any(target.startswith("layerseg_merge.models") for source, target in edges if layer_of(source) == "eval")
    wrong = [f"{source} imports {target}" for source, target in edges
             if layer_of(target) in NEVER[layer_of(source)] - {layer_of(source)}]
    assert not wrong, wrong


def test_the_rule_would_catch_eval_importing_formats():
    assert "formats" in NEVER[layer_of("layerseg_merge.eval.inference")]
    assert layer_of("layerseg_merge.formats.mmseg") == "formats" and layer_of("layerseg_merge.recipe") == "core"
