"""The import structure of ``tarq/``, read from the source (every import statement, those
inside functions included; ``if TYPE_CHECKING:`` blocks excluded):

- no import circle anywhere;
- imports point one way through the layers: shared pieces (warehouse, SQL files, locking,
  dates, defaults, metrics) ← data (logs, importers, lake, samples, loader) and validation ←
  model ← everything built on them (training, evaluation, semantic IDs, the release of a day,
  serving); a lower layer never imports a higher one;
- the library never imports Prefect or ``flows/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TARQ = Path(__file__).resolve().parents[1] / "tarq"

SHARED = {
    "tarq",
    "tarq.dates",
    "tarq.defaults",
    "tarq.locking",
    "tarq.metrics",
    "tarq.parallel",
    "tarq.resources",
    "tarq.sqlfiles",
    "tarq.telemetry",
    "tarq.warehouse",
    "tarq.data.lake_fs",  # storage: local or object-store paths, attached by the warehouse
}


def layer(module: str) -> int:
    """0 shared, 1 data and validation, 2 model, 3 what is built on them."""
    if module in SHARED:
        return 0
    if module.startswith(("tarq.data", "tarq.validation")):
        return 1
    if module.startswith("tarq.model"):
        return 2
    return 3


def _modules() -> dict[str, Path]:
    out = {}
    for path in TARQ.rglob("*.py"):
        parts = list(path.relative_to(TARQ.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported name, line) of every import statement outside ``if TYPE_CHECKING:``."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno))
                found.extend((f"{child.module}.{a.name}", child.lineno) for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """tarq module → the tarq modules it imports; and every module's raw imports."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    raw = {}
    for mod, path in mods.items():
        raw[mod] = _imports(path)
        targets = {resolve(n) for n, _ in raw[mod] if n == "tarq" or n.startswith("tarq.")}
        graph[mod] = {t for t in targets if t and t != mod}
    return graph, raw


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of ``graph`` meets, as a path back to its start."""
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def dfs(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                circles.append([*stack[stack.index(v) :], v])
            elif v not in state:
                dfs(v)
        stack.pop()
        state[u] = 2

    for mod in sorted(graph):
        if mod not in state:
            dfs(mod)
    return circles


def test_no_import_circle() -> None:
    circles = find_circles(_graph()[0])
    assert not circles, "import circles: " + "; ".join(" → ".join(c) for c in circles)


def test_imports_point_down_the_layers() -> None:
    graph, _ = _graph()
    up = [
        f"{mod} (layer {layer(mod)}) imports {t} (layer {layer(t)})"
        for mod, targets in sorted(graph.items())
        for t in sorted(targets)
        if layer(t) > layer(mod) and t != "tarq"
    ]
    assert not up, "\n".join(up)
    assert layer("tarq.serving") == 3 and layer("tarq.model.tarq") == 2  # the map is live
    assert {"tarq.data.samples", "tarq.validation", "tarq.publish"} <= set(graph)


def test_the_library_never_imports_prefect_or_flows() -> None:
    _, raw = _graph()
    bad = [
        f"{mod}:{line} imports {name}"
        for mod, names in sorted(raw.items())
        for name, line in names
        if name.split(".")[0] in ("prefect", "flows")
    ]
    assert not bad, "\n".join(bad)


def test_a_planted_circle_and_an_upward_import_are_caught(tmp_path: Path) -> None:
    """The checks read real import statements: the same parser on planted files finds them."""
    (tmp_path / "a.py").write_text("from tarq.serving import Scorer\nimport prefect\n")
    names = [n for n, _ in _imports(tmp_path / "a.py")]
    assert "tarq.serving" in names and "prefect" in names
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tarq.serving import X\n"
        "def f():\n    from tarq.publish import publish\n"
    )
    names = [n for n, _ in _imports(tmp_path / "b.py")]
    assert "tarq.publish" in names and "tarq.serving" not in names
    assert layer("tarq.data.samples") < layer("tarq.publish")
    graph = {"tarq.data.lake": {"tarq.warehouse"}, "tarq.warehouse": {"tarq.data.lake"}}
    assert find_circles(graph) == [["tarq.data.lake", "tarq.warehouse", "tarq.data.lake"]]
    assert find_circles({"a": {"b"}, "b": set()}) == []
