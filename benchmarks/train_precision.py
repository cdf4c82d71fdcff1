"""Training steps per second in float32 and in bfloat16 mixed precision, in one run.

    .venv/bin/python benchmarks/train_precision.py [--cases sample_ct_crop mr_brain_tumour ct_abdomen]
                                                   [--steps 50] [--repeats 2] [--json OUT]

Each case trains rounds of ``--steps`` steps from the same strokes (simulated annotator, 3 slices
per axis) with ``TrainConfig.precision`` float32 and auto, alternating, ``--repeats`` times; the
rate is timed from step 10 to the end (after the set-up and the first steps' one-off costs) and
the median of the repeats is reported with the ratio auto / float32. The Dice of the two
precisions is ``benchmarks/accuracy.py --precision``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.base.config import TrainConfig  # noqa: E402
from napari_sparseseg.core.base.device import bfloat16_native  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402

WARM = 10


def rate(image, spacing, scribbles, names, features, precision: str, steps: int) -> float:
    """Steps per second from step ``WARM`` to ``steps`` of one round."""
    cfg = TrainConfig(max_steps=steps, time_budget=None, plateau=False, seed=0, device="cpu", precision=precision)
    t_warm = None
    for p in Trainer(image, scribbles, cfg, spacing=spacing, class_names=names, features=features).run():
        if p.stage == "train" and p.step == WARM:
            t_warm = time.perf_counter()
    return (steps - WARM) / (time.perf_counter() - t_warm)


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["sample_ct_crop", "mr_brain_tumour", "ct_abdomen"], choices=list(CASES))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    native = bfloat16_native(torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16: {native}", flush=True)
    out = {"native_bfloat16": native, "threads": torch.get_num_threads(), "cases": {}}
    for case in args.cases:
        image, geom, ref, names = load_case(case)
        features = FeatureCache()
        features.prepare(image, geom.spacing)
        scribbles = simulate_scribbles(ref, 3, seed=0)
        rates = {"float32": [], "auto": []}
        for _ in range(args.repeats):
            for precision in rates:
                rates[precision].append(rate(image, geom.spacing, scribbles, names, features, precision, args.steps))
        f, a = statistics.median(rates["float32"]), statistics.median(rates["auto"])
        out["cases"][case] = {"float32_steps_per_s": round(f, 2), "auto_steps_per_s": round(a, 2), "ratio": round(a / f, 3)}
        print(f"{case}: float32 {f:.2f} steps/s, auto {a:.2f} steps/s, ratio {a / f:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
