"""Training steps per second with the network in the default layout and plain Adam, and as a round trains now.

    .venv/bin/python benchmarks/train_layout.py [--cases sample_ct_crop mr_brain_tumour ct_abdomen]
                                                [--steps 60] [--repeats 3] [--json OUT]

Measured (``benchmarks/results/train_layout.json``) when a round trained the network in the
device's layout (channels-last 3-D on the CPU, ``core/base/device.py``, ``memory_format``) with
Adam fused into one kernel (``adam``). Training is back in the default layout (its sums depend
on the thread count: a remote round no longer matched the local one), so "now" differs from
"before" by the fused Adam alone. The
baseline is the same round with the default (contiguous) layout and Adam one tensor at a time,
as rounds trained before. Each case trains rounds of ``--steps`` steps from the same strokes, the
two versions alternating, ``--repeats`` times; the rate is timed from step 10 on and the median of
the repeats is reported with the ratio now / before (the same figure as
``benchmarks/train_precision.py``, whose ``rate`` this uses).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.cases import CASES, load_case  # noqa: E402
from benchmarks.train_precision import rate  # noqa: E402
from napari_sparseseg.core.model.forest import FeatureCache  # noqa: E402
from napari_sparseseg.core.training import train as train_module  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402


@contextlib.contextmanager
def as_before():
    """Train in the default layout with per-tensor Adam (the version before), inside the block."""
    import torch

    saved = train_module.adam
    train_module.adam = lambda parameters, device, **kwargs: torch.optim.Adam(parameters, **kwargs)
    try:
        yield
    finally:
        train_module.adam = saved


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["sample_ct_crop", "mr_brain_tumour", "ct_abdomen"], choices=list(CASES))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    out = {"threads": torch.get_num_threads(), "steps": args.steps, "repeats": args.repeats, "cases": {}}
    for case in args.cases:
        image, geom, ref, names = load_case(case)
        features = FeatureCache()
        features.prepare(image, geom.spacing)
        scribbles = simulate_scribbles(ref, 3, seed=0)
        rates = {"before": [], "now": []}
        for _ in range(args.repeats):
            with as_before():
                rates["before"].append(rate(image, geom.spacing, scribbles, names, features, "auto", args.steps))
            rates["now"].append(rate(image, geom.spacing, scribbles, names, features, "auto", args.steps))
        b, n = statistics.median(rates["before"]), statistics.median(rates["now"])
        out["cases"][case] = {"before_steps_per_s": round(b, 2), "now_steps_per_s": round(n, 2), "ratio": round(n / b, 3),
                              "runs": {k: [round(r, 2) for r in v] for k, v in rates.items()}}
        print(f"{case}: before {b:.2f} steps/s, now {n:.2f} steps/s, ratio {n / b:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
