"""Remote rounds on a real Dask cluster on 127.0.0.1 (`dask scheduler` + `dask worker` processes, CPU only).

The same round remotely and locally (same seed, step bound) gives the same mask; progress and
the forest's preview arrive while it runs; the scan is sent once; Stop ends the remote round
within a step and keeps its model; a killed worker or a stopped scheduler is reported in one
line and the session keeps its strokes and its last model; TLS with a self-signed CA works and a
certificate from another CA is refused.
"""

import contextlib
import os
import signal
import threading

import numpy as np
import pytest

from napari_sparseseg.core.base.config import PredictConfig, RemoteConfig, TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.session.rounds import accept_round, run_round
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.remote.client import RemoteError, plain_warning
from napari_sparseseg.remote.rounds import RemoteRounds
from tests.conftest import make_phantom
from tests.remote.cluster import Cluster, make_certificates
from tests.remote.conftest import torch_threads

SLOW = 300.0  # the silence timeout of the tests: the machine may be busy with other jobs


def _session(model=None) -> Session:
    image, ref = make_phantom()
    scribbles = np.zeros(ref.shape, np.uint8)
    scribbles[20, ::2, ::2] = ref[20, ::2, ::2] + 1
    scribbles[::2, 15, ::2] = ref[::2, 15, ::2] + 1
    return Session(image, scribbles, ["background", "ball", "box"], spacing=(1.0, 1.0, 1.0), model=model)


def _remote(c: Cluster, notes=None, **kw) -> RemoteRounds:
    cfg = RemoteConfig(scheduler=c.address, connect_timeout=SLOW, silence_timeout=kw.pop("silence_timeout", SLOW), **kw)
    return RemoteRounds(cfg, note=(notes.append if notes is not None else None))


def _warm_up():
    """Run on a worker (``Client.run``): import what a round's task and the round itself import."""
    import napari_sparseseg.remote.worker  # noqa: F401 - unpacking a round's task imports it (and torch)
    from napari_sparseseg.core.training.train import preload

    preload()  # MONAI, scikit-learn


def _warm(remote: RemoteRounds) -> None:
    """The worker imports what a round needs before the round whose silence a test times.

    A fresh worker imports torch while it unpacks its first task, before the round's heartbeat
    starts: seconds without word from it that a short silence timeout would count.
    """
    remote.open().run(_warm_up)


def _configs(steps=4, seed=3):
    # float32: the worker's torch may use another thread count than this process, and in
    # bfloat16 sums in another order differ enough to move the uncertainty's float16 values.
    return (TrainConfig(max_steps=steps, time_budget=None, device="cpu", seed=seed, precision="float32"),
            PredictConfig(device="cpu", precision="float32"))


def test_a_remote_round_gives_the_local_mask_streams_progress_and_sends_the_scan_once(cluster):
    tcfg, pcfg = _configs()
    local = run_to_end(run_round(_session(), tcfg, pcfg, preview=True))
    seen, notes = [], []
    with _remote(cluster, notes) as remote:
        result = run_to_end(remote.run_round(_session(), tcfg, pcfg, preview=True), seen.append)
        assert np.array_equal(result.prediction.labels, local.prediction.labels)  # the same mask, voxel for voxel
        assert result.prediction.labels.dtype == np.uint8 and result.prediction.uncertainty.dtype == np.float16
        # The worker's torch may use another thread count than this process (below): channels-last
        # convolutions sum in another order, which moves a few float16 uncertainties by a unit in
        # their last place (1 against 2 threads here: 2 of 92,160 voxels, by 7.6e-6).
        moved = np.abs(result.prediction.uncertainty.astype(np.float32) - local.prediction.uncertainty)
        assert moved.max() <= 2e-3 and np.count_nonzero(moved) <= moved.size // 1000, (moved.max(), np.count_nonzero(moved))
        assert [s.to_dict() for s in result.suggestions] == [s.to_dict() for s in local.suggestions]
        # The worker's torch may use another thread count than this process: sums in another order
        # differ in the 7th digit (seen: 1.1663781 against 1.1663780 at step 4), not more.
        assert result.train.steps == local.train.steps == 4
        assert result.train.losses == pytest.approx(local.train.losses, rel=1e-5)
        for k, v in local.model.network.state_dict().items():
            assert np.allclose(result.model.network.state_dict()[k].numpy(), v.numpy(), rtol=1e-3, atol=1e-4), k
        # Progress arrived while it ran: training steps, the forest's preview, then the prediction's rows.
        stages = [p.stage for p in seen]
        assert "train" in stages and "predict" in stages and stages.index("train") < stages.index("predict")
        previews = [p.preview for p in seen if p.preview is not None]
        assert len(previews) == 1 and previews[0].shape == local.prediction.labels.shape
        assert any("sending the scan" in n for n in notes) and any(f"runs on {cluster.address.split(':')[0]}" in n or
                                                                    "runs on tcp://127.0.0.1" in n for n in notes)
        # The next round (warm start from the accepted model) reuses the scan on the worker.
        session = _session()
        accept_round(session, result)
        again = run_to_end(remote.run_round(session, *_configs(steps=2, seed=4)))
        assert remote.scans_sent == 1 and again.train.steps == 2
        assert again.model.history[-1]["round"] == 2  # it warm-started from the model it was sent


def test_stop_ends_the_remote_round_within_a_step_and_keeps_its_model(cluster):
    stop = threading.Event()
    tcfg = TrainConfig(max_steps=100_000, time_budget=3000, plateau=False, device="cpu", seed=1)
    with _remote(cluster) as remote:
        gen = remote.run_round(_session(), tcfg, PredictConfig(device="cpu"), stop)
        steps = []

        def watch(p):
            if p.stage == "train" and p.step >= 2 and not stop.is_set() and not steps:
                steps.append(p.step)
                stop.set()

        result = run_to_end(gen, watch)
    assert result.stopped == "training" and result.train.stopped_by == "cancelled"
    assert result.prediction is not None  # the prediction still ran, with the model so far
    assert steps and result.train.steps < 1000, result.train.steps  # not the whole bound
    assert result.model.history[-1]["stopped_by"] == "cancelled"


def test_a_cluster_without_a_gpu_worker_is_said_in_one_line(cluster):
    with _remote(cluster) as remote, pytest.raises(RemoteError, match="no GPU worker") as err:
        run_to_end(remote.run_round(_session(), TrainConfig(max_steps=2, time_budget=None, device="cuda"),
                                    PredictConfig(device="cuda")))
    assert "\n" not in err.value.one_line() and "--resources GPU=1" in err.value.message
    print("FAULT no GPU worker:", err.value.one_line())


def test_an_unreachable_scheduler_and_plain_tcp_are_said_in_one_line():
    remote = RemoteRounds(RemoteConfig(scheduler="tcp://127.0.0.1:9", connect_timeout=2))
    with pytest.raises(RemoteError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9") as err:
        run_to_end(remote.run_round(_session(), *_configs()))
    print("FAULT unreachable:", err.value.one_line())
    assert plain_warning("tcp://127.0.0.1:8786") is None and plain_warning("tls://10.0.0.5:8786") is None
    text = plain_warning("tcp://10.0.0.5:8786")
    assert text.startswith("warning:") and "unencrypted" in text and "\n" not in text
    with pytest.raises(RemoteError, match="give the CA certificate, certificate, key"):
        RemoteRounds(RemoteConfig(scheduler="tls://127.0.0.1:9")).open()


def test_a_killed_worker_is_reported_the_session_keeps_its_strokes_and_model_and_the_next_round_goes_on(tmp_path):
    c = Cluster(tmp_path, threads=torch_threads()).start(workers=1)
    try:
        session = _session()
        accept_round(session, run_to_end(run_round(session, *_configs(steps=2))))  # a last good model, made here
        model, weights = session.model, {k: v.clone() for k, v in session.model.network.state_dict().items()}
        strokes = session.scribbles.copy()
        tcfg = TrainConfig(max_steps=100_000, time_budget=3000, plateau=False, device="cpu", seed=2)
        victim = c.workers[0]
        with _remote(c) as remote:
            def kill(p):
                if p.stage == "train" and p.step >= 1 and victim.poll() is None:
                    os.kill(victim.pid, signal.SIGKILL)

            with pytest.raises(RemoteError) as err:
                run_to_end(remote.run_round(session, tcfg, PredictConfig(device="cpu")), kill)
            text = err.value.one_line()
            print("FAULT killed worker:", text)
            assert ("left the cluster" in text or "died" in text) and "strokes and the last model are kept" in text
            assert "\n" not in text
            assert session.model is model and np.array_equal(session.scribbles, strokes)
            for k, v in session.model.network.state_dict().items():
                assert np.array_equal(v.numpy(), weights[k].numpy()), k
            # A new worker (this one offers a "GPU" resource: rounds on the device auto go to it) takes over; the
            # scan is sent again, to it.
            c.add_worker(resources="GPU=1")
            remote.client.wait_for_workers(1, timeout=120)
            again = run_to_end(remote.run_round(session, TrainConfig(max_steps=2, time_budget=None, seed=5),
                                                PredictConfig()))
            assert again.train.steps == 2 and remote.scans_sent == 2
            assert remote.worker in remote._workers() and remote.device == "cpu"  # a GPU worker without CUDA: its CPU
    finally:
        c.stop()


def test_a_scheduler_that_goes_away_mid_round_is_reported(tmp_path):
    c = Cluster(tmp_path, threads=torch_threads()).start(workers=1)
    try:
        session = _session()
        tcfg = TrainConfig(max_steps=100_000, time_budget=3000, plateau=False, device="cpu", seed=2)
        # A short silence timeout bounds the wait when the client is left reconnecting to the lost scheduler.
        with _remote(c, silence_timeout=10) as remote:
            _warm(remote)

            def kill(p):
                if p.stage == "train" and c.scheduler.poll() is None:
                    c.scheduler.kill()

            with pytest.raises(RemoteError, match="Dask scheduler") as err:
                run_to_end(remote.run_round(session, tcfg, PredictConfig(device="cpu")), kill)
        assert "strokes and the last model are kept" in err.value.one_line() or "stopped answering" in err.value.message
        print("FAULT scheduler gone:", err.value.one_line())
        assert session.model is None and session.history == []
    finally:
        c.stop()


def test_a_worker_that_goes_silent_is_given_up_after_the_silence_timeout(tmp_path):
    """A stuck worker (or a network that carries nothing): stopped with SIGSTOP, it stays in the cluster but says nothing."""
    c = Cluster(tmp_path, threads=torch_threads()).start(workers=1)
    victim = c.workers[0]
    try:
        session = _session()
        tcfg = TrainConfig(max_steps=100_000, time_budget=3000, plateau=False, device="cpu", seed=2)
        # The worker reports every 2 s (remote/worker.py HEARTBEAT_S); warmed up, it is silent only once stopped.
        with _remote(c, silence_timeout=6) as remote:
            _warm(remote)

            def freeze(p):
                if p.stage == "train" and p.step >= 1 and not getattr(freeze, "done", False):
                    freeze.done = True
                    os.kill(victim.pid, signal.SIGSTOP)

            with pytest.raises(RemoteError, match="no word from the worker") as err:
                run_to_end(remote.run_round(session, tcfg, PredictConfig(device="cpu")), freeze)
        print("FAULT silent worker:", err.value.one_line())
        assert "for 6 s" in err.value.message and session.model is None
    finally:
        with contextlib.suppress(OSError):
            os.kill(victim.pid, signal.SIGCONT)
        c.stop()


def test_tls_with_a_self_signed_ca_works_and_another_ca_is_refused(tmp_path, capsys):
    good = make_certificates(tmp_path / "certs", "cluster")
    bad = make_certificates(tmp_path / "certs", "stranger")
    c = Cluster(tmp_path, tls=good, threads=torch_threads()).start(workers=1)
    try:
        assert c.address.startswith("tls://127.0.0.1:")
        with _remote(c, tls_ca=good["ca"], tls_cert=good["cert"], tls_key=good["key"]) as remote:
            result = run_to_end(remote.run_round(_session(), *_configs(steps=2)))
            assert result.train.steps == 2 and result.prediction is not None
        wrong = RemoteConfig(scheduler=c.address, tls_ca=bad["ca"], tls_cert=bad["cert"], tls_key=bad["key"],
                             connect_timeout=10)
        with pytest.raises(RemoteError) as err:
            RemoteRounds(wrong).open()
        assert "refused the TLS connection" in err.value.message, err.value.message
        assert "\n" not in err.value.one_line()
        print("FAULT another CA:", err.value.one_line())
        # The cluster's CA but a certificate it did not sign: the scheduler refuses this client.
        foreign = RemoteConfig(scheduler=c.address, tls_ca=good["ca"], tls_cert=bad["cert"], tls_key=bad["key"],
                               connect_timeout=10)
        with pytest.raises(RemoteError, match="refused the TLS connection"):
            RemoteRounds(foreign).open()
        plain = RemoteConfig(scheduler=c.address.replace("tls://", "tcp://"), connect_timeout=5)
        with pytest.raises(RemoteError):
            RemoteRounds(plain).open()
        _batch_over_tls(c, good, bad, tmp_path, capsys)
    finally:
        c.stop()


def _batch_over_tls(c: Cluster, good: dict, bad: dict, tmp_path, capsys) -> None:
    """`sparseseg batch --scheduler tls://... --tls-ca/--tls-cert/--tls-key`: a mask with the certificates, exit 2 without."""
    import nibabel as nib

    from napari_sparseseg.cli import main
    from napari_sparseseg.io import read_labels
    from napari_sparseseg.io.models import save_model
    from tests.conftest import tiny_model

    image, _ = make_phantom(shape=(24, 24, 24))
    ct = (image * 4 - 1000).astype(np.int16)  # Hounsfield-like, as the (CT) model expects: air, soft tissue, bone
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(nib.Nifti1Image(ct.transpose(2, 1, 0).copy(), np.eye(4)), str(scans / "ball.nii.gz"))
    save_model(tiny_model(), tmp_path / "model")
    base = ["batch", "--model", str(tmp_path / "model"), str(scans / "ball.nii.gz"), "--scheduler", c.address, "-q"]
    assert main([*base, "--out-dir", str(tmp_path / "out"), "--tls-ca", good["ca"], "--tls-cert", good["cert"],
                 "--tls-key", good["key"], "--connect-timeout", "60", "--no-refine"]) == 0
    assert read_labels(tmp_path / "out" / "ball_mask.nii.gz")[0].shape == (24, 24, 24)
    assert main([*base, "--out-dir", str(tmp_path / "refused"), "--tls-ca", bad["ca"], "--tls-cert", bad["cert"],
                 "--tls-key", bad["key"], "--connect-timeout", "10"]) == 2
    err = capsys.readouterr().err
    assert "refused the TLS connection" in err and "signed by the cluster's CA" in err, err
    assert not (tmp_path / "refused").exists()  # refused before any work: nothing written
