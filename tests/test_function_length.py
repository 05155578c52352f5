"""No function longer than MAX_LINES (the project's guide: a function one can hold in one's
head), in any Python file git tracks or would track: the product, bench/, tools/, scripts/ and
the tests themselves. A function's length runs from its ``def`` line to its last line, nested
functions included. ``python tests/test_function_length.py`` lists the longest ones."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 100


def python_files(root: Path) -> list[Path]:
    """The .py files git tracks, and the untracked ones it does not ignore."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                          "*.py"], cwd=root, capture_output=True, text=True, check=True).stdout
    return sorted({root / line for line in out.splitlines() if (root / line).is_file()})


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def long_functions(root: Path = REPO, limit: int = MAX_LINES) -> list[str]:
    found = []
    for path in python_files(root):
        for name, line, length in function_lengths(path):
            if length > limit:
                found.append(f"{path.relative_to(root)}:{line} {name}: {length} lines")
    return found


def test_function_lengths_are_measured_from_def_to_last_line(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("@decorator\ndef f():\n    def g():\n        pass\n    return g\n\n\n"
                   "class C:\n    async def h(self):\n        x = 1\n\n        return x\n")
    assert function_lengths(src) == [("f", 2, 4), ("f.g", 3, 2), ("C.h", 9, 4)]


def test_no_function_is_longer_than_100_lines():
    found = long_functions()
    assert not found, (f"{len(found)} function(s) over {MAX_LINES} lines; split them into parts "
                       "that say what they do:\n" + "\n".join(found))


if __name__ == "__main__":
    rows = [(length, f"{p.relative_to(REPO)}:{line} {name}") for p in python_files(REPO)
            for name, line, length in function_lengths(p)]
    for length, where in sorted(rows, reverse=True)[:20]:
        print(f"{length:5d}  {where}")
