"""bench/ imports as a tree: no module of it imports another that imports it back (directly or
through others, at module level or inside a function)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_imports(path: Path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bench":
                found |= {f"bench.{a.name}" for a in node.names}
            elif node.module.startswith("bench."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bench.")}
    return found


def test_bench_has_no_import_circle():
    modules = {f"bench.{p.stem}": p for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__"}
    graph = {name: _bench_imports(path) & set(modules) for name, path in modules.items()}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    circles = sorted(name for name in graph if reaches(name, name))
    assert not circles, f"bench modules in an import circle: {circles} ({ {n: sorted(graph[n]) for n in circles} })"
