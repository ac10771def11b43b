"""The package's import graph: no circle, also none hidden behind imports inside functions,
and the layers point one way (the loss layer, the yardstick table and the reports)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xentlab", "hydra_plugins")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that ``name`` imports, at module level or inside a function."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_import_graph_has_no_circle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def reach(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in g[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_layers_point_one_way():
    g = graph()
    assert reach(g, "xentlab.config") <= {"xentlab.errors"}  # the schema is a leaf
    assert reach(g, "xentlab.yardsticks") == set()  # torch-free: reports read it
    assert reach(g, "xentlab.losses") <= {"xentlab.config", "xentlab.errors"}  # the loss layer is pure torch
    for m in [m for m in g if m.startswith("xentlab.tasks")]:
        assert not any(n.startswith("xentlab.tracking") for n in reach(g, m)), m  # tasks know nothing of tracking
    training = {"xentlab.train", "xentlab.module", "xentlab.batching", "xentlab.data"}
    for m in [m for m in g if m.startswith("xentlab.report")]:
        assert not reach(g, m) & training, m  # reports import no training
