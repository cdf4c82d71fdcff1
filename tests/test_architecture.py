"""Dependencies point one way (docs: Design): core <- io <- cohort <- _napari <- _qt, and cli/demo on top;
inside core the rooms base <- annotations <- model <- inference <- training <- session.

The contracts live in pyproject.toml ([tool.importlinter]) and count lazy imports inside
functions too; this test runs them, so a violation fails CI, and fails on any import cycle
between the package's modules. Imports stay lazy: importing the package, io or cli pulls in
neither torch nor any GUI toolkit.
"""

import ast
import collections
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "napari_sparseseg"


def _tool(name):
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}; pip install -e '.[test]'")
    return exe


def test_import_linter_contracts_are_kept():
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 10, "the layer contracts (inside core too) are gone from pyproject.toml"
    assert f"{len(contracts)} kept, 0 broken" in r.stdout, r.stdout


def _own_imports() -> dict:
    """Module -> the package's modules it imports (at module level or inside functions)."""
    modules = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = collections.defaultdict(set)
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_anywhere():
    graph = _own_imports()
    assert "napari_sparseseg.core.session.rounds" in graph  # the walk sees the package
    assert _cycles(graph) == []


def test_cycle_check_finds_a_cycle():
    # The check itself can fail: a two-module loop and a three-module loop are both reported.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}) == [["a", "b"], ["c", "d", "e"]]


def test_no_function_local_imports_of_the_package_outside_the_cli_dispatch():
    # Own modules are imported at module level; the one lazy import is the CLI's dispatch to a
    # subcommand, which keeps `sparseseg --help` free of torch.
    found = []
    for f in PKG.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("napari_sparseseg")):
                        found.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert found == [], found


def test_napari_adapters_never_import_napari_qt():
    # import-linter cannot forbid a subpackage of an external package; check napari.qt here.
    bad = []
    for f in (PKG / "_napari").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad += [f"{f.name}: {n}" for n in names if n == "napari.qt" or n.startswith(("napari.qt.", "napari._qt"))]
    assert not bad, bad


def test_import_is_cheap_and_core_pulls_no_gui():
    code = (
        "import sys, napari_sparseseg, napari_sparseseg.io, napari_sparseseg.cli;"
        "napari_sparseseg.cli.build_parser();"
        "assert 'torch' not in sys.modules, 'torch imported eagerly';"
        "assert 'scipy' not in sys.modules, 'scipy imported eagerly (io reads model folders through core.model.forest)';"
        "import napari_sparseseg.core.training.train, napari_sparseseg.core.inference.predict, napari_sparseseg.core.session.rounds, napari_sparseseg.io.sessions;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('napari','qtpy','magicgui','PyQt6','PyQt5')];"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ruff_is_clean():
    r = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
