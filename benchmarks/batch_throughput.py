"""Batch throughput and memory: seconds per scan and peak RSS per worker, 1 vs 2 local Dask workers.

Scans: copies of a 128^3 crop of the real abdominal CT and of the CT resampled to
512 x 512 x 300 (linear), written as NIfTI. The model: --train seconds on strokes on 3
slices per axis of the crop. Each configuration runs ``run_batch`` on a fresh LocalCluster
(1 worker with all cores as torch threads, or 2 workers with half each) in this run, so the
figures are ratios measured together. Peak RSS is each worker process's maximum resident set
(``VmHWM``) at the end of its batch.

    python benchmarks/batch_throughput.py --out benchmarks/results/batch_throughput.json
    python benchmarks/batch_throughput.py --small 0 --large 2 --no-refine --no-forest   # network only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_gib() -> float:
    """The process's peak resident set (VmHWM: ru_maxrss survives execve, so a spawned worker
    would report its parent's peak)."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) / 2**20


def build(tmp: Path, n_small: int, n_large: int, train_seconds: float) -> dict:
    from scipy import ndimage as ndi

    from benchmarks.cases import load_case
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
    from napari_sparseseg.io import Geometry, write_image
    from napari_sparseseg.io.models import save_model

    image, geom, ref, names = load_case("ct_abdomen")
    crop = np.full((128, 128, 128), -1024, np.int16)
    crop_ref = np.zeros((128, 128, 128), np.uint8)
    sl = tuple(slice(0, min(128, s)) for s in image.shape)
    crop[sl], crop_ref[sl] = image[sl], ref[sl]
    g = Geometry.from_spacing(crop.shape, geom.spacing)
    for d in ("small", "large"):
        (tmp / d).mkdir()
    for i in range(n_small):
        write_image(tmp / "small" / f"ct128_{i}.nii", crop, g)
    if n_large:
        zoom = [b / n for b, n in zip((300, 512, 512), image.shape, strict=True)]
        big = ndi.zoom(image.astype(np.float32), zoom, order=1).astype(np.int16)
        gb = Geometry.from_spacing(big.shape, tuple(s / z for s, z in zip(geom.spacing, zoom, strict=True)))
        for i in range(n_large):
            write_image(tmp / "large" / f"ct512_{i}.nii", big, gb)
    res = run_to_end(Trainer(crop, simulate_scribbles(crop_ref, 3, seed=0),
                             TrainConfig(time_budget=train_seconds, max_steps=None, device="cpu"), spacing=geom.spacing,
                             class_names=names).run())
    save_model(res.model, tmp / "model")
    return {"train_steps": res.steps, "forest": res.model.forest is not None}


def run(tmp: Path, kind: str, workers: int, refine: bool, forest: bool) -> dict:
    from distributed import Client, LocalCluster

    from napari_sparseseg.cohort.batch import plan_batch, run_batch
    from napari_sparseseg.core.base.config import BatchConfig
    from napari_sparseseg.io.cohort import expand_inputs

    cores = os.cpu_count() or 1
    cfg = BatchConfig(workers=workers, threads=max(1, cores // workers), device="cpu", refine=refine, forest=forest,
                      overwrite=True)
    out = tmp / f"out_{kind}_{workers}"
    plan = plan_batch(expand_inputs([tmp / kind]), tmp / "model", out, cfg)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster, set_as_default=False) as client:
        t = time.perf_counter()
        results = list(run_batch(plan, client=client))
        wall = time.perf_counter() - t
        peaks = client.run(_peak_rss_gib)
    failed = [(r.name, r.reason) for r in results if r.status != "done"]
    return {"scans": len(results), "workers": workers, "threads_per_worker": cfg.threads, "wall_s": wall,
            "s_per_scan": wall / len(results), "task_s": [r.seconds for r in results],
            "peak_rss_gib_per_worker": sorted(peaks.values()), "failed": failed}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=4, help="128^3 scans")
    ap.add_argument("--large", type=int, default=2, help="512x512x300 scans")
    ap.add_argument("--train", type=float, default=30.0)
    ap.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True, help="the CRF (default on)")
    ap.add_argument("--forest", action=argparse.BooleanOptionalAction, default=True,
                    help="fuse the model's forest (default on; at 512x512x300 its filters are computed per slab)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "batch_throughput.json"))
    args = ap.parse_args(argv)
    info = {"cores": os.cpu_count(), "refine": args.refine, "forest": args.forest}
    with tempfile.TemporaryDirectory(prefix="sparseseg-throughput-") as tmp:
        tmp = Path(tmp)
        info["model"] = build(tmp, args.small, args.large, args.train)
        for kind, n in (("small", args.small), ("large", args.large)):
            if not n:
                continue
            for workers in (1, 2):
                r = run(tmp, kind, workers, args.refine, args.forest)
                info[f"{kind}_{workers}"] = r
                print(f"{kind} ({n} scans), {workers} worker(s) x {r['threads_per_worker']} threads: "
                      f"{r['s_per_scan']:.1f} s/scan, peak RSS per worker {max(r['peak_rss_gib_per_worker']):.2f} GiB"
                      + (f", failed {r['failed']}" if r["failed"] else ""), flush=True)
            one, two = info[f"{kind}_1"]["s_per_scan"], info[f"{kind}_2"]["s_per_scan"]
            info[f"{kind}_scaling_efficiency"] = one / two / 2
            print(f"{kind}: speed-up with 2 workers {one / two:.2f}x, scaling efficiency {one / two / 2:.0%}", flush=True)
    Path(args.out).write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
