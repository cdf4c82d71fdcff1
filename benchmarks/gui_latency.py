"""GUI responsiveness while training: event-loop latency and training throughput in the widget.

    xvfb-run -a .venv/bin/python benchmarks/gui_latency.py [--seconds 20] [--case ct_abdomen] [--json PATH]

A QTimer fires every 10 ms on the GUI thread while the widget trains on the sample CT in a
shown viewer; its lateness (actual interval - 10 ms) is the event-loop latency a user feels
(target: <= 100 ms). Training throughput (steps/s) in the widget's worker is compared with the
headless core Trainer on the same data, measured in the same run (ratio, not absolute time).

With ``--pretrain SECONDS`` the widget first pretrains on the scan in the background (the
"Learn the scan while I paint" box) for that long while the timer runs ("pretrain" phase),
then Train interrupts it. The time from Train to the first mask on screen (the forest's early
mask, ``preview_s``) and to the round's prediction are reported too.

``--case NAME`` runs on a scan of ``benchmarks/cases.py`` instead of the bundled sample, with
simulated strokes on 3 slices per axis; the viewer opens the scan file and the strokes as the
user would, and Train is pressed once the scan's head start (features, libraries) has finished,
as after a few seconds of painting.

With ``--stalls MS`` a watchdog thread samples the GUI thread's Python stack (and every other
thread's innermost frames) whenever the 10 ms timer has not fired for MS milliseconds, and the
report lists each stall with the stacks seen during it: what held the event loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_gib() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) / 2**20


def headless(seconds: float, image_path: str, scribbles_path: str, names: str) -> None:
    """The round's training headless, as the user's files give it (the baseline); prints JSON."""
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer, preload
    from napari_sparseseg.io import read_image, read_labels

    image, geom = read_image(image_path)
    scribbles, _ = read_labels(scribbles_path, like=geom)
    preload()  # as the widget does while the user paints
    cfg = TrainConfig(time_budget=seconds, max_steps=None, device="cpu", seed=0)
    res = run_to_end(Trainer(image, scribbles, cfg, spacing=geom.spacing, class_names=names.split(",")).run())
    print(json.dumps({"steps": res.steps, "elapsed": res.elapsed, "peak_rss_gib": round(_peak_rss_gib(), 2)}))


def _frames(frame, depth: int) -> list[str]:
    return [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)[-depth:]]


def _watch(beat, phase, late_s: float, stalls: list, watching: threading.Event) -> None:
    """Sample the GUI thread's stack every 20 ms while the event loop is ``late_s`` late."""
    main = threading.main_thread().ident
    names = {}
    current = None
    while watching.is_set():
        time.sleep(0.02)
        since = time.monotonic() - beat[0]
        if since < late_s:
            if current is not None:
                current["ms"] = round((beat[0] - current.pop("_last")) * 1000)  # the late interval
                del current["_t0"]
                stalls.append(current)
                current = None
            continue
        frames = sys._current_frames()
        if current is None:
            current = {"phase": phase[0], "_t0": time.monotonic(), "_last": beat[0], "gui": [], "others": {}}
        gui = _frames(frames[main], 14) if main in frames else []
        if not current["gui"] or current["gui"][-1]["stack"] != gui:
            current["gui"].append({"at_ms": round((time.monotonic() - current["_t0"]) * 1000), "stack": gui})
        names.update({t.ident: t.name for t in threading.enumerate()})
        for ident, frame in frames.items():
            if ident != main:
                top = " < ".join(reversed(_frames(frame, 3)))
                key = names.get(ident, str(ident))
                current["others"].setdefault(key, {}).setdefault(top, 0)
                current["others"][key][top] += 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="training time budget of each run")
    ap.add_argument("--headless", nargs=4, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    ap.add_argument("--case", default=None, help="a benchmarks/cases.py scan instead of the bundled sample")
    ap.add_argument("--stalls", type=float, default=None, metavar="MS",
                    help="sample the GUI thread's stack whenever the event loop is this late (default: off)")
    ap.add_argument("--pretrain", type=float, default=None, metavar="SECONDS",
                    help="pretrain in the background this long before Train (default: no pretraining phase)")
    args = ap.parse_args(argv)
    if args.headless:
        seconds, *rest = args.headless
        return headless(float(seconds), *rest)
    os.environ.setdefault("SPARSESEG_AUTOSAVE_DIR", tempfile.mkdtemp(prefix="sparseseg-autosave-"))

    import napari
    from qtpy.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.io.sample import load_sample

    s = load_sample()
    if args.case:
        sys.path.insert(0, str(REPO))
        from benchmarks.cases import case_image_path, load_case
        from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
        from napari_sparseseg.io import write_labels

        image, geom, ref, names = load_case(args.case)
        folder = Path(tempfile.mkdtemp(prefix="sparseseg-latency-"))
        scribbles = simulate_scribbles(ref, 3, seed=0)
        write_labels(folder / "scribbles.nii.gz", scribbles, geom)
        s = {"image": image, "scribbles": scribbles, "geometry": geom, "class_names": names,
             "image_path": case_image_path(args.case), "scribbles_path": folder / "scribbles.nii.gz"}
    else:
        s["image_path"], s["scribbles_path"] = s["path"] / "image.nii.gz", s["path"] / "scribbles.nii.gz"
    # Baseline: the same round headless, in a child process run just before the viewer opens (so
    # the napari process's peak memory is its own).
    base = json.loads(subprocess.run(
        [sys.executable, __file__, "--headless", str(args.seconds), str(s["image_path"]), str(s["scribbles_path"]),
         ",".join(s["class_names"])], check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    base_rate = base["steps"] / base["elapsed"]

    viewer = napari.Viewer(show=True)
    viewer.open(str(s["image_path"]), plugin="napari-sparseseg")
    viewer.open(str(s["scribbles_path"]), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), device="cpu", time_budget=args.seconds))

    clock = QElapsedTimer()
    clock.start()
    phase = ["idle"]
    ticks: dict[str, list] = {"idle": [], "pretrain": [], "train": [], "predict": [], "show": []}
    last = [0]

    beat = [time.monotonic()]

    def tick():
        now = clock.elapsed()
        if last[0]:
            ticks[phase[0]].append(now - last[0] - 10)
        last[0] = now
        beat[0] = time.monotonic()

    stalls: list[dict] = []
    watching = threading.Event()
    if args.stalls:
        watching.set()
        threading.Thread(target=_watch, args=(beat, phase, args.stalls / 1000, stalls, watching), daemon=True).start()

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(tick)

    def run_loop(until):
        # A real Qt event loop (as in napari), left when ``until()`` holds.
        loop = QEventLoop()
        check = QTimer()
        check.timeout.connect(lambda: loop.quit() if until() else None)
        check.start(50)
        loop.exec()
        check.stop()

    timer.start()
    t0 = time.time()
    # Idle reference: same viewer, nothing running but the scan's head start (at least 3 s).
    run_loop(lambda: time.time() - t0 > 3 and not widget.feature_pass.busy)
    pretrained_steps = None
    if args.pretrain:
        phase[0] = "pretrain"
        widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), pretrain_seconds=args.pretrain + 60))
        widget.settings.pretrain.setChecked(True)  # as the user ticks the box
        if not widget.pretrainer.busy:
            raise SystemExit("pretraining did not start when its box was ticked")
        steps = []
        widget.pretrainer.progress.connect(lambda p: steps.append(p.step))
        t1 = time.time()
        run_loop(lambda: time.time() - t1 > args.pretrain)
        pretrained_steps = steps[-1] if steps else None
    phase[0] = "train"
    shown = {}
    widget.runner.preview.connect(lambda labels: shown.setdefault("preview_s", clock.elapsed() / 1000 - shown["train"]))
    widget.runner.round_finished.connect(lambda r: shown.setdefault("prediction_s", clock.elapsed() / 1000 - shown["train"]))
    shown["train"] = clock.elapsed() / 1000
    # Phases as the runner reports them: training steps, prediction, then showing the result
    # (adding the prediction/uncertainty layers on the GUI thread).
    widget.runner.progress.connect(lambda p: phase.__setitem__(0, "predict") if p.stage == "predict" else None)
    widget.runner.round_finished.connect(lambda r: phase.__setitem__(0, "show"))
    widget.train()  # with pretraining running, the round starts once it has stopped (within a step)
    widget.runner.progress.connect(lambda p: shown.setdefault("predict_start_s", clock.elapsed() / 1000 - shown["train"])
                                   if p.stage == "predict" else None)
    run_loop(lambda: "prediction_s" in shown and not widget.runner.busy)
    t2 = time.time()
    run_loop(lambda: time.time() - t2 > 2)  # the layers arrive: their repaints count as "show"
    timer.stop()
    watching.clear()
    h = widget.session.history[-1]
    gui_rate = h["steps"] / h["seconds"]
    def stats(v):
        v = np.asarray(v, float)
        if not v.size:
            return {}
        return {"median": round(float(np.median(v)), 1), "p99": round(float(np.percentile(v, 99)), 1),
                "max": round(float(v.max()), 1), "ticks": int(v.size)}

    out = {
        "event_loop_lateness_ms": {k: stats(v) for k, v in ticks.items()},
        "steps_per_s": {"headless": round(base_rate, 3), "widget": round(gui_rate, 3), "ratio": round(gui_rate / base_rate, 3)},
        "after_train_s": {k: round(v, 2) for k, v in shown.items() if k != "train"},
        "pretraining": None if not args.pretrain else {"seconds": args.pretrain, "steps": pretrained_steps},
        "stopped_by": h.get("stopped_by"),
        "peak_rss_gib": {"napari": round(_peak_rss_gib(), 2), "headless": base["peak_rss_gib"]},
        "scan_voxels": int(np.prod(s["image"].shape)),
    }
    if args.stalls:
        out["stalls"] = stalls
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    run_loop(lambda: not widget.autosaver.busy)  # the round's autosave (a clinical CT's takes seconds)
    viewer.close()


if __name__ == "__main__":
    main()
