"""Imports point downward: no circle among the project's modules (engine, serving, model, ctc,
app, transcribe, tools, bench, scripts). Every import counts, at the top of a file or inside a
function, since a lazy import is still a dependency of the module that makes it."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "serving", "tools", "bench", "scripts")
TOP = ("model", "ctc", "app", "transcribe")


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for the top-level modules and everything under the packages. The
    tools, bench and scripts folders put their own folder on sys.path, so their files are also
    importable by their bare names (``from benchmark import ...``)."""
    mods = {}
    for name in TOP:
        if (root / f"{name}.py").is_file():
            mods[name] = root / f"{name}.py"
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict, pkg_dir: str) -> str | None:
    """The project module ``name`` refers to: itself, or (a bare sibling name) the module next
    to the importing file, or its closest enclosing project module (``a.b.func`` -> ``a.b``)."""
    for cand in (name, f"{pkg_dir}.{name}" if pkg_dir else None):
        while cand:
            if cand in mods:
                return cand
            cand = cand.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, mods: dict) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    top_dir = name.split(".")[0] if "." in name else ""
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
        for t in targets:
            hit = _resolve(t, mods, top_dir)
            if hit and hit != name:
                out.add(hit)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = project_modules(root)
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a list that starts and ends with the same module), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_circle_among_the_project_modules():
    graph = import_graph(REPO)
    assert {"model", "app", "engine.qwen3", "engine.kernels.loader", "serving.api"} <= set(graph)
    assert "engine.kernels.loader" in graph["engine.kernels.packed"]  # edges are seen
    assert "engine.kernels" in graph["engine.qwen3"]                   # lazy ones too
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_check_finds_circles(tmp_path):
    """The same check on a small tree with a lazy circle through a relative import."""
    (tmp_path / "engine" / "kernels").mkdir(parents=True)
    (tmp_path / "engine" / "__init__.py").write_text("")
    (tmp_path / "engine" / "kernels" / "__init__.py").write_text("from .a import f\n")
    (tmp_path / "engine" / "kernels" / "a.py").write_text("from . import b\ndef f(): pass\n")
    (tmp_path / "engine" / "kernels" / "b.py").write_text(
        "def g():\n    from engine.qwen3 import X\n")
    (tmp_path / "engine" / "qwen3.py").write_text("import engine.kernels.a\nX = 1\n")
    (tmp_path / "model.py").write_text("from engine.qwen3 import X\n")
    graph = import_graph(tmp_path)
    cycle = find_cycle(graph)
    assert cycle and cycle[0] == cycle[-1]
    assert {"engine.kernels.a", "engine.kernels.b", "engine.qwen3"} <= set(cycle)
    (tmp_path / "engine" / "kernels" / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path)) is None


def _sys_path_edits(root: Path) -> list[str]:
    """``sys.path.insert`` / ``sys.path.append`` calls in bench/ and tools/ (file:line)."""
    found = []
    for pkg in ("bench", "tools"):
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                f = node.func if isinstance(node, ast.Call) else None
                if (isinstance(f, ast.Attribute) and f.attr in ("insert", "append")
                        and ast.unparse(f.value) == "sys.path"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_bench_and_tools_import_the_project_as_installed():
    """pyproject.toml makes the packages importable: no bench or tools script edits sys.path
    (an edit hides a broken install on the user's machine, and ran before in two scripts)."""
    assert _sys_path_edits(REPO) == []


def test_the_sys_path_check_finds_an_edit(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "bench" / "x.py").write_text("import sys\n\nsys.path.insert(0, '.')\n")
    (tmp_path / "tools" / "y.py").write_text("import sys\nprint(sys.path)\n")
    assert _sys_path_edits(tmp_path) == ["bench/x.py:3"]
