"""The public Python API: the names ``napari_sparseseg`` exports, pinned so the list changes deliberately.

Adding, removing or renaming a public name means changing ``PUBLIC`` here, the API page of the
docs (docs/api.md) and the changelog together.
"""

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import napari_sparseseg

REPO = Path(__file__).resolve().parents[1]

PUBLIC = [
    "__version__",
    # scans on disk
    "Geometry", "read_image", "read_labels", "write_labels", "load_sample",
    # training and prediction
    "train", "Trainer", "TrainResult", "predict", "predict_volume", "Prediction", "Progress", "ProgressPrinter",
    "run_to_end",
    # models on disk
    "SegModel", "load_model", "save_model",
    # sessions
    "Session", "run_round", "accept_round", "load_session", "save_session",
    # settings
    "TrainConfig", "PredictConfig", "WeightConfig", "RoundSettings",
    # errors
    "SparseSegError", "InputError", "ScribbleError", "ConfigError", "DeviceError", "CheckpointError", "OutputError",
    "TrainingCancelled",
]

# Names whose examples are in the package docstring (their module, core/training/train.py, is
# another room's; give them an Example section there when it is next edited).
EXAMPLE_IN_PACKAGE_DOCSTRING = {"train", "Trainer", "TrainResult"}


def test_the_public_names_are_pinned():
    assert napari_sparseseg.__all__ == PUBLIC
    assert len(set(PUBLIC)) == len(PUBLIC)


def test_every_public_name_resolves_to_its_defining_module():
    for name in PUBLIC[1:]:
        obj = getattr(napari_sparseseg, name)
        assert obj.__module__ == napari_sparseseg._PUBLIC[name], name
        assert obj.__name__ == name
    assert set(dir(napari_sparseseg)) >= set(PUBLIC)
    with pytest.raises(AttributeError):
        napari_sparseseg.no_such_name  # noqa: B018


def test_every_public_name_has_a_docstring_example():
    missing = []
    for name in PUBLIC[1:]:
        doc = getattr(napari_sparseseg, name).__doc__ or ""
        if name in EXAMPLE_IN_PACKAGE_DOCSTRING:
            doc = napari_sparseseg.__doc__
            assert f"ss.{name}" in doc, name
            continue
        if not re.search(r"^\s*Examples?:\s*$", doc, re.M):
            missing.append(name)
    assert missing == [], f"public names without an Example section: {missing}"


def test_docstring_examples_run(tmp_path, monkeypatch):
    # The examples written as >>> sessions run as doctests (those that need a trained model are
    # code blocks); the working folder is empty, so an example that wrote a file would show.
    monkeypatch.chdir(tmp_path)
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    ran = 0
    for name in PUBLIC[1:]:
        for test in finder.find(getattr(napari_sparseseg, name), name, globs={}):
            ran += len(test.examples)
            runner.run(test)
    assert ran >= 40
    assert runner.summarize(verbose=False).failed == 0
    assert list(tmp_path.iterdir()) == []


def test_importing_the_package_stays_light():
    code = ("import sys, napari_sparseseg;"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'monai', 'scipy', 'napari', 'qtpy', 'magicgui', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy')];"
            "assert not heavy, heavy;"
            "assert [m for m in sys.modules if m.startswith('napari_sparseseg')] == ['napari_sparseseg']")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_docs_show_every_public_name_and_import_only_from_the_package():
    api = (REPO / "docs" / "api.md").read_text()
    for name in PUBLIC[1:]:
        assert f"napari_sparseseg.{name}" in api or f".{name}\n" in api, f"docs/api.md does not show {name}"
    # Python examples in the README and the docs import only the public package.
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                m = re.match(r"\s*(?:from|import)\s+(napari_sparseseg\S*)", line)
                assert m is None or m.group(1) == "napari_sparseseg", f"{page.name}: {line.strip()}"


def test_the_version_has_one_source():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "napari_sparseseg.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", napari_sparseseg.__version__)
    assert f"## {napari_sparseseg.__version__}" in (REPO / "CHANGELOG.md").read_text()
