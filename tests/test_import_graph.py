"""The import graph of the project's own packages has no cycles, and the library never imports the app.

The graph is built from the source with `ast`, not by importing anything, so a function-local
import (which hides a cycle from Python until the function runs) counts like a module-level one.
Rules of the builder (`build_graph`):

- nodes are the modules of `arena`, `runners` and `dashboard` (a package is its `__init__.py`);
- every `import a.b.c` and `from a.b import c` anywhere in a file is an edge, at module level or
  inside a function or class, including `if TYPE_CHECKING:` blocks;
- relative imports are resolved against the importing module (a package resolves `.` to itself);
- `from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`;
- an import of a module that does not exist is an edge to its nearest existing parent (so
  `import arena.nope` still counts as importing `arena`); imports outside the packages are ignored;
- the implicit import of a parent package when a child is imported is not an edge: every child
  "imports" its parent, and a package `__init__` that registers its children would otherwise be a
  cycle by construction.

The builder is tested on a synthetic package first, so a broken builder cannot pass vacuously.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("arena", "runners", "dashboard")
LIBRARY, APP = "arena", "dashboard"


@dataclass
class ImportGraph:
    modules: dict[str, Path]  # dotted name -> source file
    edges: dict[str, dict[str, int]] = field(default_factory=dict)  # importer -> {imported: first line}

    def where(self, src: str, dst: str) -> str:
        path = self.modules[src]
        return f"{path.as_posix()}:{self.edges[src][dst]}"


def discover_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under root/<package>/ (paths relative to root)."""
    mods = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = rel
    return mods


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def resolve_import(node: ast.Import | ast.ImportFrom, current: str, modules: dict[str, Path]) -> list[str]:
    """The project modules one import statement of module `current` binds to (see the module docstring)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = current.split(".")
            if modules[current].name != "__init__.py":
                parts = parts[:-1]  # a plain module's `.` is its package
            if node.level - 1 > len(parts):
                return []  # beyond the top package: Python refuses it too
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}" if base else alias.name
            names.append(sub if sub in modules else base)
    out = []
    for name in names:
        target = _nearest_module(name, modules)
        if target is not None and target not in out:
            out.append(target)
    return out


def build_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> ImportGraph:
    """The import graph of `packages` under `root`, from every import statement of every module."""
    graph = ImportGraph(discover_modules(root, packages))
    for name, rel in graph.modules.items():
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=str(rel))
        edges = graph.edges.setdefault(name, {})
        for node in ast.walk(tree):  # walks function and class bodies too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in resolve_import(node, name, graph.modules):
                    if target != name:
                        edges.setdefault(target, node.lineno)
    return graph


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion
    limit), each sorted, in a stable order."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def shortest_cycle(edges: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module, as [m0, m1, ..., m0] (BFS inside the component)."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges.get(v, ())):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{component} is not strongly connected")


def describe_cycles(graph: ImportGraph) -> list[str]:
    """One line per cycle: the members, then one concrete cycle with the line of each import."""
    lines = []
    for comp in strongly_connected(graph.edges):
        cycle = shortest_cycle(graph.edges, comp)
        hops = " -> ".join(f"{a} ({graph.where(a, b)})" for a, b in zip(cycle, cycle[1:]))
        lines.append(f"{len(comp)} modules {comp}: {hops} -> {cycle[-1]}")
    return lines


# -- the builder on a synthetic package ----------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


SYNTHETIC = {
    "pkg/__init__.py": "from pkg import a  # registration\nVERSION = 1\n",
    "pkg/a.py": "import os\nfrom pkg.sub import helpers\n",
    "pkg/sub/__init__.py": "from . import helpers\nfrom .helpers import NAME\n",
    "pkg/sub/helpers.py": (
        "import json\nNAME = 'x'\n\n"
        "def late():\n"
        "    from ..a import something  # function-local, relative, two levels\n"
        "    return something\n"
    ),
    "pkg/b.py": "from pkg import VERSION\nimport pkg.sub.helpers as h\nimport pkg.missing.thing\n",
    "pkg/c.py": "class K:\n    def m(self):\n        from . import b\n",
    "other/__init__.py": "",
    "other/x.py": "import pkg.c\n",
}


def test_builder_resolves_every_import_form(tmp_path):
    _write(tmp_path, SYNTHETIC)
    g = build_graph(tmp_path, ("pkg", "other"))
    assert set(g.modules) == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.helpers", "pkg.b", "pkg.c", "other", "other.x"}
    assert g.modules["pkg.sub"] == Path("pkg/sub/__init__.py")
    got = {m: set(e) for m, e in g.edges.items()}
    assert got == {
        "pkg": {"pkg.a"},  # `from pkg import a`: a is a module
        "pkg.a": {"pkg.sub.helpers"},  # stdlib ignored; `from pkg.sub import helpers` -> the module
        "pkg.sub": {"pkg.sub.helpers"},  # `.` of a package is the package itself; deduplicated
        "pkg.sub.helpers": {"pkg.a"},  # function-local `from ..a import something`: a's attribute -> a
        "pkg.b": {"pkg", "pkg.sub.helpers"},  # attribute of a package -> the package; missing -> nearest parent
        "pkg.c": {"pkg.b"},  # inside a method of a class
        "other": set(),
        "other.x": {"pkg.c"},
    }
    assert g.edges["pkg.sub.helpers"]["pkg.a"] == 5  # the line of the import, for the message


def test_builder_finds_the_cycle_and_names_it(tmp_path):
    _write(tmp_path, SYNTHETIC)
    g = build_graph(tmp_path, ("pkg", "other"))
    assert strongly_connected(g.edges) == [["pkg.a", "pkg.sub.helpers"]]
    assert shortest_cycle(g.edges, ["pkg.a", "pkg.sub.helpers"]) == ["pkg.a", "pkg.sub.helpers", "pkg.a"]
    (line,) = describe_cycles(g)
    assert line == ("2 modules ['pkg.a', 'pkg.sub.helpers']: pkg.a (pkg/a.py:2) -> "
                    "pkg.sub.helpers (pkg/sub/helpers.py:5) -> pkg.a")
    # breaking the function-local edge breaks the cycle
    (tmp_path / "pkg/sub/helpers.py").write_text("NAME = 'x'\n")
    assert strongly_connected(build_graph(tmp_path, ("pkg", "other")).edges) == []


def test_cycle_search_on_larger_components():
    edges = {"a": {"b": 1}, "b": {"c": 1, "e": 1}, "c": {"a": 1, "d": 1}, "d": {"c": 1}, "e": {}, "f": {"f": 1}}
    # a->b->c->a and c<->d are one component; e is a sink; a self-loop is not a cycle of modules
    assert strongly_connected(edges) == [["a", "b", "c", "d"]]
    assert shortest_cycle(edges, ["a", "b", "c", "d"]) == ["a", "b", "c", "a"]
    chain = {str(i): {str(i + 1): 1} for i in range(5000)}  # deep graphs need no recursion
    chain["5000"] = {"0": 1}
    assert len(strongly_connected(chain)[0]) == 5001


def test_relative_import_beyond_the_top_package_binds_nothing(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": "from ... import x\n"})
    assert build_graph(tmp_path, ("pkg",)).edges["pkg.m"] == {}


# -- the project --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project() -> ImportGraph:
    graph = build_graph(REPO)
    # guard against a builder that silently sees nothing
    assert len(graph.modules) > 50 and sum(len(e) for e in graph.edges.values()) > 100
    return graph


def test_no_import_cycles(project):
    cycles = describe_cycles(project)
    assert not cycles, "import cycles among the project's modules (break each one):\n  " + "\n  ".join(cycles)


def test_library_never_imports_the_app(project):
    bad = sorted(f"{src} imports {dst} ({project.where(src, dst)})"
                 for src, targets in project.edges.items() if src.split(".")[0] == LIBRARY
                 for dst in targets if dst.split(".")[0] == APP)
    assert not bad, f"the library package `{LIBRARY}` must not import the app package `{APP}`:\n  " + "\n  ".join(bad)
