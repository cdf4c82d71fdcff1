"""Fill between slices (ITK's morphological contour interpolation): known shapes and a real organ."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.annotations.fill import fill_between, outlined_slices


def _ball(shape=(40, 50, 50), r=15):
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return ((zz - 20) ** 2 + (yy - 25) ** 2 + (xx - 25) ** 2) <= r**2


def _dice(a, b):
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def test_a_ball_outlined_on_three_slices_is_filled_between_them_only():
    ball = _ball()
    s = np.zeros(ball.shape, np.uint8)
    for z in (10, 20, 30):
        s[z][ball[z]] = 2
    s[5, 3:40, 3] = 1          # background strokes are never interpolated
    s[20, 5:30, 45] = 3        # a brush stroke is not an outline
    s[22, 40:48, 40:48] = 3    # a class outlined on one slice has nothing to interpolate
    assert sorted(outlined_slices(s, 2, 0)) == [10, 20, 30] and sorted(outlined_slices(s, 3, 0)) == [22]
    f = fill_between(s)
    assert set(np.unique(f)) == {0, 2}
    assert _dice(f[10:31] == 2, ball[10:31]) > 0.9
    assert not (f[:10] > 0).any() and not (f[31:] > 0).any()


def test_a_closed_contour_counts_as_an_outline():
    ball = _ball()
    from scipy import ndimage as ndi

    s = np.zeros(ball.shape, np.uint8)
    for z in (12, 28):
        rim = ball[z] & ~ndi.binary_erosion(ball[z], iterations=2)
        s[z][rim] = 2  # only the contour is drawn
    f = fill_between(s)
    assert _dice(f[12:29] == 2, ball[12:29]) > 0.85


@pytest.mark.slow
def test_the_liver_outlined_on_three_slices_of_the_real_sample(sample_dir):
    from napari_sparseseg.io import read_image, read_labels

    _, geom = read_image(sample_dir / "image.nii.gz")
    ref, _ = read_labels(sample_dir / "reference.nii.gz", like=geom)
    liver = ref == 1
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    picks = [int(zs[len(zs) // 5]), int(zs[len(zs) // 2]), int(zs[4 * len(zs) // 5])]
    s = np.zeros(ref.shape, np.uint8)
    for z in picks:
        s[z][liver[z]] = 2
    f = fill_between(s) == 2
    span = slice(picks[0], picks[-1] + 1)
    assert _dice(f[span], liver[span]) > 0.75  # a dense first guess between the outlines


PLANTED = "import pathlib; pathlib.Path({marker!r}).write_text('ran'); raise SystemExit('planted module ran')\n"


def test_an_itk_or_numpy_module_in_the_users_folder_never_runs_in_the_fill_worker(tmp_path, monkeypatch, capsys):
    """Hostile tester: `python -m` put the current folder first on the ITK worker's import path."""
    from napari_sparseseg.cli import main
    from napari_sparseseg.io import Geometry, read_labels, write_image, write_labels
    from tests.conftest import make_phantom

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for module in ("itk", "numpy", "napari_sparseseg"):
        (cwd / f"{module}.py").write_text(PLANTED.format(marker=str(tmp_path / f"ran-{module}")))
    monkeypatch.chdir(cwd)
    ball = _ball()
    s = np.zeros(ball.shape, np.uint8)
    for z in (12, 28):
        s[z][ball[z]] = 2
    assert _dice(fill_between(s)[12:29] == 2, ball[12:29]) > 0.85
    assert not list(tmp_path.glob("ran-*"))
    # The command too, started from that folder.
    image, _ = make_phantom()
    geom = Geometry(np.eye(4), image.shape)
    strokes = np.zeros(image.shape, np.uint8)
    strokes[20, 5:10, 5:40] = 1
    ball = ((np.indices(image.shape) - np.array([20, 15, 31])[:, None, None, None]) ** 2).sum(0) < 10**2
    for z in (14, 26):
        strokes[z][ball[z]] = 2
    write_image(tmp_path / "image.nii.gz", image, geom)
    write_labels(tmp_path / "strokes.nii.gz", strokes, geom)
    out = tmp_path / "mask.nii.gz"
    code = main(["segment", str(tmp_path / "image.nii.gz"), str(tmp_path / "strokes.nii.gz"), "-o", str(out),
                 "--fill-between", "--max-steps", "1", "--device", "cpu", "--no-forest"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "filled between outlined slices" in err and read_labels(out, like=geom)[0].shape == image.shape
    assert not list(tmp_path.glob("ran-*"))
