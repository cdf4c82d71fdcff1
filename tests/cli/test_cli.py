"""`sparseseg` end to end: success paths and every bad-input case of the contract."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.core.inference.postprocess import keep_stroke_regions
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
    assert out.max() <= 4 and (model / "model.json").is_file() and (model / "forest.npz").is_file()
    import nibabel as nib

    p = np.asanyarray(nib.load(str(probs)).dataobj)
    assert p.shape == gi.shape[::-1] + (5,) and np.allclose(p.sum(-1), 1.0, atol=0.02)
    assert "[train]" in err  # progress on stderr
    assert "trained 3 steps" in err and "the step bound was reached" in err  # and why the round ended

    # `predict` has no strokes, so it gives the network's mask; `segment` then keeps only the
    # regions touching a stroke of their class (unless --keep-all-regions). Without the CRF
    # (whose hard constraints are the strokes) the two differ by exactly that filter.
    mask2, unrefined = tmp_path / "mask2.mha", tmp_path / "unrefined.nii.gz"
    code, err = _run(capsys, "predict", case / "image.nii.gz", "--model", model, "-o", mask2, "--device", "cpu", "--no-refine")
    assert code == 0, err
    raw = read_labels(mask2)[0]
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", unrefined,
                     "--max-steps", 3, "--device", "cpu", "--no-refine")
    assert code == 0, err
    filtered = raw.copy()
    keep_stroke_regions(filtered, read_labels(case / "scribbles.nii.gz")[0])
    assert np.array_equal(filtered, read_labels(unrefined)[0])
    assert not np.array_equal(read_labels(unrefined)[0], out)  # the CRF (on by default) moved outlines
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "all.nii.gz",
                     "--max-steps", 3, "--device", "cpu", "--keep-all-regions", "--no-refine")
    assert code == 0, err
    assert np.array_equal(read_labels(tmp_path / "all.nii.gz")[0], raw)  # seeded: the same network

    corr = np.zeros_like(out)
    ref, _ = read_labels(case / "reference.nii.gz")
    wrong = (out != ref)
    corr[wrong] = ref[wrong] + 1
    write_labels(tmp_path / "corr.nii.gz", corr, g)
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "mask3.nrrd",
                     "--corrections", tmp_path / "corr.nii.gz", "--init-model", model, "--max-steps", 2, "--device", "cpu",
                     "--no-refine")  # the CRF was shown above
    assert code == 0, err


def test_no_forest_trains_and_predicts_with_the_network_alone(case, tmp_path, capsys):
    model, mask = tmp_path / "model", tmp_path / "m.nii.gz"
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", mask, "--max-steps", 2,
                     "--device", "cpu", "--model-out", model, "--no-forest", "--no-refine", "--keep-all-regions")
    assert code == 0, err
    assert not (model / "forest.npz").exists() and json.loads((model / "model.json").read_text())["forest"] is None
    # The same network with a forest fused: `predict --no-forest` gives back the network's own mask.
    with_forest = tmp_path / "with"
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "f.nii.gz",
                     "--max-steps", 2, "--device", "cpu", "--model-out", with_forest, "--no-refine", "--keep-all-regions")
    assert code == 0, err
    alone = tmp_path / "alone.nii.gz"
    code, err = _run(capsys, "predict", case / "image.nii.gz", "--model", with_forest, "-o", alone, "--device", "cpu",
                     "--no-refine", "--no-forest")
    assert code == 0, err
    assert np.array_equal(read_labels(alone)[0], read_labels(mask)[0])  # seeded: the same network, no forest
    assert not np.array_equal(read_labels(tmp_path / "f.nii.gz")[0], read_labels(mask)[0])  # the forest counts


# Bad input and faults (exit 2 / 130, one line, nothing lost): tests/cli/test_bad_input.py.


def test_quiet_prints_nothing_and_stderr_gets_one_line_per_stage(case, tmp_path, capsys):
    argv = ["segment", case / "image.nii.gz", case / "scribbles.nii.gz", "--max-steps", 2, "--device", "cpu",
            "-o", tmp_path / "m.nii.gz", "--model-out", tmp_path / "model", "--probabilities", tmp_path / "p.nii.gz",
            "--no-refine"]  # (the CRF prints no stage of its own: it is part of [predict])
    code = main([str(a) for a in [*argv, "-q"]])
    cap = capsys.readouterr()
    assert code == 0 and cap.out == "" and cap.err == ""
    first = (tmp_path / "model" / "model.pt").stat().st_ino
    code, err = _run(capsys, *argv)  # stderr is not a terminal here: one line per stage, no bar
    assert code == 0, err
    lines = err.strip().splitlines()
    assert [ln.split()[0] for ln in lines if ln.startswith("[")] == ["[features]", "[train]", "[predict]"]
    assert "\r" not in err and "%|" not in err
    assert lines[-3:] == [f"wrote mask {tmp_path / 'm.nii.gz'}", f"wrote probabilities {tmp_path / 'p.nii.gz'}",
                          f"saved model {tmp_path / 'model'}"]
    assert (tmp_path / "model" / "model.pt").stat().st_ino != first  # our own model folder is replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii.gz", "model", "p.nii.gz"]  # no temporary left


def test_console_script_and_module_entry(tmp_path):
    r = subprocess.run([sys.executable, "-m", "napari_sparseseg.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "napari-sparseseg" in r.stdout
    exe = shutil.which("sparseseg", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "console script `sparseseg` not installed next to the interpreter"
    r = subprocess.run([exe, "segment", "x.nii.gz"], capture_output=True, text=True)
    assert r.returncode == 2  # argparse: -o missing


def test_demo_quiet_keeps_its_table_and_replaces_its_own_output(tmp_path, capsys, sample_dir):
    from napari_sparseseg.io.sample import load_sample

    s = load_sample(sample_dir)
    data = tmp_path / "sample"
    data.mkdir()
    crop = (slice(0, 24), slice(0, 32), slice(0, 32))
    from napari_sparseseg.io import Geometry

    g = Geometry(s["geometry"].affine, (24, 32, 32))
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ascontiguousarray(s["image"][crop].transpose(2, 1, 0)), g.nifti_affine()),
             str(data / "image.nii.gz"))
    scr = np.zeros((24, 32, 32), np.uint8)
    scr[12, 2:5, 2:5], scr[12, 20:24, 20:24] = 1, 2
    write_labels(data / "scribbles.nii.gz", scr, g)
    write_labels(data / "reference.nii.gz", (s["reference"][crop] > 0).astype(np.uint8), g)
    (data / "classes.json").write_text('["background", "organ"]')
    out = tmp_path / "demo"
    argv = ["demo", "--data", str(data), "-o", str(out), "--rounds", "2", "--time-budget", "0.5", "--device", "cpu", "-q"]
    for _ in range(2):  # the second run replaces the first one's output
        assert main(argv) == 0
        cap = capsys.readouterr()
        assert cap.err == "" and "mean" in cap.out and "organ" in cap.out
        assert sorted(p.name for p in out.iterdir()) == ["corrections.nii.gz", "mask.nii.gz", "model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "sample"]


@pytest.mark.slow
def test_demo_runs_and_prints_dice(tmp_path, capsys):
    from napari_sparseseg.core.base.config import DemoConfig
    from napari_sparseseg.demo import run_demo

    rows = run_demo(out_dir=tmp_path, cfg=DemoConfig(time_budget=4, rounds=2, device="cpu"), quiet=True)
    out = capsys.readouterr().out
    assert "liver" in out and "mean" in out and len(rows) == 2
    assert (tmp_path / "mask.nii.gz").is_file() and (tmp_path / "model" / "model.pt").is_file()
    assert (tmp_path / "corrections.nii.gz").is_file()
    assert all(0 <= d <= 1 for r in rows for d in r["dice"].values())


def test_pretrain_runs_once_per_scan_and_is_cached(case, tmp_path, capsys, monkeypatch):
    """--pretrain trains on the scan itself first; a second run on the same scan reuses the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPARSESEG_CACHE", str(cache))
    argv = ["segment", case / "image.nii.gz", case / "scribbles.nii.gz", "--max-steps", 3, "--device", "cpu",
            "--pretrain", 1, "--no-refine", "--no-forest"]  # pretraining and its cache are what this is about
    code, err = _run(capsys, *argv, "-o", tmp_path / "m1.nii.gz", "--model-out", tmp_path / "model")
    assert code == 0, err
    first = next(line for line in err.splitlines() if line.startswith("pretrained "))
    assert (tmp_path / "m1.nii.gz").exists()
    [entry] = list(cache.iterdir())
    assert sorted(p.name for p in entry.iterdir()) == ["pretrained.json", "pretrained.pt"]
    import json

    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["history"][0]["pretrained"] == "inpaint" and meta["history"][-1]["round"] == 1
    code, err = _run(capsys, *argv, "-o", tmp_path / "m2.nii.gz")
    assert code == 0, err
    assert next(line for line in err.splitlines() if line.startswith("pretrained ")) == first  # nothing more paid
    # A warm start and pretraining do not mix: refused before any work.
    code, err = _run(capsys, *argv, "-o", tmp_path / "m3.nii.gz", "--init-model", tmp_path / "model")
    assert code == 2 and "--init-model" in err and not (tmp_path / "m3.nii.gz").exists()


def test_segment_suggest_writes_the_slices_to_paint_next(case, tmp_path, capsys):
    mask = tmp_path / "mask.nii.gz"
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", mask,
                     "--max-steps", 20, "--device", "cpu", "--no-refine", "--suggest", 3)
    assert code == 0, err
    doc = json.loads((tmp_path / "mask_suggestions.json").read_text())
    rows = doc["suggestions"]
    assert 1 <= len(rows) <= 3 and "suggested slices" in err
    img, g = read_image(case / "image.nii.gz")
    assert all(r["score"] > 0 and r["uncertain_mm2"] > 0 for r in rows)
    assert len({r["axis"] for r in rows}) == len(rows)  # the first three: one per orientation
    for r in rows:
        assert 0 <= r["index"] < img.shape[r["axis"]] and r["orientation"] == g.plane(r["axis"])
        # The centre is on the suggested slice: back to an index along the axis.
        index = np.linalg.solve(g.affine[:3, :3], np.asarray(r["centre_mm"]) - g.affine[:3, 3])
        assert abs(index[r["axis"]] - r["index"]) < 1e-3
    # The JSON is an output like any other: never an input, checked before any training.
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "m2.nii.gz",
                     "--max-steps", 20, "--device", "cpu", "--suggest", 3, "--suggestions", case / "scribbles.nii.gz")
    assert code == 2 and "scribbles" in err and "[train]" not in err
    assert not (tmp_path / "m2.nii.gz").exists()


def test_segment_from_boxes_and_clicks_in_world_mm(case, tmp_path, capsys):
    from scipy import ndimage as ndi

    from napari_sparseseg.io.hints import read_boxes, world_to_index

    img, g = read_image(case / "image.nii.gz")
    ref, _ = read_labels(case / "reference.nii.gz", like=g)
    boxes = []
    for c in range(1, int(ref.max()) + 1):
        (sl,) = ndi.find_objects((ref == c).astype(np.uint8))
        corners = [g.index_to_world([s.start for s in sl]).tolist(), g.index_to_world([s.stop - 1 for s in sl]).tolist()]
        boxes.append({"class": c, "corners_mm": corners})
    boxes[0]["class"] = "liver"  # names work where the classes are named
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    centre = g.index_to_world([2, 2, 2]).tolist()
    (tmp_path / "clicks.json").write_text(json.dumps({"clicks": [{"class": 0, "point_mm": centre}]}))
    names = "background,liver,spleen,kidney_right,kidney_left"
    # World millimetres land back on the voxels they came from.
    back = read_boxes(tmp_path / "boxes.json", g, names.split(","))
    assert np.allclose(back[1].corner_a, [s.start for s in ndi.find_objects((ref == 2).astype(np.uint8))[0]])
    assert np.allclose(world_to_index(g, centre), [2, 2, 2])
    empty = tmp_path / "none.nii.gz"
    write_labels(empty, np.zeros(img.shape, np.uint8), g)
    mask = tmp_path / "mask.nii.gz"
    code, err = _run(capsys, "segment", case / "image.nii.gz", empty, "-o", mask, "--boxes", tmp_path / "boxes.json",
                     "--clicks", tmp_path / "clicks.json", "--class-names", names, "--max-steps", 5, "--device", "cpu",
                     "--no-refine", "--no-forest")
    assert code == 0, err
    assert "4 boxes and 1 clicks" in err and set(np.unique(read_labels(mask)[0])) <= set(range(5))
    # A box outside the scan, or an unknown class name, is named with its file before any training.
    bad = [{"class": 1, "corners_mm": [centre, (np.asarray(centre) + 5000).tolist()]}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, err = _run(capsys, "segment", case / "image.nii.gz", empty, "-o", tmp_path / "m2.nii.gz", "--boxes",
                     tmp_path / "bad.json", "--max-steps", 5, "--device", "cpu")
    assert code == 2 and "bad.json" in err and "outside the scan" in err and "[train]" not in err
    code, err = _run(capsys, "segment", case / "image.nii.gz", empty, "-o", tmp_path / "m3.nii.gz", "--boxes",
                     tmp_path / "boxes.json", "--max-steps", 5, "--device", "cpu")
    assert code == 2 and "unknown class name 'liver'" in err


def test_segment_fill_between_outlined_slices(case, tmp_path, capsys):
    img, g = read_image(case / "image.nii.gz")
    ref, _ = read_labels(case / "reference.nii.gz", like=g)
    s = np.zeros(ref.shape, np.uint8)
    zs = np.flatnonzero((ref == 1).any(axis=(1, 2)))
    for z in (int(zs[len(zs) // 3]), int(zs[2 * len(zs) // 3])):
        s[z][ref[z] == 1] = 2      # the liver outlined (filled) on two slices
        s[z][ref[z] == 0] = 1      # and the background around it
    write_labels(tmp_path / "outlines.nii.gz", s, g)
    code, err = _run(capsys, "segment", case / "image.nii.gz", tmp_path / "outlines.nii.gz", "-o", tmp_path / "m.nii.gz",
                     "--fill-between", "--max-steps", 5, "--device", "cpu", "--no-refine", "--no-forest")
    assert code == 0, err
    filled = int(err.split("filled between outlined slices: ")[1].split()[0])
    between = int(((ref == 1)[zs[len(zs) // 3] + 1 : zs[2 * len(zs) // 3]]).sum())
    assert 0.5 * between < filled < 2 * between + (s == 2).sum()  # about the liver between the two outlines


def test_working_voxels_learns_on_blocks_and_writes_every_voxel(case, tmp_path, capsys):
    """A scan above --working-voxels is learned on blocks; the mask is on the scan's grid, strokes kept."""
    mask, model = tmp_path / "mask.nii.gz", tmp_path / "model"
    img, g = read_image(case / "image.nii.gz")  # 52 x 80 x 110 at 3 mm: 457,600 voxels
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", mask, "--max-steps", 5,
                     "--device", "cpu", "--model-out", model, "--working-voxels", 60_000)
    assert code == 0, err
    saved = json.loads((model / "model.json").read_text())
    assert saved["spacing"] == [6.0, 6.0, 6.0]  # 2 x 2 x 2 blocks: 26 x 40 x 55 = 57,200 voxels
    out, og = read_labels(mask)
    strokes, _ = read_labels(case / "scribbles.nii.gz")
    assert out.shape == img.shape and np.allclose(og.affine, g.affine)
    assert np.array_equal(out[strokes > 0], strokes[strokes > 0] - 1)  # every stroke voxel keeps its class
    code, err = _run(capsys, "predict", case / "image.nii.gz", "--model", model, "-o", tmp_path / "p.nii.gz",
                     "--device", "cpu", "--working-voxels", 60_000)
    assert code == 0, err
    assert read_labels(tmp_path / "p.nii.gz")[0].shape == img.shape
    code, err = _run(capsys, "segment", case / "image.nii.gz", case / "scribbles.nii.gz", "-o", tmp_path / "m3.nii.gz",
                     "--working-voxels", -1)
    assert code == 2 and "working" in err and not (tmp_path / "m3.nii.gz").exists()
