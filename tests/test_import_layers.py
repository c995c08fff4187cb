"""The import structure of ``tarq/``, read from the source (every import statement, those
inside functions included; ``if TYPE_CHECKING:`` blocks excluded):

- no import circle anywhere;
- imports point one way through the packages, each of which says in its ``__init__`` what it
  may import: the shared pieces (``store``, ``runtime``, dates, defaults, metrics) ← ``data``
  and ``validation`` ← ``model`` ← ``ids`` (semantic IDs) ← ``training`` ← ``release`` (the
  release of a day) and ``serving``, which never import each other ← ``online`` (the demo
  world's replay and A/B) ← the command line;
- the library never imports Prefect or ``flows/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

TARQ = Path(__file__).resolve().parents[1] / "tarq"

SHARED = {"tarq", "tarq.dates", "tarq.defaults", "tarq.metrics", "tarq.data.lake_fs"}
LAYERS = {
    "store": 0,
    "runtime": 0,
    "data": 1,
    "validation": 1,
    "model": 2,
    "ids": 3,
    "training": 4,
    "release": 5,
    "serving": 5,
    "online": 6,
}


def layer(module: str) -> int:
    """The layer of a tarq module: 0 shared … 6 online; 7 the command line (and the pyfunc
    import path kept for models saved before the packages)."""
    if module in SHARED:
        return 0
    parts = module.split(".")
    return LAYERS.get(parts[1], 7) if len(parts) > 1 else 0


def _modules() -> dict[str, Path]:
    out = {}
    for path in TARQ.rglob("*.py"):
        parts = list(path.relative_to(TARQ.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, name imported from it or None, line) of every import statement outside
    ``if TYPE_CHECKING:`` (``import a.b``: (``a.b``, None); ``from a import b``: (a, b))."""
    found: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, None, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.extend((child.module, a.name, child.lineno) for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, str | None, int]]]]:
    """tarq module → the tarq modules it imports (``from a import b``: the module ``a.b`` when
    there is one, else ``a``); and every module's raw imports."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    raw = {}
    for mod, path in mods.items():
        raw[mod] = _imports(path)
        targets = set()
        for module, name, _ in raw[mod]:
            if module == "tarq" or module.startswith("tarq."):
                sub = f"{module}.{name}" if name else None
                targets.add(sub if sub in mods else resolve(module))
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
    across = [
        f"{mod} imports {t}"
        for mod, targets in sorted(graph.items())
        for t in sorted(targets)
        if len(mod.split(".")) > 1
        and len(t.split(".")) > 1
        and {mod.split(".")[1], t.split(".")[1]} == {"release", "serving"}
    ]
    assert not across, "release and serving import each other:\n" + "\n".join(across)
    assert layer("tarq.serving.scorer") == 5 and layer("tarq.model.tarq") == 2  # a live map
    assert {"tarq.data.samples", "tarq.validation", "tarq.release.publish"} <= set(graph)
    assert all(layer(m) < 7 for m in graph if m not in ("tarq.cli", "tarq.serving_pyfunc"))


def test_the_top_level_holds_packages_and_a_handful_of_shared_modules() -> None:
    modules = sorted(p.stem for p in TARQ.glob("*.py") if p.stem != "__init__")
    assert modules == ["cli", "dates", "defaults", "metrics", "serving_pyfunc"], modules
    packages = sorted(p.parent.name for p in TARQ.glob("*/__init__.py"))
    assert packages == sorted(LAYERS), packages
    for pkg in packages:  # each package says what it holds and what it may import
        doc = ast.get_docstring(ast.parse((TARQ / pkg / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), pkg


def test_the_library_never_imports_prefect_or_flows() -> None:
    _, raw = _graph()
    bad = [
        f"{mod}:{line} imports {name}"
        for mod, names in sorted(raw.items())
        for name, _, line in names
        if name.split(".")[0] in ("prefect", "flows")
    ]
    assert not bad, "\n".join(bad)


def test_a_planted_circle_and_an_upward_import_are_caught(tmp_path: Path) -> None:
    """The checks read real import statements: the same parser on planted files finds them."""
    (tmp_path / "a.py").write_text("from tarq.serving import Scorer\nimport prefect\n")
    names = [m for m, _, _ in _imports(tmp_path / "a.py")]
    assert "tarq.serving" in names and "prefect" in names
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tarq.serving import X\n"
        "def f():\n    from tarq.release.publish import publish\n"
    )
    names = [m for m, _, _ in _imports(tmp_path / "b.py")]
    assert "tarq.release.publish" in names and "tarq.serving" not in names
    assert layer("tarq.data.samples") < layer("tarq.release.publish")
    graph = {"tarq.data.lake": {"tarq.store.warehouse"}, "tarq.store.warehouse": {"tarq.data.lake"}}
    assert find_circles(graph) == [["tarq.data.lake", "tarq.store.warehouse", "tarq.data.lake"]]
    assert find_circles({"a": {"b"}, "b": set()}) == []
