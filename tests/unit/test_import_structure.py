"""The shape DESIGN.md asks for, checked on the source: no import cycle, backends blind to the pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edgekit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Return the edgekit modules `path` imports (at module level only, or anywhere), TYPE_CHECKING excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    statements: list[ast.AST] = []

    def collect(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                collect([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
            statements.append(node)

    collect(tree.body)
    nodes = statements if top_level_only else [n for s in statements for n in ast.walk(s)]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edgekit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgekit"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only=top_level_only) if m in modules} - {name}
            for name, path in modules.items()}  # fmt: skip


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return import cycles, ignoring a package that imports its own submodules (a -> a.b)."""
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])

    def nested(cycle: list[str]) -> bool:
        return all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:], strict=False))

    return [c for c in cycles if not nested(c)]


def test_no_import_cycle_at_module_level() -> None:
    assert _cycles(_graph(top_level_only=True)) == []


def test_backends_import_nothing_from_the_pipeline_or_the_stages() -> None:
    graph = _graph(top_level_only=False)
    offenders = {
        module: sorted(m for m in imports if m.startswith(("edgekit.pipeline", "edgekit.stages", "edgekit.api")))
        for module, imports in graph.items()
        if module.startswith("edgekit.backends")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_checks_can_fail() -> None:
    """Guard the guards: the walker finds real imports, and the cycle finder finds a cycle."""
    assert _cycles({"edgekit.a": {"edgekit.b"}, "edgekit.b": {"edgekit.a"}}) == [
        ["edgekit.a", "edgekit.b", "edgekit.a"]
    ]
    assert "edgekit.backends.base" in _imports(PACKAGE / "backends" / "onnxruntime.py", top_level_only=True)
    assert "edgekit.backends.coreml.proxy" in _imports(
        PACKAGE / "backends" / "coreml" / "backend.py", top_level_only=False
    )
