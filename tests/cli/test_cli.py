"""`sparseseg` end to end: success paths and every bad-input case of the contract."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.core.postprocess import keep_stroke_regions
from napari_sparseseg.io import Geometry, read_image, read_labels, write_labels


@pytest.fixture(scope="module")
def case(tmp_path_factory, sample_dir):
    """The bundled sample, copied, plus a few variants of its scribbles."""
    d = tmp_path_factory.mktemp("cli")
    for name in ("image.nii.gz", "scribbles.nii.gz", "reference.nii.gz"):
        shutil.copy(sample_dir / name, d / name)
    img, g = read_image(d / "image.nii.gz")
    s, _ = read_labels(d / "scribbles.nii.gz")
    write_labels(d / "empty.nii.gz", np.zeros_like(s), g)
    write_labels(d / "oneclass.nii.gz", np.where(s > 0, 2, 0), g)
    write_labels(d / "othergrid.nii.gz", s[:, :-4], Geometry(g.affine, (s.shape[0], s.shape[1] - 4, s.shape[2])))
    import nibabel as nib

    nan = img.astype(np.float32)
    nan[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(nan.transpose(2, 1, 0), g.nifti_affine()), d / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((9, 9), np.int16), np.eye(4)), d / "flat.nii.gz")
    (d / "garbage.nii.gz").write_bytes(b"\x1f\x8b garbage")
    return d


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def test_segment_then_predict_then_refine(case, tmp_path, capsys):
    mask, probs, model = tmp_path / "mask.nii.gz", tmp_path / "p.nii.gz", tmp_path / "model"
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", mask,
                     "--max-steps", 3, "--device", "cpu", "--model-out", model, "--probabilities", probs)
    assert code == 0, err
    out, g = read_labels(mask)
    _, gi = read_image(case / "image.nii.gz")
    assert out.shape == gi.shape and np.allclose(g.affine, gi.affine)
    assert out.max() <= 4 and (model / "model.json").is_file()
    import nibabel as nib

    p = np.asanyarray(nib.load(str(probs)).dataobj)
    assert p.shape == gi.shape[::-1] + (5,) and np.allclose(p.sum(-1), 1.0, atol=0.02)
    assert "[train]" in err  # progress on stderr

    # `predict` has no strokes, so it gives the network's mask; `segment` then keeps only the
    # regions touching a stroke of their class (unless --keep-all-regions).
    mask2 = tmp_path / "mask2.mha"
    code, err = _run(capsys, "predict", case / "image.nii.gz", "--model", model, "-o", mask2, "--device", "cpu")
    assert code == 0, err
    raw = read_labels(mask2)[0]
    filtered = raw.copy()
    keep_stroke_regions(filtered, read_labels(case / "scribbles.nii.gz")[0])
    assert np.array_equal(filtered, out)
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "all.nii.gz",
                     "--max-steps", 3, "--device", "cpu", "--keep-all-regions")
    assert code == 0, err
    assert np.array_equal(read_labels(tmp_path / "all.nii.gz")[0], raw)  # seeded: the same network

    corr = np.zeros_like(out)
    ref, _ = read_labels(case / "reference.nii.gz")
    wrong = (out != ref)
    corr[wrong] = ref[wrong] + 1
    write_labels(tmp_path / "corr.nii.gz", corr, g)
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "mask3.nrrd",
                     "--corrections", tmp_path / "corr.nii.gz", "--init-model", model, "--max-steps", 2, "--device", "cpu")
    assert code == 0, err


BAD = [
    ("missing image", ["segment", "{d}/nope.nii.gz", "{d}/scribbles.nii.gz"], "nope.nii.gz: file not found"),
    ("unreadable", ["segment", "{d}/garbage.nii.gz", "{d}/scribbles.nii.gz"], "garbage.nii.gz: cannot read"),
    ("not 3-D", ["segment", "{d}/flat.nii.gz", "{d}/scribbles.nii.gz"], "flat.nii.gz: expected a 3-D volume"),
    ("other grid", ["segment", "{d}/image.nii.gz", "{d}/othergrid.nii.gz"], "othergrid.nii.gz: scribbles grid"),
    ("no scribbles", ["segment", "{d}/image.nii.gz", "{d}/empty.nii.gz"], "empty.nii.gz: no scribbles"),
    ("one class", ["segment", "{d}/image.nii.gz", "{d}/oneclass.nii.gz"], "oneclass.nii.gz: only one class"),
    ("nan", ["segment", "{d}/nan.nii.gz", "{d}/scribbles.nii.gz"], "nan.nii.gz: the image has 1 NaN/inf"),
    ("device", ["segment", "{d}/image.nii.gz", "{d}/scribbles.nii.gz", "--device", "gpu"], "unknown device 'gpu'"),
    ("no cuda", ["segment", "{d}/image.nii.gz", "{d}/scribbles.nii.gz", "--device", "cuda"], "CUDA is not available"),
    ("bad model", ["segment", "{d}/image.nii.gz", "{d}/scribbles.nii.gz", "--init-model", "{d}"], "not a napari-sparseseg model"),
    ("predict no model", ["predict", "{d}/image.nii.gz", "--model", "{d}/nomodel"], "nomodel: model folder not found"),
]


@pytest.mark.parametrize("name, argv, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_2_nothing_overwritten(case, tmp_path, capsys, name, argv, message):
    import torch

    if name == "no cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"previous result")
    code, err = _run(capsys, *[a.format(d=case) for a in argv], "-o", out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparseseg: error: "), err
    assert message in lines[0]
    assert out.read_bytes() == b"previous result"


@pytest.mark.parametrize("where", ["missing_dir/mask.nii.gz", "afile/mask.nii.gz"])
def test_output_folder_not_writable(case, tmp_path, capsys, where):
    (tmp_path / "afile").write_text("x")
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / where, "--max-steps", 1)
    assert code == 2 and "sparseseg: error:" in err and "mask.nii.gz" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_and_module_entry(tmp_path):
    r = subprocess.run([sys.executable, "-m", "napari_sparseseg.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "napari-sparseseg" in r.stdout
    exe = shutil.which("sparseseg", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "console script `sparseseg` not installed next to the interpreter"
    r = subprocess.run([exe, "segment", "x.nii.gz"], capture_output=True, text=True)
    assert r.returncode == 2  # argparse: -o missing


@pytest.mark.slow
def test_demo_runs_and_prints_dice(tmp_path, capsys):
    from napari_sparseseg.core.config import DemoConfig
    from napari_sparseseg.demo import run_demo

    rows = run_demo(out_dir=tmp_path, cfg=DemoConfig(time_budget=4, rounds=2, device="cpu"), quiet=True)
    out = capsys.readouterr().out
    assert "liver" in out and "mean" in out and len(rows) == 2
    assert (tmp_path / "mask.nii.gz").is_file() and (tmp_path / "model" / "model.pt").is_file()
    assert (tmp_path / "corrections.nii.gz").is_file()
    assert all(0 <= d <= 1 for r in rows for d in r["dice"].values())
