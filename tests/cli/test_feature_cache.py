"""`sparseseg segment`/`predict` cache the forest's filter features per scan ($SPARSESEG_FEATURE_CACHE).

The cache's own rules (damaged entries, the size bound, foreign files) are in
tests/io/test_feature_cache.py; here the commands read what an earlier run computed, write the
same mask, and go on with a warning when the cache cannot be written.
"""

import shutil

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.core.model import forest
from napari_sparseseg.io import read_labels
from napari_sparseseg.io.cache import FEATURES_JSON, FEATURES_NPY


@pytest.fixture(scope="module")
def case(tmp_path_factory, sample_dir):
    d = tmp_path_factory.mktemp("features")
    for name in ("image.nii.gz", "scribbles.nii.gz"):
        shutil.copy(sample_dir / name, d / name)
    return d


@pytest.fixture
def calls(monkeypatch):
    """Counts the feature passes over the scan (the work the cache saves)."""
    count = []
    real = forest.scan_features

    def counting(*args, **kw):
        count.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(forest, "scan_features", counting)
    return count


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _segment(case, out, *more):
    return ("segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", out, "--max-steps", 2, "--device", "cpu",
            "--no-refine", *more)


def test_a_second_run_reads_the_features_and_writes_the_same_mask(case, tmp_path, capsys, calls, monkeypatch):
    cache = tmp_path / "features"
    monkeypatch.setenv("SPARSESEG_FEATURE_CACHE", str(cache))
    code, err = _run(capsys, *_segment(case, tmp_path / "m1.nii.gz", "--model-out", tmp_path / "model"))
    assert code == 0, err
    assert len(calls) == 1  # one pass, shared by the forest's fit and the prediction
    assert "[features] computed" in err and f"cached in {cache}" in err
    [entry] = cache.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == [FEATURES_JSON, FEATURES_NPY]

    code, err = _run(capsys, *_segment(case, tmp_path / "m2.nii.gz"))
    assert code == 0, err
    assert len(calls) == 1  # read from the cache, not computed
    assert f"[features] read from the cache in {cache}" in err
    assert np.array_equal(read_labels(tmp_path / "m1.nii.gz")[0], read_labels(tmp_path / "m2.nii.gz")[0])

    # predict with the model trained in the first run: the same normalisation, so the same entry.
    code, err = _run(capsys, "predict", case / "image.nii.gz", "--model", tmp_path / "model", "-o", tmp_path / "p.nii.gz",
                     "--device", "cpu", "--no-refine")
    assert code == 0, err
    assert len(calls) == 1 and "[features] read from the cache" in err
    assert [p.name for p in cache.iterdir()] == [entry.name]
    # Without the forest nothing is computed or read.
    code, err = _run(capsys, *_segment(case, tmp_path / "m3.nii.gz", "--no-forest"))
    assert code == 0, err
    assert len(calls) == 1 and "[features]" not in err


def test_an_unwritable_cache_warns_and_the_command_still_writes_its_mask(case, tmp_path, capsys, calls, monkeypatch):
    (tmp_path / "file").write_text("a file where the cache's parent folder should be")
    monkeypatch.setenv("SPARSESEG_FEATURE_CACHE", str(tmp_path / "file" / "features"))
    with pytest.warns(UserWarning, match="filter features could not be cached"):
        code, err = _run(capsys, *_segment(case, tmp_path / "m.nii.gz"))
    assert code == 0, err
    assert "[features] computed" in err and "not cached" in err
    assert read_labels(tmp_path / "m.nii.gz")[0].any() and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.nii.gz"]
