"""Speed and memory on the CPU (and GPU when present), as ratios against baselines run here.

1. Time to first prediction on a 128^3 crop of the real CT (strokes on 3 slices per axis):
   the forest's early mask (shown while the network trains), then one training round of
   --first-budget seconds + whole-volume prediction; then one
   warm-started correction round. Baseline: the ilastik-style random forest on the same
   strokes (features + fit + predict).
2. Inference on a 512 x 512 x 300 CT (the real abdominal CT resampled, a model trained on it):
   wall time, peak RSS and the Dice between masks of this package's prediction (the streamed
   sliding window, the default, in bfloat16 where the CPU has it and in float32; large tiles with
   a halo; and with the CRF),
   each in a fresh process, against MONAI's sliding_window_inference over the whole volume
   at once (the naive way).

    python benchmarks/speed.py [--device cpu|cuda] [--first-budget 20] [--skip-large]

Prints a table and writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LARGE = (300, 512, 512)


def _crop128():
    from benchmarks.cases import load_case

    image, geom, ref, names = load_case("ct_abdomen")
    out_i = np.full((128, 128, 128), -1024, image.dtype)
    out_r = np.zeros((128, 128, 128), np.uint8)
    sl = tuple(slice(0, min(128, s)) for s in image.shape)
    out_i[sl], out_r[sl] = image[sl], ref[sl]
    return out_i, out_r, geom.spacing, names


def first_prediction(device: str, budget: float) -> dict:
    from benchmarks.baseline_rf import rf_segment
    from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.inference.predict import predict_volume
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.metrics import mean_dice
    from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles

    image, ref, spacing, names = _crop128()
    scrib = simulate_scribbles(ref, 3, seed=0)
    t0 = time.perf_counter()
    early = {}

    def seen(p):  # the forest's mask, shown while the network trains (the widget's first round)
        if p.preview is not None and not early:
            early.update(s=time.perf_counter() - t0, dice=mean_dice(p.preview, ref))

    res = run_to_end(Trainer(image, scrib, TrainConfig(time_budget=budget, max_steps=None, device=device), spacing=spacing,
                             class_names=names, preview=True).run(), seen)
    t1 = time.perf_counter()
    pred = predict_volume(res.model, image, PredictConfig(device=device))
    t2 = time.perf_counter()
    corr = simulate_corrections(pred.labels, ref, 3, seed=1)
    res2 = run_to_end(Trainer(image, scrib, TrainConfig(time_budget=budget, max_steps=None, device=device), corrections=corr, init=res.model, spacing=spacing).run())
    pred2 = predict_volume(res2.model, image, PredictConfig(device=device))
    t3 = time.perf_counter()
    rf = rf_segment(image, scrib)
    t4 = time.perf_counter()
    return {
        "shape": list(image.shape), "train_s": t1 - t0, "train_steps": res.steps, "predict_s": t2 - t1,
        "first_prediction_s": t2 - t0, "preview_s": early.get("s"), "preview_dice": early.get("dice"), "second_round_s": t3 - t2, "second_round_steps": res2.steps,
        "dice_round1": mean_dice(pred.labels, ref), "dice_round2": mean_dice(pred2.labels, ref),
        "rf_baseline_s": t4 - t3, "rf_dice": mean_dice(rf, ref),
    }


_CHILD = r"""
import json, sys, time, numpy as np, torch
sys.path.insert(0, {repo!r})
from napari_sparseseg.core.model.checkpoint import load_model
from napari_sparseseg.core.base.device import resolve_device
mode, device, tmp = {mode!r}, resolve_device({device!r}), {tmp!r}
image = np.load(tmp + "/image.npy")
spacing = tuple(json.load(open(tmp + "/spacing.json")))
model = load_model(tmp + "/model", device=device)
model.network.eval()
# VmHWM, not getrusage: ru_maxrss survives execve, so a child would report its parent's peak.
base = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
t = time.perf_counter()
if mode == "naive":
    from monai.inferers import sliding_window_inference
    x = torch.from_numpy(model.normalization.apply(image))[None]
    with torch.inference_mode():
        p = sliding_window_inference(x, tuple(model.patch_size), 2, lambda z: model.network(z).softmax(1), overlap=0.25,
                                     mode="gaussian", padding_mode="replicate", sw_device=device, device="cpu")
    windows_s = time.perf_counter() - t  # before the argmax over the classes (torch's, as MONAI's AsDiscrete)
    labels = p[0].argmax(0).numpy().astype(np.uint8)
else:
    from napari_sparseseg.core.base.config import PredictConfig
    from napari_sparseseg.core.inference.predict import predict_volume
    windows_s = None
    inferer = "tiles" if mode.startswith("tiles") else "sliding_window"
    cfg = PredictConfig(device=str(device), uncertainty=True, inferer=inferer, refine=mode == "with_crf",
                        precision="float32" if mode.endswith("float32") else "auto", working_voxels=0)
    labels = predict_volume(model, image, cfg, spacing=spacing).labels
if device.type == "cuda":
    torch.cuda.synchronize()
dt = time.perf_counter() - t
peak = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
np.save(tmp + "/labels_" + mode + ".npy", labels)
print(json.dumps({{"seconds": dt, "windows_seconds": windows_s, "peak_rss_gib": peak / 2**20, "rss_before_gib": base / 2**20,
                   "image_gib": image.nbytes / 2**30}}))
"""


def large_case(tmp: Path, device: str, train_seconds: float = 45.0) -> dict:
    """The real abdominal CT resampled to 300 x 512 x 512 (linear; reference nearest) and a model trained on it.

    The model is the default CPU network trained ``train_seconds`` on strokes on 3 slices per axis
    of the big volume (no forest: the comparison is the network's inference).
    """
    from scipy import ndimage as ndi

    from benchmarks.cases import load_case
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
    from napari_sparseseg.io.models import save_model

    image, geom, ref, names = load_case("ct_abdomen")
    zoom = [b / n for b, n in zip(LARGE, image.shape, strict=True)]
    big = ndi.zoom(image.astype(np.float32), zoom, order=1).astype(np.int16)
    big_ref = ndi.zoom(ref, zoom, order=0)
    spacing = tuple(s / z for s, z in zip(geom.spacing, zoom, strict=True))
    np.save(tmp / "image.npy", big)
    (tmp / "spacing.json").write_text(json.dumps(list(spacing)))
    cfg = TrainConfig(time_budget=train_seconds, max_steps=None, device=device, forest=False,
                      working_voxels=0)  # the scan's own voxels: what this compares with MONAI's whole-volume window
    res = run_to_end(Trainer(big, simulate_scribbles(big_ref, 3, seed=0), cfg, spacing=spacing, class_names=names).run())
    save_model(res.model, tmp / "model")
    return {"shape": list(big.shape), "spacing_mm": [round(s, 3) for s in spacing], "train_steps": res.steps,
            "patch": list(res.model.patch_size)}


def refine_large(seconds_budget: float = 0) -> dict:
    """Boundary refinement at 512x512x300: a model trained on the real CT (300 steps), its
    probabilities and input channels resampled to 300x512x512 (so outlines are as smooth as a
    real scan's), refined slab by slab as ``predict`` does. Reports the time per megavoxel and
    the share of voxels in the CRF's band."""
    import torch

    from benchmarks.cases import load_case
    from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.inference.predict import predict_volume
    from napari_sparseseg.core.inference.refine import band, mean_field, stencil
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, geom, ref, names = load_case("ct_abdomen")
    res = run_to_end(Trainer(image, simulate_scribbles(ref, 3, seed=0), TrainConfig(max_steps=300, time_budget=None),
                             spacing=geom.spacing, class_names=names).run())
    pred = predict_volume(res.model, image, PredictConfig(device="cpu", probabilities=True, uncertainty=False, refine=False))
    big = LARGE
    spacing = tuple(s * n / b for s, n, b in zip(geom.spacing, image.shape, big, strict=True))
    cfg = PredictConfig()
    reach = max(abs(o[0]) for o in stencil(spacing, cfg.refine_radius_mm)) * cfg.refine_iterations
    slab = max(1, cfg.slab_voxels // (big[1] * big[2]))
    p_small = torch.from_numpy(pred.probabilities.astype(np.float32) / 255.0)[None]
    x_small = torch.from_numpy(res.model.normalization.apply(image))[None]
    total, in_band, seconds = 0, 0, 0.0
    for start in range(0, big[0], slab):
        lo, hi = max(0, start - reach), min(big[0], start + slab + reach)
        # Resample this slab (plus its margin) from the small volume: z-range lo:hi of the big grid.
        z = torch.linspace(0, image.shape[0] - 1, big[0])[lo:hi]
        zi = torch.clamp(z.round().long(), 0, image.shape[0] - 1)
        size = (hi - lo, big[1], big[2])
        p = torch.nn.functional.interpolate(p_small[:, :, zi], size=size, mode="trilinear", align_corners=True)[0]
        p = p / p.sum(0).clamp_min(1e-6)
        x = torch.nn.functional.interpolate(x_small[:, :, zi], size=size, mode="trilinear", align_corners=True)[0]
        t = time.perf_counter()
        mean_field(p, x, spacing, res.model.intensity_scale, None, weight=cfg.refine_weight,
                   iterations=cfg.refine_iterations, radius_mm=cfg.refine_radius_mm)
        seconds += time.perf_counter() - t
        in_band += int(band(p, stencil(spacing, cfg.refine_radius_mm)).sum())
        total += p[0].numel()
    return {"shape": list(big), "spacing_mm": [round(s, 3) for s in spacing], "seconds": seconds,
            "band_fraction": in_band / total, "offsets": len(stencil(spacing, cfg.refine_radius_mm)),
            "voxels_refined_incl_margins": total}


def large_inference(device: str, mode: str, tmp: Path) -> dict:
    code = _CHILD.format(repo=str(Path(__file__).resolve().parents[1]), mode=mode, device=device, tmp=str(tmp))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    classes = [c for c in np.union1d(np.unique(a), np.unique(b)) if c > 0]
    d = [2 * np.logical_and(a == c, b == c).sum() / max(1, (a == c).sum() + (b == c).sum()) for c in classes]
    return float(np.mean(d)) if d else 1.0


def large(device: str, with_crf: bool = False) -> dict:
    """Each mode in a fresh process, one after the other, on the same volume and model; ratios against ``naive``.

    ``with_crf`` adds the default prediction with the CRF (many minutes at this size on 2 cores).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparseseg-speed-") as tmp:
        tmp = Path(tmp)
        out = {"case": large_case(tmp, device)}
        modes = ("sliding_window", "sliding_window_float32", "tiles") + (("with_crf",) if with_crf else ())
        for mode in ("naive", *modes):
            out[mode] = large_inference(device, mode, tmp)
        naive = np.load(tmp / "labels_naive.npy")
        for mode in modes:
            if "error" in out[mode] or "error" in out["naive"]:
                continue
            out[mode]["time_ratio"] = out[mode]["seconds"] / out["naive"]["seconds"]
            out[mode]["memory_ratio"] = out[mode]["peak_rss_gib"] / out["naive"]["peak_rss_gib"]
            out[mode]["dice_vs_naive"] = _mask_dice(np.load(tmp / f"labels_{mode}.npy"), naive)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--first-budget", type=float, default=20.0, help="training seconds before the first prediction")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--large-only", action="store_true", help="only the 512x512x300 inference part")
    ap.add_argument("--with-crf", action="store_true", help="also time the default prediction with the CRF at 512x512x300")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.json"))
    args = ap.parse_args(argv)
    import torch

    from napari_sparseseg.core.base.device import bfloat16_native

    info = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "bfloat16_native": bfloat16_native(torch.device(args.device))}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(info), flush=True)
    fp = None if args.large_only else first_prediction(args.device, args.first_budget)
    info["first_prediction"] = fp
    if fp:
        if fp["preview_s"] is not None:
            print(f"128^3 CT crop: early mask (the forest's, while training goes on) after {fp['preview_s']:.1f}s, "
                  f"Dice {fp['preview_dice']:.3f}", flush=True)
        print(f"128^3 CT crop: first prediction {fp['first_prediction_s']:.1f}s (train {fp['train_s']:.1f}s/{fp['train_steps']} steps + predict {fp['predict_s']:.1f}s), "
          f"Dice {fp['dice_round1']:.3f}; correction round {fp['second_round_s']:.1f}s, Dice {fp['dice_round2']:.3f}; "
          f"RF baseline {fp['rf_baseline_s']:.1f}s, Dice {fp['rf_dice']:.3f}; ratio first prediction / RF = {fp['first_prediction_s'] / fp['rf_baseline_s']:.2f}", flush=True)
    if not args.skip_large:
        info["large"] = lg = large(args.device, args.with_crf)
        naive = lg["naive"]
        print(f"512x512x300 CT ({lg['case']['train_steps']} training steps, patch {lg['case']['patch']}): MONAI sliding "
              f"window over the whole volume {naive.get('seconds', float('nan')):.1f}s, peak RSS "
              f"{naive.get('peak_rss_gib', float('nan')):.2f} GiB", flush=True)
        if naive.get("windows_seconds"):
            print(f"  of which the windows {naive['windows_seconds']:.1f}s, torch's argmax over the classes "
                  f"{naive['seconds'] - naive['windows_seconds']:.1f}s", flush=True)
        for mode, what in (("sliding_window", "streamed sliding window (the default; network only, precision auto)"),
                           ("sliding_window_float32", "streamed sliding window in float32"),
                           ("tiles", "tiles with a halo (network only; inferer 'tiles', precision auto)"),
                           ("with_crf", "the default prediction with the CRF")):
            m = lg.get(mode)
            if m is None:
                continue
            if "error" in m:
                print(f"  {what}: error {m['error']}", flush=True)
                continue
            print(f"  {what}: {m['seconds']:.1f}s, peak RSS {m['peak_rss_gib']:.2f} GiB; ratios time "
                  f"{m['time_ratio']:.2f}, memory {m['memory_ratio']:.2f}; Dice to the whole-volume mask "
                  f"{m['dice_vs_naive']:.4f}", flush=True)
        if not args.large_only:
            info["refine_large"] = rl = refine_large()
            print(f"512x512x300 boundary refinement: {rl['seconds']:.1f}s ({rl['band_fraction']:.1%} of the voxels in "
                  f"the band, {rl['offsets']} neighbours each)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
