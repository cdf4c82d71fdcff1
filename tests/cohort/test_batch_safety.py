"""A hostile tester's batch and cohort cases: outputs stay in their folder, a model meets only scans of its
modality, Ctrl-C leaves a batch that resumes, a dead worker's scan is retried, CSV cells are no formulas,
the local cluster is this user's alone. Where a user's file could be hit, a sentinel's bytes are checked.
"""

import csv
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_sparseseg.cli import main
from napari_sparseseg.cohort.batch import SUMMARY_CSV, SUMMARY_JSON, ScanResult, _write_summary, plan_batch, run_batch
from napari_sparseseg.cohort.project import COHORT_FILE, Cohort
from napari_sparseseg.core.base.config import BatchConfig
from napari_sparseseg.core.base.errors import InputError, OutputError
from napari_sparseseg.io.cohort import ScanEntry, expand_inputs
from napari_sparseseg.io.csvsafe import csv_cell
from tests.conftest import REPO, make_cohort_files

SENTINEL = b"the user's own file: these bytes must not change"
FAST = ["--device", "cpu", "--threads", "1", "--no-refine", "--no-forest"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sample_dir, data_dir):
    """A CT model trained a few steps on the sample; scans: the sample, the abdomen CT, a shifted NRRD, an MRI..."""
    return make_cohort_files(tmp_path_factory.mktemp("cohort"), sample_dir, data_dir)


def _sentinel(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SENTINEL)
    return path


def _summary(out):
    data = json.loads((out / SUMMARY_JSON).read_text())
    return data, {s["name"]: s for s in data["scans"]}


# ---------------------------------------------------------------- output names (issue: one mask at the root)
def test_ct_nii_gz_and_ct_nrrd_in_one_folder_each_get_their_mask_in_the_out_dir(cohort, tmp_path, capsys):
    """Both got one name built from the full path: one mask for two scans, written at the filesystem root."""
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(cohort / "scans" / "sample.nii.gz", scans / "ct.nii.gz")
    shutil.copy(cohort / "scans" / "shifted.nrrd", scans / "ct.nrrd")
    shutil.copy(cohort / "scans" / "shifted.nrrd", scans / "=1+2.nrrd")  # a name a spreadsheet would run
    sentinel = _sentinel(scans / "notes.txt")
    root_before = set(os.listdir("/"))
    out = tmp_path / "out"
    assert main(["batch", "--model", str(cohort / "model"), "--out-dir", str(out), str(scans), "--workers", "1",
                 *FAST]) == 0, capsys.readouterr().err
    assert "3 done" in capsys.readouterr().err
    assert set(os.listdir("/")) == root_before
    assert sorted(os.listdir(out)) == sorted(["=1+2_mask.nii.gz", SUMMARY_CSV, SUMMARY_JSON, "ct_nii_gz_mask.nii.gz",
                                              "ct_nrrd_mask.nii.gz"])
    _, records = _summary(out)
    assert records["ct_nii_gz"]["image"].endswith("ct.nii.gz") and records["ct_nrrd"]["image"].endswith("ct.nrrd")
    assert sentinel.read_bytes() == SENTINEL
    with open(out / SUMMARY_CSV, newline="") as f:
        cells = {r["scan"] for r in csv.DictReader(f)}
    assert "'=1+2" in cells and "=1+2" not in cells  # escaped (OWASP: a leading single quote)


def test_names_that_would_leave_the_out_dir_are_refused_before_any_work(cohort, tmp_path):
    image = cohort / "scans" / "sample.nii.gz"
    outside = _sentinel(tmp_path / "x" / "evil_mask.nii.gz")
    out = tmp_path / "deep" / "er" / "out"
    out.parent.mkdir(parents=True)
    for name in ["../../x/evil", str(tmp_path / "x" / "evil"), "a/b", "..", ""]:
        with pytest.raises(InputError, match="plain name|empty"):
            plan_batch([ScanEntry(image, name)], cohort / "model", out)
        assert not out.exists()  # refused before anything is made
    with pytest.raises(InputError, match="same files"):  # one file on a case-insensitive file system
        plan_batch([ScanEntry(image, "CT"), ScanEntry(cohort / "scans" / "shifted.nrrd", "ct")], cohort / "model", out)
    # An output that is a symbolic link to a user's file elsewhere: refused, the file untouched.
    out.mkdir()
    (out / "sample_mask.nii.gz").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link"):
        plan_batch([ScanEntry(image, "sample")], cohort / "model", out, BatchConfig(overwrite=True))
    assert outside.read_bytes() == SENTINEL and not (out / SUMMARY_JSON).exists()


# ---------------------------------------------------------------- a cohort folder (issue: names and links in it)
def _cohort_with(tmp_path, cohort, edit) -> Path:
    folder = tmp_path / "c"
    c = Cohort.create(folder, cohort / "model")
    c.add([cohort / "scans" / "sample.nii.gz"])
    data = json.loads((folder / COHORT_FILE).read_text())
    edit(data)
    (folder / COHORT_FILE).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("name", ["../../../x/evil", "ABSOLUTE", "sub/evil", "..", 12])
def test_a_cohort_file_naming_a_scan_with_a_path_is_refused(cohort, tmp_path, name):
    sentinel = _sentinel(tmp_path / "x" / "evil_mask.nii.gz")
    if name == "ABSOLUTE":
        name = str(tmp_path / "x" / "evil")
    folder = _cohort_with(tmp_path, cohort, lambda d: d["scans"][0].update(name=name))
    with pytest.raises(InputError, match="plain name|not text") as info:
        Cohort.open(folder)
    assert info.value.path == str(folder / COHORT_FILE)
    assert sentinel.read_bytes() == SENTINEL


def test_a_cohort_file_with_two_scans_of_one_name_is_refused(cohort, tmp_path):
    folder = _cohort_with(tmp_path, cohort, lambda d: d["scans"].append({**d["scans"][0], "name": "SAMPLE"}))
    with pytest.raises(InputError, match="same files"):
        Cohort.open(folder)


@pytest.mark.parametrize("part", ["model", "strokes"])
def test_a_cohort_model_or_strokes_folder_that_is_a_link_is_refused(cohort, tmp_path, part):
    folder = _cohort_with(tmp_path, cohort, lambda d: None)
    outside = tmp_path / "elsewhere"
    if part == "model":
        shutil.copytree(folder / "model", outside)
        shutil.rmtree(folder / "model")
    else:
        outside.mkdir()
    sentinel = _sentinel(outside / "model.pt" if part == "model" else outside / "sample_strokes.nii.gz")
    (folder / part).symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match="symbolic link"):
        Cohort.open(folder)
    c = Cohort(folder, [])  # even past open (an API caller): every write checks again
    with pytest.raises(OutputError, match="symbolic link"):
        c.save_refined(None, 0, 0.0) if part == "model" else c.add_corrections("sample", None, None, None)
    assert sentinel.read_bytes() == SENTINEL


# ---------------------------------------------------------------- one modality check wherever a model meets a scan
@pytest.mark.parametrize("command", ["predict", "segment", "train"])
def test_an_mri_with_a_ct_model_is_refused_like_batch_does(cohort, data_dir, tmp_path, capsys, command):
    mri, labels = data_dir / "mr_abdomen_image.nii.gz", data_dir / "mr_abdomen_labels.nii.gz"
    manifest = tmp_path / "mri.csv"
    manifest.write_text(f"image,scribbles\n{mri},{labels}\n")
    outputs = tmp_path / "o"
    outputs.mkdir()
    out = outputs / "out.nii.gz"
    argv = {"predict": ["predict", str(mri), "--model", str(cohort / "model"), "-o", str(out)],
            "segment": ["segment", str(mri), str(labels), "--init-model", str(cohort / "model"), "-o", str(out),
                        "--max-steps", "1"],
            "train": ["train", str(manifest), "--init-model", str(cohort / "model"), "--model-out", str(outputs / "m"),
                      "--max-steps", "1"]}[command]
    assert main([*argv, "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sparseseg: error:")
    assert "looks like MRI" in err and "trained on CT" in err, err
    assert os.listdir(outputs) == []


# ---------------------------------------------------------------- CSV cells that a spreadsheet would run
def test_every_summary_cell_that_starts_a_formula_is_escaped(cohort, tmp_path):
    assert [csv_cell(v) for v in ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "ok", None, 3, -2.5)] == \
        ["'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "ok", "", 3, -2.5]
    plan = plan_batch([ScanEntry(cohort / "scans" / "sample.nii.gz", "@evil")], cohort / "model", tmp_path / "o")
    results = {"@evil": ScanResult("@evil", "failed", reason="=HYPERLINK(\"http://x\")", image="-image"),
               "+plus": ScanResult("+plus", "done", classes={"-cls": {"voxels": 1, "volume_ml": 0.5, "components": 1,
                                                                      "mean_uncertainty": None, "p95_uncertainty": None}})}
    _write_summary(plan, results)
    with open(tmp_path / "o" / SUMMARY_CSV, newline="") as f:
        rows = list(csv.reader(f))
    cells = [c for row in rows[1:] for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
    assert {"'@evil", "'=HYPERLINK(\"http://x\")", "'-image", "'+plus", "'-cls"} <= set(cells)
    assert json.loads((tmp_path / "o" / SUMMARY_JSON).read_text())["scans"][0]["name"] == "@evil"  # JSON as is


# ---------------------------------------------------------------- a worker that dies: retried, bounded
def _dies(task, payload, settings, threads=None):
    """process_scan, but the worker dies on the first try of each scan (on every try of 'shifted')."""
    from napari_sparseseg.cohort.work import process_scan

    tries = Path(os.environ["SPARSESEG_TEST_TRIES"])
    with open(tries / task.name, "a") as f:
        f.write("x")
    if task.name == "shifted" or (tries / task.name).stat().st_size == 1:
        os._exit(1)
    return process_scan(task, payload, settings, threads)


def test_a_scan_whose_only_worker_died_is_retried_a_bounded_number_of_times(cohort, tmp_path, monkeypatch):
    """Hostile tester: a killed worker failed every scan (the scattered model was lost with it)."""
    import napari_sparseseg.cohort.batch as batch

    tries = tmp_path / "tries"
    tries.mkdir()
    monkeypatch.setenv("SPARSESEG_TEST_TRIES", str(tries))
    monkeypatch.setattr(batch, "process_scan", _dies)
    entries = expand_inputs([cohort / "scans" / n for n in ("sample.nii.gz", "shifted.nrrd")])
    plan = plan_batch(entries, cohort / "model", tmp_path / "out", BatchConfig(device="cpu", threads=1, workers=1,
                                                                               retries=1, refine=False, forest=False))
    results = {r.name: r for r in run_batch(plan)}
    assert results["sample"].status == "done", results["sample"].reason
    assert (tmp_path / "out" / "sample_mask.nii.gz").is_file()
    assert results["shifted"].status == "failed" and "died each time" in results["shifted"].reason
    assert (tries / "sample").read_text() == "xx"
    assert 2 <= len((tries / "shifted").read_text()) <= 4  # bounded: retries=1 (and Dask's own retry of an error)


# ---------------------------------------------------------------- the local cluster is this user's alone
def test_the_local_cluster_refuses_clients_without_this_runs_certificate(tmp_path, monkeypatch):
    from napari_sparseseg.cohort.cluster import DaskRunner

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    with DaskRunner(BatchConfig(workers=1)) as runner:
        address = runner.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:") and all(w.startswith("tls://127.0.0.1:") for w in runner.workers())
        assert runner.client.submit(sum, [1, 2]).result(timeout=60) == 3  # the batch's own client works
        # The workers (and any their nannies restart) import nothing from the cwd.
        assert set(runner.client.run(os.environ.get, "PYTHONSAFEPATH").values()) == {"1"}
        assert os.environ["PYTHONSAFEPATH"] == "1"  # while the cluster runs (restored after)
        # Another user is another process: each attempt runs in one (a Client whose connection failed
        # is closed by the garbage collector, which can deadlock the next Client made in the same process).
        for scheme, security in (("tcp://", ""), ("tls://", ""), ("tls://", "Security.temporary()")):
            other = address.replace("tls://", scheme)
            code = (f"from distributed import Client, Security\n"
                    f"try:\n    Client({other!r}, timeout=5, set_as_default=False{', security=' + security if security else ''})\n"
                    f"except Exception as e:\n    print('refused:', type(e).__name__)\nelse:\n    print('CONNECTED')\n")
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert r.stdout.startswith("refused:"), (other, security, r.stdout, r.stderr[-2000:])
            assert time.monotonic() - t0 < 40
        # A raw TLS connection without a client certificate gets nothing either.
        host, port = address.split("//")[1].rsplit(":", 1)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        import socket

        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, OSError)):
                with ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"\x00" * 64)
                    if not tls.recv(1):
                        raise ConnectionResetError("closed by the scheduler")
    assert "PYTHONSAFEPATH" not in os.environ
    assert sorted(os.listdir(tmp_path)) == []  # its scratch (model copies, worker folders) is gone


# ---------------------------------------------------------------- Ctrl-C: one line, nothing left, resumes
PLANTED = "import pathlib; pathlib.Path({marker!r}).write_text('ran'); raise SystemExit('planted module ran')\n"


def test_ctrl_c_in_batch_prints_one_line_leaves_nothing_and_the_rerun_resumes(cohort, tmp_path):
    sparseseg = Path(sys.executable).parent / "sparseseg"
    if not sparseseg.is_file():
        pytest.skip("no sparseseg console script beside this Python")
    cwd, tmp, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    cwd.mkdir()
    tmp.mkdir()
    for module in ("multiprocessing", "numpy", "itk", "torch"):  # in the folder the user starts from: never run
        (cwd / f"{module}.py").write_text(PLANTED.format(marker=str(tmp_path / f"ran-{module}")))
    shutil.copy(cohort / "strokes" / "sample_scribbles.nii.gz", tmp_path / "sample_scribbles.nii.gz")
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # (no empty entry: an empty PYTHONPATH entry is the current folder, which the user asked for by it)
    env.pop("PYTHONSAFEPATH", None)
    argv = [str(sparseseg), "batch", "--model", str(cohort / "model"), "--out-dir", str(out), "--workers", "1", *FAST,
            str(cohort / "scans" / "sample.nii.gz"), str(cohort / "scans" / "shifted.nrrd"),
            "--fine-tune-scribbles", str(tmp_path / "*_scribbles.nii.gz")]
    p = subprocess.Popen([*argv, "--fine-tune-seconds", "120"], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)  # its own process group: Ctrl-C in a terminal signals the group
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tmp.glob("sparseseg-dask-*/**/worker-*")):
            time.sleep(0.1)  # the local cluster's worker is up; the scan is submitted right after
        if time.monotonic() >= deadline:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"no worker started in 120 s; stderr: {p.communicate(timeout=30)[1][-3000:]}")
        time.sleep(5)  # fine-tuning now (for 120 s)
        os.killpg(p.pid, signal.SIGINT)
        err = p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "scan/s" not in ln and "%|" not in ln]
    assert len(lines) == 2 and lines[-1].startswith("sparseseg: interrupted;") and "1 stopped while running" in lines[-1], err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sorted(os.listdir(tmp)) == []  # no model copies, no worker folders left
    assert not list(tmp_path.glob("ran-*"))  # nothing from the folder the command started in ran
    _, records = _summary(out)
    assert records["sample"]["status"] == "interrupted" and records["shifted"]["status"] == "queued"
    assert not (out / "sample_mask.nii.gz").exists()
    # A worker that finished writing after the Ctrl-C (or was cut short mid-write) must not block the rerun.
    (out / "sample_mask.nii.gz").write_bytes(b"written by a worker after the Ctrl-C")
    (out / ".sample_mask.nii.gz.sparseseg-tmp-0123abcd").write_bytes(b"half")
    r = subprocess.run([*argv, "--fine-tune-seconds", "1", "-q"], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    _, records = _summary(out)
    assert {records[n]["status"] for n in ("sample", "shifted")} == {"done"}
    assert (out / "sample_mask.nii.gz").stat().st_size > 100
    assert not list(tmp_path.glob("ran-*"))
