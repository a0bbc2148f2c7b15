"""The package stays readable: no module over 400 lines, no function over 80.

Counts every ``.py`` file of the wheel's packages (pncd/, export/, bench/, targets/; the
experiment scripts in bench/experiments/ and the result folders are not in the wheel). A
function's length runs from its ``def`` (decorators excluded) to its last line, docstring
included, nested functions counted in their parent too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("pncd", "export", "bench", "targets")
NOT_IN_WHEEL = ("bench/experiments", "bench/results")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def package_files() -> list[Path]:
    files = []
    for top in PACKAGE_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(NOT_IN_WHEEL):
                files.append(path)
    return files


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                out.append((f"{node.name} (line {node.lineno})", length))
    return out


def test_the_package_has_files():
    names = {p.relative_to(ROOT).as_posix() for p in package_files()}
    assert {"pncd/cli.py", "export/pipeline.py", "pncd/commands/bench.py", "targets/base.py"} <= names
    assert not any(n.startswith("bench/experiments/") for n in names)


def test_the_checker_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    assert long_functions(f"def f():\n{body}\n", MAX_FUNCTION_LINES) == [("f (line 1)", 82)]
    assert long_functions("def g():\n    return 1\n", MAX_FUNCTION_LINES) == []


@pytest.mark.parametrize("path", package_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_and_function_size(path: Path):
    source = path.read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_MODULE_LINES}): split it"
    too_long = long_functions(source, MAX_FUNCTION_LINES)
    assert not too_long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {too_long}"
