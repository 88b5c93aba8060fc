"""The package has no import cycle: each cycle found so far was a missing lower layer (issue #16)."""

from __future__ import annotations

import ast
from pathlib import Path

import bigfive

ROOT = Path(bigfive.__file__).parent


def module_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (every import, also inside functions and TYPE_CHECKING)."""
    known = {".".join([root.name, *p.relative_to(root).with_suffix("").parts]).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph = {}
    for name, path in known.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    mod = ".".join(base[:len(base) - node.level + 1] + ([mod] if mod else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in known:  # a.b.c where a.b is the module
                    t = t.rpartition(".")[0]
                # a package's __init__ runs on every submodule import: parent-package edges are not cycles
                if t and t != name and not name.startswith(t + "."):
                    found.add(t)
        graph[name] = found
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one (depth-first, iterative)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles():
    graph = module_graph(ROOT)
    assert len(graph) > 90 and "bigfive.training.loop" in graph["bigfive.training.train"]
    cycles = [c for m in sorted(graph) if (c := cycle_through(graph, m))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_the_check_finds_a_cycle(tmp_path):
    """The check can fail: two modules importing each other are found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    assert cycle_through(module_graph(pkg), "pkg.a") == ["pkg.a", "pkg.b", "pkg.a"]
