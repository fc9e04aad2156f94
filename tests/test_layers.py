"""The package's shape: no import cycle, each layer imports only the layers below it, no command
module imports another. Function-level imports count (ast walk of every module)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

INFER = Path(__file__).resolve().parents[1] / "infer"
PACKAGE = "unetlite.infer"
# Bottom to top. "base" is the package's own top-level modules (errors, extras, signals).
LAYERS = ("base", "io", "engine", "pipeline", "serve", "cli")
COMMANDS = ("segment", "video", "eval", "info", "bench", "serve")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(INFER).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The unetlite.infer modules one ``from ... import`` names (a name may be a submodule)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in INFER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                targets = resolve(name, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 2:
        return "package"   # unetlite.infer itself: the public names, loaded lazily
    return parts[2] if parts[2] in LAYERS[1:] or parts[2] == "models" else "base"


GRAPH = import_graph()


def test_the_walk_sees_the_package():
    assert f"{PACKAGE}.engine.segmenter" in GRAPH and f"{PACKAGE}.cli.segment" in GRAPH
    assert f"{PACKAGE}.engine.runtimes.base" in GRAPH[f"{PACKAGE}.engine.runtimes.onnxruntime"]


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodule (registry) is no cycle
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer(m) not in ("package", "models")))
def test_each_layer_imports_only_layers_below(module):
    mine = LAYERS.index(layer(module))
    for target in GRAPH[module]:
        theirs = layer(target)
        if theirs == "package":
            pytest.fail(f"{module} imports the package's public facade; import the defining module")
        assert LAYERS.index(theirs) <= mine, f"{module} ({layer(module)}) imports {target} ({theirs})"


def test_runtime_base_imports_no_sibling():
    base = f"{PACKAGE}.engine.runtimes.base"
    assert not {t for t in GRAPH[base] if t.startswith(f"{PACKAGE}.engine")}


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_another(command):
    module = f"{PACKAGE}.cli.{command}"
    others = {f"{PACKAGE}.cli.{c}" for c in COMMANDS if c != command}
    assert not GRAPH[module] & others
    assert not any(t.startswith(f"{PACKAGE}.cli.") and t.endswith("__init__") for t in GRAPH[module])


def test_pipeline_never_reads_argparse_nor_prints():
    for path in (INFER / "pipeline").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "argparse" not in imported, path.name
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id == "print"]
        assert not calls, f"{path.name} prints"
