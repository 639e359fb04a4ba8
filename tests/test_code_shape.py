"""Shape rules the linters do not hold: no source function over 60 lines (CONTRIBUTING.md).

A long function is where several jobs hide; the limit keeps each one named. Tests are left
out: a scenario reads best top to bottom."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60
SOURCE_DIRS = [
    *ROOT.glob("packages/*/src"),
    *ROOT.glob("services/*/src"),
    ROOT / "bench",
    ROOT / "scripts",
]


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    ]


def test_the_rule_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    probe = tmp_path / "probe.py"
    probe.write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert _long_functions(probe, tmp_path) == [f"probe.py:5 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_source_function_is_over_the_limit() -> None:
    sources = [p for d in SOURCE_DIRS for p in d.rglob("*.py") if "results" not in p.parts]
    assert len(sources) > 50  # the walk found the code
    offenders = [line for path in sources for line in _long_functions(path)]
    assert offenders == []
