"""The package layers: core ← passes ← targets ← driver, and no import cycles.

Every import statement is read from the source (function-level imports included), so a
lazy import cannot hide an upward dependency or a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "passes", "targets")
# The core: below passes; imports nothing above it.
CORE = {"compiler", "compiler.errors", "compiler.program", "compiler.ir", "compiler.frontend", "compiler.atomic",
        "compiler.hostexec", "compiler.progress", "compiler.fold_shapes", "compiler.conv_transpose", "compiler.qonnx",
        "compiler.onnx_checks", "compiler.control_flow", "compiler.recurrent"}
RANK = {"core": 0, "passes": 1, "targets": 2, "driver": 3}


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    top = module.split(".")[0]
    return "driver" if top == "compiler" else top


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def import_graph() -> nx.DiGraph:
    """Module → imported module, for every import of a project module."""
    mods = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never imported at run time
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule when there is one, else pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in mods and t != name)
    return graph


def test_import_graph_sees_the_packages():
    graph = import_graph()
    assert {"compiler.api", "passes.quantize.realize", "targets.integer.kernels"} <= set(graph)
    assert graph.has_edge("compiler.api", "targets")


def test_no_upward_imports():
    upward = sorted(f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, b in import_graph().edges
                    if RANK[layer(b)] > RANK[layer(a)])
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    cycles = [c for c in nx.simple_cycles(import_graph())]
    assert not cycles, "\n".join(" -> ".join(c + c[:1]) for c in cycles[:20])
