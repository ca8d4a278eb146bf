"""Dependencies run one way: db and cache know neither the tasks nor the worker, tasks never
import the worker, and nothing shipped imports the tests. Read from the source with ast, so a
function-local import counts as much as one at the top."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the top-level packages it must never import
FORBIDDEN = {
    "db": {"tasks", "worker", "api", "bench", "tests"},
    "cache": {"db", "tasks", "worker", "api", "bench", "tests"},
    "envconfig": {"db", "cache", "tasks", "worker", "api", "bench", "tests"},
    "tasks": {"worker", "api", "bench", "tests"},
    "api": {"worker", "bench", "tests"},
    "worker": {"bench", "tests"},
    "bench": {"tests"},
    "migrations": {"tasks", "worker", "api", "bench", "tests"},
}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert violations(package) == []


def test_the_checker_sees_function_local_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.app import create_app\n    import tasks.names\n")
    assert list(imported_modules(module)) == [(2, "worker.app"), (3, "tasks.names")]
