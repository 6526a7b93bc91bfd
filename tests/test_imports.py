"""The package's modules import on their own, and their imports of each other form no cycle:
module-level and function-level imports alike (an import inside a function hides a cycle from
Python, not from a reader), so nothing imports upward."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import eegdino_tf

PACKAGE = Path(eegdino_tf.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package by its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return hidden


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (a module's parent packages,
    which importing it runs, included; its own parents, which run first anyway, left out)."""
    tree = ast.parse(path.read_text())
    hidden = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return (found & known) - ancestors - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_imports_form_no_cycle():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # Tracing serves export and the LiteRT runtime, and knows neither them nor the models.
    upper = {f"eegdino_tf.{m}" for m in ("models", "runtime", "litert", "export")}
    assert not graph["eegdino_tf.tracing"] & upper
    assert graph["eegdino_tf.litert"] & upper == set()
    assert "eegdino_tf.tracing" in graph["eegdino_tf.export"] & graph["eegdino_tf.litert"]


def test_the_cycle_finder_sees_an_import_inside_a_function(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from pkg import b\n")
    b.write_text("def f():\n    from pkg.a import g\n")
    known = {"pkg.a", "pkg.b"}
    graph = {"pkg.a": imports_of("pkg.a", a, known), "pkg.b": imports_of("pkg.b", b, known)}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(name for name in modules() if not name.endswith("__main__"))  # runs the CLI
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_test_file_imports_another():
    """Test files share helpers through tests/helpers only."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[-1].startswith(("test_", "conftest")) for n in names):
                offenders.append(f"{path.relative_to(tests)}: {names}")
    assert not offenders, offenders
