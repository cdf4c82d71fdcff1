"""Dependencies point one way (DESIGN.md): core <- io <- cli; core, io <- _napari <- _qt.

The contracts live in pyproject.toml ([tool.importlinter]) and count lazy imports inside
functions too; this test runs them, so a violation fails CI. Imports stay lazy: importing the
package, io or cli pulls in neither torch nor any GUI toolkit.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "0 broken" in r.stdout and "6 kept" in r.stdout, r.stdout


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
        "import napari_sparseseg.core.training.train, napari_sparseseg.core.inference.predict, napari_sparseseg.core.session.state;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('napari','qtpy','magicgui','PyQt6','PyQt5')];"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ruff_is_clean():
    r = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
