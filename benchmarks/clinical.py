"""A clinical-size CT through ``sparseseg segment``: wall time per stage, peak memory, Dice.

    .venv/bin/python benchmarks/clinical.py [--budget 60] [--working-voxels N] [--json PATH]

The scan is ``ct_abdomen_clinical`` of ``benchmarks/cases.py``: the abdominal CT resampled to
1 x 0.7 x 0.7 mm (336 x 433 x 523, 76 million voxels), built once and kept in the benchmarks'
cache. Strokes: the simulated annotator on 3 slices per axis (seed 0). The command runs as a
user runs it (a child process, with the suggestions asked for); each line it prints is stamped
on arrival, so the stages are: load (start to the first line), features (the forest's, read
from or written to the disk cache), training (the network's budget and its setup), prediction
(network, forest and CRF on the working grid, then the mask on every voxel), writing, and
suggestions. Peak memory is the child's maximum resident set. ``--working-voxels 0`` runs the
scan on its own voxels (the behaviour before the working grid: expect tens of minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cases import case_image_path, load_case  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="the round's time budget (the CLI's default)")
    ap.add_argument("--working-voxels", type=int, default=None, help="passed to the command (default: its own)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
    from napari_sparseseg.io import read_labels, write_labels

    image, geom, ref, names = load_case("ct_abdomen_clinical")
    folder = Path(tempfile.mkdtemp(prefix="sparseseg-clinical-"))
    strokes = simulate_scribbles(ref, 3, seed=0)
    write_labels(folder / "strokes.nii.gz", strokes, geom)
    del image
    cmd = [str(Path(sys.executable).with_name("sparseseg")), "segment", str(case_image_path("ct_abdomen_clinical")),
           str(folder / "strokes.nii.gz"), "-o", str(folder / "mask.nii.gz"), "--suggest", "3",
           "--time-budget", str(args.budget), "--class-names", ",".join(names)]
    if args.working_voxels is not None:
        cmd += ["--working-voxels", str(args.working_voxels)]
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    lines.append((time.perf_counter() - t0, part.strip()))
                    print(f"{lines[-1][0]:7.1f}  {part.strip()}", flush=True)
    if proc.returncode:
        raise SystemExit(f"sparseseg segment exited {proc.returncode}")
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB -> GiB

    def at(prefix):
        return next(t for t, text in lines if text.startswith(prefix))

    stamps = {"first_line": lines[0][0], "training_starts": at("training on"), "trained": at("trained"),
              "predicted": at("[predict]"), "mask_written": at("wrote mask"), "suggested": at("wrote 3 suggested") if any(
                  text.startswith("wrote 3 suggested") for _, text in lines) else None}
    stages = {
        "load_and_features_s": stamps["training_starts"],
        "training_s": stamps["trained"] - stamps["training_starts"],
        "prediction_s": stamps["predicted"] - stamps["trained"],
        "writing_s": stamps["mask_written"] - stamps["predicted"],
        "suggestions_s": None if stamps["suggested"] is None else stamps["suggested"] - stamps["mask_written"],
    }
    mask, _ = read_labels(folder / "mask.nii.gz", like=geom)
    dice = {}
    for c, name in enumerate(names[1:], start=1):
        a, b = mask == c, ref == c
        dice[name] = round(float(2 * np.sum(a & b) / max(1, a.sum() + b.sum())), 4)
    out = {"scan_shape": list(ref.shape), "spacing": list(geom.spacing), "budget_s": args.budget,
           "working_voxels": args.working_voxels, "total_s": round(total, 1),
           "stages_s": {k: None if v is None else round(v, 1) for k, v in stages.items()},
           "trained": next(text for _, text in lines if text.startswith("trained")),
           "peak_rss_gib": round(peak, 2), "dice": dice, "mean_dice": round(float(np.mean(list(dice.values()))), 4)}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
