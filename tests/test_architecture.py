"""Dependencies point one way: core <- io <- cli; core, io <- _napari <- _qt. Imports stay lazy."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "napari_sparseseg"
GUI = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")
RULES = {
    "core": GUI + ("napari_sparseseg.io", "napari_sparseseg.cli", "napari_sparseseg._napari", "napari_sparseseg._qt", "nibabel", "SimpleITK"),
    "io": GUI + ("napari_sparseseg.cli", "napari_sparseseg._napari", "napari_sparseseg._qt"),
    "_napari": ("qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari.qt", "napari_sparseseg._qt"),
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports(layer):
    bad = []
    for f in (PKG / layer).rglob("*.py"):
        for mod in _imports(f):
            if any(mod == b or mod.startswith(b + ".") for b in RULES[layer]):
                bad.append(f"{f.relative_to(PKG)} imports {mod}")
    assert not bad, bad


def test_import_is_cheap_and_core_pulls_no_gui():
    code = (
        "import sys, napari_sparseseg, napari_sparseseg.io, napari_sparseseg.cli;"
        "assert 'torch' not in sys.modules, 'torch imported eagerly';"
        "import napari_sparseseg.core.train, napari_sparseseg.core.predict;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('napari','qtpy','magicgui','PyQt6','PyQt5')];"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
