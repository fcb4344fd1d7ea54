"""The store's parts stay separate: segments/manifest, locking, search and the consolidation
policy import no store, and no module of ``memory`` imports another in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MEMORY = Path(__file__).resolve().parents[2] / "memory"


def imported(module: str) -> set[str]:
    """Modules of the ``memory`` package that ``memory/<module>.py`` imports (any level)."""
    tree = ast.parse((MEMORY / f"{module}.py").read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                out.update(a.name for a in node.names)
            elif node.level == 0 and node.module and node.module.startswith("memory."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("memory."))
    return out


@pytest.mark.parametrize("part", ["consolidate", "segments", "locking", "search"])
def test_parts_do_not_import_the_store(part):
    assert "store" not in imported(part), f"memory/{part}.py imports memory.store"


def test_consolidate_is_policy_only():
    assert imported("consolidate") <= {"segments"}


def test_memory_modules_import_without_cycles():
    modules = sorted(p.stem for p in MEMORY.glob("*.py") if p.stem != "__init__")
    graph = {m: imported(m) & set(modules) for m in modules}
    assert graph["store"] >= {"segments", "locking", "search", "consolidate"}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join(path + [m])}"
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = 2

    for m in modules:
        visit(m, [])
