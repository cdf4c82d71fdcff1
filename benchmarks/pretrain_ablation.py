"""Self-supervised pretraining (core/training/pretrain.py): does the first round gain from it?

Fixed step counts (not seconds), so the figures do not depend on the machine's speed: each seed
pretrains ``--pretrain-steps`` on the scan (inpainting), then round 0 trains ``--steps`` on
simulated strokes (k slices per axis) four ways: from scratch, from the whole pretrained
network (class head fresh), the same with the class head's last convolution zero-initialised
(so it starts at the background prior, like a fresh network), and from its encoder only
(decoder and head fresh). The mask is scored with the default prediction (region filter and
refinement on).

    python benchmarks/pretrain_ablation.py --cases sample_ct_crop mr_abdomen mr_brain_tumour \\
        --seeds 0 1 --k 1 3 --pretrain-steps 1000 --steps 600

Prints one JSON line per (case, seed, k) and a summary of the differences against scratch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import napari_sparseseg.core.training.pretrain as pretrain_module  # noqa: E402
from benchmarks.cases import CASES, load_case  # noqa: E402
from napari_sparseseg.core.base.config import PredictConfig, PretrainConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.base.progress import run_to_end  # noqa: E402
from napari_sparseseg.core.inference.predict import predict_volume  # noqa: E402
from napari_sparseseg.core.training.pretrain import Pretrainer  # noqa: E402
from napari_sparseseg.core.training.train import Trainer  # noqa: E402
from napari_sparseseg.evaluation.metrics import dice_per_class  # noqa: E402
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles  # noqa: E402

# MONAI UNet nests Sequential(down, SkipConnection(submodule), up): the up path is index 2.
DECODER = re.compile(r"(^model|submodule)\.2\.")


def _zero_head_transfer(pretrained, network, config):
    """``core.pretrain.transfer``, then the last convolution's weights set to zero."""
    import torch

    copied = _TRANSFER(pretrained, network, config)
    convs = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        convs[-1].weight.zero_()
    return copied


_TRANSFER = pretrain_module.transfer
VARIANTS = ("full", "full0", "enc")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--k", nargs="+", type=int, default=[1, 3])
    ap.add_argument("--pretrain-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=600, help="round-0 training steps")
    ap.add_argument("--task", default="inpaint")
    args = ap.parse_args(argv)
    rows = []
    for name in args.cases:
        image, geom, ref, names = load_case(name)
        classes = list(range(1, len(names)))
        for seed in args.seeds:
            t = time.perf_counter()
            pcfg = PretrainConfig(seconds=None, max_steps=args.pretrain_steps, task=args.task, seed=seed, device="cpu")
            pre = run_to_end(Pretrainer(image, pcfg, spacing=geom.spacing).run())
            enc = dataclasses.replace(pre, state={k: v for k, v in pre.state.items() if not DECODER.search(k)})
            print(f"# {name} seed {seed}: pretrained {pre.steps} steps in {time.perf_counter() - t:.0f}s", flush=True)
            for k in args.k:
                scribbles = simulate_scribbles(ref, k, seed=seed)
                row = {"case": name, "seed": seed, "k": k}
                for variant, state in (("scratch", None), ("full", pre), ("full0", pre), ("enc", enc)):
                    cfg = TrainConfig(max_steps=args.steps, time_budget=None, seed=seed, device="cpu")
                    pretrain_module.transfer = _zero_head_transfer if variant == "full0" else _TRANSFER
                    try:
                        res = run_to_end(Trainer(image, scribbles, cfg, spacing=geom.spacing, class_names=names,
                                                 pretrained=state).run())
                    finally:
                        pretrain_module.transfer = _TRANSFER
                    pred = predict_volume(res.model, image, PredictConfig(device="cpu", uncertainty=False), scribbles,
                                          geom.spacing).labels
                    row[variant] = round(float(np.mean(list(dice_per_class(pred, ref, classes).values()))), 4)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\nmean Dice difference against scratch (min / mean / max):")
    for k in args.k:
        for variant in VARIANTS:
            d = np.array([r[variant] - r["scratch"] for r in rows if r["k"] == k])
            print(f"  k={k} {variant:<5} {d.min():+.3f} / {d.mean():+.3f} / {d.max():+.3f}  ({len(d)} runs)")


if __name__ == "__main__":
    main()
