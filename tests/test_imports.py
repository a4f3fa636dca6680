"""The package's import graph, read from the source: no circle, and no import hidden inside a function
to dodge one (the only function-level imports load ``serve``'s optional dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "distillad"
#: (importing module, imported module): lazy on purpose, fastapi/uvicorn are an optional extra
LAZY_ALLOWED = {("distillad.cli", "distillad.serve"), ("distillad.serve", "distillad.serve.app"),
                ("distillad.serve", "distillad.serve.backends")}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(mod: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """Modules a relative ``from`` import names (``from . import api`` names distillad.api)."""
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    if node.module:
        return [f"{base}.{node.module}"]
    return [f"{base}.{a.name}" for a in node.names]


def _graph() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """(module → modules it imports at module level, {(module, module) imported inside a function})."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lazy: set[tuple[str, str]] = set()
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                for t in _target(mod, path, node):
                    t = t if t in modules else t.rsplit(".", 1)[0]  # a name from a package's face
                    if t in modules and t != mod:
                        (lazy.add((mod, t)) if id(node) in inner else graph[mod].add(t))
    return graph, lazy


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle():
    graph, lazy = _graph()
    assert len(graph) > 40  # the source was found
    # a package's __init__ importing its own submodules is how a package shows its face, not a circle
    def own_part(m: str, n: str) -> bool:
        return n.startswith(m + ".") and (SRC.parent / m.replace(".", "/")).is_dir()

    faced = {m: {n for n in deps if not own_part(m, n)} for m, deps in graph.items()}
    assert _cycle(faced) is None, " -> ".join(_cycle(faced) or [])
    both = {m: faced[m] | {t for s, t in lazy if s == m and not own_part(m, t)} for m in faced}
    assert _cycle(both) is None, "a function-level import closes a circle: " + " -> ".join(_cycle(both) or [])


def test_function_level_imports_only_for_optional_dependencies():
    _, lazy = _graph()
    assert lazy <= LAZY_ALLOWED, sorted(lazy - LAZY_ALLOWED)


def test_the_checker_sees_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("low", ["distillad.settings", "distillad.thresholds", "distillad.run_schema"])
def test_low_floors_do_not_reach_up(low):
    """The settings and the threshold math sit below checkpoint I/O and the calibration workflow."""
    graph, _ = _graph()
    seen, todo = set(), [low]
    while todo:
        m = todo.pop()
        for n in graph[m] - seen:
            seen.add(n)
            todo.append(n)
    assert not seen & {"distillad.calibration", "distillad.checkpoint", "distillad.engine", "distillad.api",
                       "distillad.config"}, sorted(seen)
