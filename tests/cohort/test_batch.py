"""`sparseseg batch` on real scans: a 2-worker LocalCluster, resume, bad scans, a killed worker."""

import csv
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.cohort.batch import SUMMARY_CSV, SUMMARY_JSON, plan_batch, run_batch
from napari_sparseseg.core.base.config import BatchConfig
from napari_sparseseg.core.base.errors import InputError, OutputError
from napari_sparseseg.io import read_image, read_labels
from napari_sparseseg.io.cohort import expand_inputs
from tests.conftest import make_cohort_files


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sample_dir, data_dir):
    """A CT model trained a few steps on the sample, and a cohort: 3 good CT scans, a corrupt file, an MRI."""
    return make_cohort_files(tmp_path_factory.mktemp("cohort"), sample_dir, data_dir)


def _summary(out):
    data = json.loads((out / SUMMARY_JSON).read_text())
    return data, {s["name"]: s for s in data["scans"]}


def test_two_workers_write_every_good_mask_and_report_the_bad_ones(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["batch", "--model", str(cohort / "model"), "--out-dir", str(out), str(cohort / "scans"),
            "--workers", "2", "--fine-tune-scribbles", str(cohort / "strokes" / "*.nii.gz"), "--fine-tune-seconds", "3",
            "--probabilities", "--device", "cpu", "--no-refine"]  # the CRF is not what this tests (its time was most of it)
    assert main(argv) == 3  # some scans failed
    err = capsys.readouterr().err
    assert "scan 'broken' failed" in err and "scan 'mri' failed" in err
    data, scans = _summary(out)
    assert data["counts"] == {"done": 3, "skipped": 0, "failed": 2, "queued": 0}
    assert "broken.nii.gz" in scans["broken"]["reason"]
    assert "looks like MRI" in scans["mri"]["reason"] and "trained on CT" in scans["mri"]["reason"]
    assert scans["sample"]["fine_tuned"] and not scans["abdomen"]["fine_tuned"]
    assert len({scans[n]["worker"] for n in ("sample", "abdomen", "shifted")}) == 2  # both workers took scans
    for name in ("sample", "abdomen", "shifted"):
        suffix = ".nrrd" if name == "shifted" else ".nii.gz"
        _, geom = read_image(cohort / "scans" / f"{name}{suffix}")
        mask, mgeom = read_labels(out / f"{name}_mask.nii.gz", like=geom)  # raises unless on the scan's grid
        assert mask.shape == geom.shape and np.allclose(mgeom.affine, geom.affine, atol=1e-4)
        assert mask.max() <= 4 and (name != "sample" or (mask > 0).any())  # the fine-tuned scan finds structures
        assert (out / f"{name}_probabilities.nii.gz").is_file()
        rows = scans[name]["classes"]
        voxel_ml = float(np.prod(geom.spacing)) / 1000
        for c, row in rows.items():
            assert row["voxels"] == int((mask == data["class_names"].index(c)).sum())
            assert row["volume_ml"] == pytest.approx(row["voxels"] * voxel_ml, abs=1e-3)
    assert sorted(scans[n]["review_rank"] for n in ("sample", "abdomen", "shifted")) == [1, 2, 3]
    assert scans["broken"]["review_rank"] is None
    with open(out / SUMMARY_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["scan"] for r in rows} == set(scans) and {r["status"] for r in rows if r["scan"] == "mri"} == {"failed"}

    # Resume: the done scans are skipped (their masks untouched), the failed ones are tried again.
    before = {n: os.stat(out / f"{n}_mask.nii.gz").st_mtime_ns for n in ("sample", "abdomen", "shifted")}
    good = [str(cohort / "scans" / n) for n in ("sample.nii.gz", "abdomen.nii.gz", "shifted.nrrd")]
    assert main([*argv[:5], *good, *argv[6:]]) == 0
    _, scans = _summary(out)
    assert {scans[n]["status"] for n in ("sample", "abdomen", "shifted")} == {"skipped"}
    assert before == {n: os.stat(out / f"{n}_mask.nii.gz").st_mtime_ns for n in before}

    # A changed scan is not "done": without --overwrite its mask is not replaced, and nothing runs.
    time.sleep(0.01)
    shutil.copy(cohort / "scans" / "sample.nii.gz", tmp_path / "sample.nii.gz")
    os.utime(tmp_path / "sample.nii.gz")
    shutil.copy(tmp_path / "sample.nii.gz", cohort / "scans" / "sample.nii.gz")
    capsys.readouterr()
    assert main([*argv[:5], *good, *argv[6:]]) == 2
    err = capsys.readouterr().err
    assert "sample_mask.nii.gz" in err and "--overwrite" in err, err
    assert before["sample"] == os.stat(out / "sample_mask.nii.gz").st_mtime_ns


def test_bad_arguments_exit_2_naming_the_problem(cohort, tmp_path, capsys):
    scans = str(cohort / "scans" / "sample.nii.gz")
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "model.json").write_text("{}")
    cases = [
        (["--model", str(tmp_path / "notamodel"), "--out-dir", str(tmp_path / "o1"), scans], "notamodel"),
        (["--model", str(cohort / "model"), "--out-dir", "/proc/sparseseg-out", scans], "/proc/sparseseg-out"),
        (["--model", str(cohort / "model"), "--out-dir", str(tmp_path / "o2"), str(tmp_path / "nothing*.nii.gz")],
         "matches no scans"),
        (["--model", str(cohort / "model"), "--out-dir", str(tmp_path / "o3"), scans, "--scheduler",
          "tcp://127.0.0.1:9", "--connect-timeout", "1"], "tcp://127.0.0.1:9: cannot reach the Dask scheduler"),
        (["--model", str(cohort / "model"), "--out-dir", str(tmp_path / "o4"), scans, "--tls-ca", scans],
         "--tls-ca, --tls-cert and --tls-key are for --scheduler tls://"),
        (["--model", str(cohort / "model"), "--out-dir", str(tmp_path / "o5"), scans, "--scheduler",
          "tls://127.0.0.1:9", "--tls-ca", scans], "is TLS: give the certificate, key"),
        (["--model", str(cohort / "model"), "--out-dir", str(tmp_path / "o6"), scans, "--scheduler",
          "tls://127.0.0.1:9", "--tls-ca", scans, "--tls-cert", scans, "--tls-key", str(tmp_path / "nokey.pem")],
         "nokey.pem: the key file"),
    ]
    for argv, expected in cases:
        assert main(["batch", *argv, "-q"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("sparseseg: error:") and expected in err, err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


def test_an_output_an_earlier_run_did_not_write_is_never_replaced(cohort, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sample_mask.nii.gz").write_bytes(b"the user's own file")
    entries = expand_inputs([cohort / "scans" / "sample.nii.gz"])
    with pytest.raises(OutputError, match="sample_mask.nii.gz already exist.*--overwrite"):
        plan_batch(entries, cohort / "model", out)
    assert (out / "sample_mask.nii.gz").read_bytes() == b"the user's own file"
    # An output may not be an input: a scan named like another scan's mask.
    shutil.copy(cohort / "scans" / "sample.nii.gz", tmp_path / "x_mask.nii.gz")
    shutil.copy(cohort / "scans" / "sample.nii.gz", tmp_path / "x.nii.gz")
    with pytest.raises(OutputError, match="would overwrite"):
        plan_batch(expand_inputs([tmp_path / "x.nii.gz", tmp_path / "x_mask.nii.gz"]), cohort / "model", tmp_path)


def test_a_worker_killed_mid_scan_still_yields_every_mask(cohort, tmp_path):
    from distributed import Client, LocalCluster

    entries = expand_inputs([cohort / "scans" / n for n in ("sample.nii.gz", "abdomen.nii.gz", "shifted.nrrd")])
    # Without the CRF (not what this tests): each scan still takes seconds, the first ones also the worker's imports.
    plan = plan_batch(entries, cohort / "model", tmp_path / "out", BatchConfig(device="cpu", threads=1, refine=False))
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:

        def kill_a_busy_worker():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                busy = client.run(lambda dask_worker: dask_worker.state.executing_count)
                for addr, n in busy.items():
                    if n:
                        killed.append(addr)
                        client.run(os._exit, 1, workers=[addr], wait=False)
                        return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        results = list(run_batch(plan, client=client))
        killer.join()
    assert killed, "no worker was busy to be killed"
    assert [r.status for r in results] == ["done"] * 3, [(r.name, r.reason) for r in results]
    for e in entries:
        assert (tmp_path / "out" / f"{e.name}_mask.nii.gz").is_file()


def test_an_unreachable_scheduler_is_a_clear_error(cohort, tmp_path):
    plan = plan_batch(expand_inputs([cohort / "scans" / "sample.nii.gz"]), cohort / "model", tmp_path / "o",
                      BatchConfig(connect_timeout=1))
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        list(run_batch(plan, scheduler="tcp://127.0.0.1:9"))


def test_batch_on_a_real_dask_scheduler_and_two_workers(cohort, tmp_path):
    """`dask scheduler` + two `dask worker` processes on 127.0.0.1, then `sparseseg batch --scheduler`."""
    import subprocess
    import sys
    from pathlib import Path

    dask = str(Path(sys.executable).parent / "dask")
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "out"
        scans = [str(cohort / "scans" / n) for n in ("sample.nii.gz", "abdomen.nii.gz", "shifted.nrrd")]
        r = subprocess.run([sys.executable, "-m", "napari_sparseseg.cli", "batch", "--scheduler", address, "--model",
                            str(cohort / "model"), "--out-dir", str(out), *scans, "--connect-timeout", "60", "-q", "--no-refine"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        data, records = _summary(out)
        assert data["counts"]["done"] == 3
        workers = {rec["worker"] for rec in records.values()}
        assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
        for name in ("sample", "abdomen", "shifted"):
            assert (out / f"{name}_mask.nii.gz").is_file()
    finally:
        for p in procs[::-1]:
            p.kill()  # a graceful close of a worker only costs the test time
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_train_on_the_strokes_of_several_scans_from_a_manifest(cohort, tmp_path, capsys):
    from napari_sparseseg.io.models import load_model

    strokes = tmp_path / "strokes.nii.gz"
    shutil.copy(cohort / "strokes" / "sample_scribbles.nii.gz", strokes)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("image,scribbles\n"
                        f"{cohort / 'scans' / 'sample.nii.gz'},strokes.nii.gz\n"
                        f"{cohort / 'scans' / 'abdomen.nii.gz'},\n")
    code = main(["train", str(manifest), "--model-out", str(tmp_path / "m"), "--max-steps", "2", "--device", "cpu",
                 "--no-forest"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "training on the strokes of 1 scans (1 without strokes left out)" in err
    assert load_model(tmp_path / "m").num_classes == 5
    # Another scan's strokes on the wrong grid: a clear error naming the file, no model written.
    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,scribbles\n{cohort / 'scans' / 'sample.nii.gz'},strokes.nii.gz\n"
                   f"{cohort / 'scans' / 'abdomen.nii.gz'},strokes.nii.gz\n")
    assert main(["train", str(bad), "--model-out", str(tmp_path / "m2"), "--max-steps", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "strokes.nii.gz" in err and not (tmp_path / "m2").exists()
