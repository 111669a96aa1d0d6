"""Size limits that keep the code readable top to bottom: no module over 400 lines, no function over 60.

A module's size is its line count (as ``wc -l`` counts it); a function's is from its ``def`` line to its last line,
decorators left out, nested functions and methods counted on their own as well as inside their parent.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("s2robot", "envs", "scripts")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def function_sizes(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method in ``path``."""
    sizes = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    sizes.append((name, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text()), "")
    return sizes


def test_sources_are_found() -> None:
    paths = sources()
    assert len(paths) > 50 and all(any(p.is_relative_to(ROOT / f) for p in paths) for f in FOLDERS)


def test_no_module_is_too_long() -> None:
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sources()}
    offenders = {p: n for p, n in lines.items() if n > MAX_MODULE_LINES}
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines (split one concept out): {offenders}"


def test_no_function_is_too_long() -> None:
    offenders = {f"{p.relative_to(ROOT)}::{name}": n for p in sources() for name, n in function_sizes(p)
                 if n > MAX_FUNCTION_LINES}
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines (name their stages as helpers): {offenders}"


def test_function_sizes_count_from_def_to_last_line(tmp_path: Path) -> None:
    """Decorators are left out; a method is named by its class; a nested function is counted on its own too."""
    src = tmp_path / "m.py"
    src.write_text("@staticmethod\ndef f():\n    def g():\n        return 1\n    return g\n\n\n"
                   "class C:\n    def h(self):\n        pass\n")
    assert function_sizes(src) == [("f", 4), ("f.g", 2), ("C.h", 2)]
