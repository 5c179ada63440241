"""The package's layers (ARCHITECTURE.md): one order over every module, read from the source, and no import cycles.

Each module belongs to a room (its package, or a top-level module); a room may import only the rooms below
it in :data:`ORDER`, function-level imports included. The facade (``layerseg_merge/__init__.py``) is the top:
nothing inside imports it.
"""

import ast
from pathlib import Path

import layerseg_merge

PACKAGE = Path(layerseg_merge.__file__).parent
# bottom first; a room imports only rooms before it (and itself)
ORDER = ("resources", "_moved", "io", "architectures", "models", "engine", "plugin", "eval", "formats", "tools",
         "api", "cli", "facade")


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    room = parts[1]
    assert room in ORDER, f"{module}: a module outside every room; give it a room in ORDER (and ARCHITECTURE.md)"
    return room


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if {"tests", "plugin_configs", "assets"} & set(relative.parts):
            continue
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        found[".".join(parts)] = path
    return found


def imports() -> list[tuple[str, str]]:
    """(importer, imported) for every import of a package module by another, at any depth of the code."""
    known = modules()
    edges = []
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from package import submodule` imports the submodule; `from module import name`, the module
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                         for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("layerseg_merge") and name in known and name != module:
                    edges.append((module, name))
    return edges


def test_every_room_imports_only_rooms_below_it():
    edges = imports()
    assert any(room_of(target) == "models" for source, target in edges if room_of(source) == "eval")
    wrong = [f"{source} ({room_of(source)}) imports {target} ({room_of(target)})" for source, target in edges
             if ORDER.index(room_of(target)) > ORDER.index(room_of(source))]
    assert not wrong, wrong


def test_the_method_room_knows_nothing_of_mergekit_or_click():
    for module, path in modules().items():
        if room_of(module) in ("engine", "io", "architectures", "models"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                assert not any(n.split(".")[0] in ("mergekit", "click") for n in names), (module, names)


def strongly_connected(edges: list[tuple[str, str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of the import graph."""
    graph: dict[str, list[str]] = {}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            found.append(component)

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    """Function-level imports included. The facade's registration callback (it imports the plugin, whose
    modules import nothing above them) is not an edge back: nothing inside imports the facade."""
    cycles = [sorted(c) for c in strongly_connected(imports()) if len(c) > 1]
    assert not cycles, cycles


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) in (
        [{"d"}, {"a", "b", "c"}], [{"a", "b", "c"}, {"d"}])


def test_the_rule_would_catch_an_upward_import():
    assert ORDER.index(room_of("layerseg_merge.formats.mmseg")) > ORDER.index(room_of("layerseg_merge.eval.datasets"))
    assert room_of("layerseg_merge.engine.plan") == "engine" and room_of("layerseg_merge") == "facade"
