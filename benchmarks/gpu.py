"""The GPU path measured: CUDA against the CPU in the same run, and the masks against float32 CPU ones.

On a machine with CUDA (skipped cleanly without; ``--smoke`` runs the same code on the CPU at
toy sizes, to check the script itself):

1. training steps per second at the "medium" and "large" network sizes with AMP (bfloat16
   autocast where the GPU has it, else float16 with a gradient scaler), on the bundled sample,
   against the same sizes on the CPU (fewer steps there);
2. a correction round (the widget's round: training warm-started from round 1, prediction,
   refinement, uncertainty, suggestions) on CUDA and on the CPU, from the same first model and
   the same simulated corrections;
3. inference on a 512 x 512 x 300 CT (the abdominal CT of ../shared/data, else the bundled sample,
   resampled) with one model: CUDA (precision auto: bfloat16) against the CPU in float32 (MONAI's
   numbers), and the Dice between the two masks per class (>= 0.99 asked);
4. with ``--scheduler ADDRESS`` (a Dask scheduler whose worker has the GPU: ``dask worker ADDRESS
   --resources GPU=1``), the correction round also as a remote round (napari_sparseseg.remote),
   timed from this computer, and its mask against the local CUDA one.

    python benchmarks/gpu.py [--steps 200] [--cpu-steps 20] [--scheduler tcp://HOST:8786] [--smoke]

Prints a table and writes benchmarks/results/gpu.json (``{"cuda": false}`` and a note without CUDA).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LARGE = (300, 512, 512)
SMOKE_LARGE = (24, 64, 64)


def _sample():
    from benchmarks.cases import load_case

    image, geom, ref, names = load_case("sample_ct_crop")
    return image, geom.spacing, ref, names


def _big_scan(shape):
    """The abdominal CT (or the sample) resampled to ``shape`` (linear; reference nearest)."""
    from scipy import ndimage as ndi

    from benchmarks.cases import load_case

    try:
        image, geom, ref, names = load_case("ct_abdomen")
        source = "ct_abdomen"
    except Exception:  # noqa: BLE001 - ../shared/data is not on every machine
        image, geom, ref, names = load_case("sample_ct_crop")
        source = "sample_ct_crop"
    zoom = [b / n for b, n in zip(shape, image.shape, strict=True)]
    big = ndi.zoom(image.astype(np.float32), zoom, order=1).astype(np.int16)
    big_ref = ndi.zoom(ref, zoom, order=0)
    spacing = tuple(s / z for s, z in zip(geom.spacing, zoom, strict=True))
    return big, big_ref, spacing, names, source


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def training_rate(device: str, size: str, steps: int) -> dict:
    """Steps per second of training (after the first step: setup and cuDNN's autotuning excluded)."""
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    image, spacing, ref, names = _sample()
    cfg = TrainConfig(max_steps=steps + 1, time_budget=None, device=device, model_size=size, forest=False,
                      plateau=False, seed=0)
    trainer = Trainer(image, simulate_scribbles(ref, 3, seed=0), cfg, spacing=spacing, class_names=names)
    t_first = None
    for p in trainer.run():
        if p.stage == "train" and p.step == 1:
            _sync(device)
            t_first = time.perf_counter()
    _sync(device)
    seconds = time.perf_counter() - t_first
    peak = None
    if device.startswith("cuda"):
        import torch

        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    return {"device": device, "size": size, "steps": steps, "seconds": round(seconds, 3),
            "steps_per_s": round(steps / seconds, 2), "patch": list(trainer.model.patch_size), "peak_gib": peak}


def _first_model(steps: int):
    """Round 1 on the CPU (the same starting model for every device), its session and simulated corrections."""
    from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.session.rounds import accept_round, run_round
    from napari_sparseseg.core.session.state import Session
    from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles

    image, spacing, ref, names = _sample()
    session = Session(image, simulate_scribbles(ref, 3, seed=0), names, spacing=spacing)
    first = run_to_end(run_round(session, TrainConfig(max_steps=steps, time_budget=None, device="cpu", seed=0),
                                 PredictConfig(device="cpu")))
    accept_round(session, first)
    corrections = simulate_corrections(session.prediction, ref, 2, seed=1)
    painted = corrections > 0
    session.scribbles[painted] = corrections[painted]
    session.absorb_edits()
    return session, ref


def correction_round(device: str, steps: int, session, ref, remote=None) -> dict:
    """The widget's round 2 on ``device`` (or on a cluster through ``remote``): seconds and mean Dice."""
    import copy

    from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.session.rounds import run_round
    from napari_sparseseg.evaluation.metrics import mean_dice

    s = copy.copy(session)  # the same annotations and first model for every run (a round never changes them)
    tcfg = TrainConfig(max_steps=steps, time_budget=None, device=device, seed=1, plateau=False)
    pcfg = PredictConfig(device=device)
    t = time.perf_counter()
    result = run_to_end((remote.run_round if remote is not None else run_round)(s, tcfg, pcfg))
    _sync(device)
    seconds = time.perf_counter() - t
    return {"device": device if remote is None else f"remote {remote.worker} ({remote.device})", "steps": steps,
            "seconds": round(seconds, 2), "mean_dice": round(mean_dice(result.prediction.labels, ref), 4),
            "_labels": result.prediction.labels}


def inference(device: str, precision: str, model, image, spacing) -> dict:
    from napari_sparseseg.core.base.config import PredictConfig
    from napari_sparseseg.core.inference.predict import predict_volume

    cfg = PredictConfig(device=device, precision=precision, refine=False, uncertainty=False, forest=False)
    t = time.perf_counter()
    pred = predict_volume(model, image, cfg, spacing=spacing)
    _sync(device)
    return {"device": device, "precision": precision, "seconds": round(time.perf_counter() - t, 2),
            "_labels": pred.labels}


def _dice(a, b, k: int) -> dict:
    from napari_sparseseg.evaluation.metrics import dice_per_class

    return {str(c): round(float(v), 5) for c, v in dice_per_class(a, b, list(range(1, k))).items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="training steps timed on CUDA")
    ap.add_argument("--cpu-steps", type=int, default=20, help="training steps timed on the CPU")
    ap.add_argument("--round-steps", type=int, default=150, help="steps of the correction round (both devices)")
    ap.add_argument("--scheduler", help="also run the correction round on this Dask cluster's GPU worker")
    ap.add_argument("--smoke", action="store_true", help="no CUDA needed: the CPU twice, toy sizes (checks the script)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu.json"))
    args = ap.parse_args(argv)

    import torch

    out = Path(args.out)
    report = {"machine": platform.node(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if not report["cuda"] and not args.smoke:
        report["note"] = ("no CUDA device on this machine: nothing measured; the script is ready to run on one "
                          "(python benchmarks/gpu.py)")
        print(report["note"])
        if not out.exists():  # never replace a GPU run's figures with this note
            out.write_text(json.dumps(report, indent=1) + "\n")
        return 0
    gpu = "cuda" if report["cuda"] else "cpu"
    if args.smoke:
        args.steps, args.cpu_steps, args.round_steps = 3, 2, 3
        out = out.with_name(out.stem + "_smoke.json")
    if report["cuda"]:
        report["gpu"] = torch.cuda.get_device_name(0)
        report["bf16"] = bool(torch.cuda.is_bf16_supported())
    print(f"GPU path on {report.get('gpu', 'the CPU (smoke)')}; CPU: {torch.get_num_threads()} threads")

    report["training"] = []
    for size in ("medium", "large"):
        g = training_rate(gpu, size, args.steps)
        c = training_rate("cpu", size, args.cpu_steps)
        g["vs_cpu"] = round(g["steps_per_s"] / c["steps_per_s"], 1)
        report["training"] += [g, c]
        print(f"training {size:6s} {gpu}: {g['steps_per_s']:7.2f} steps/s (patch {g['patch']}, peak {g['peak_gib']} GiB); "
              f"cpu: {c['steps_per_s']:6.2f} steps/s; ratio {g['vs_cpu']}x")

    session, ref = _first_model(args.round_steps)
    rounds = {d: correction_round(d, args.round_steps, session, ref) for d in (gpu, "cpu")}
    k = len(session.class_names)
    if args.scheduler:
        from napari_sparseseg.core.base.config import RemoteConfig
        from napari_sparseseg.remote.rounds import RemoteRounds

        with RemoteRounds(RemoteConfig(scheduler=args.scheduler, silence_timeout=600), note=print) as remote:
            rounds["remote"] = correction_round(gpu, args.round_steps, session, ref, remote)
            rounds["remote"]["dice_vs_local_" + gpu] = _dice(rounds["remote"]["_labels"], rounds[gpu]["_labels"], k)
    agree = _dice(rounds[gpu]["_labels"], rounds["cpu"]["_labels"], k)
    report["correction_round"] = {"rounds": [{k2: v for k2, v in r.items() if not k2.startswith("_")}
                                             for r in rounds.values()],
                                  f"speedup_{gpu}_vs_cpu": round(rounds["cpu"]["seconds"] / rounds[gpu]["seconds"], 2),
                                  "dice_between_devices": agree}
    for r in report["correction_round"]["rounds"]:
        print(f"correction round ({args.round_steps} steps + prediction) on {r['device']}: {r['seconds']:.1f} s, "
              f"mean Dice {r['mean_dice']:.3f}")
    print(f"  the {gpu} and CPU rounds' masks agree to Dice {agree} (training differs in arithmetic, so not exactly)")

    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles

    shape = SMOKE_LARGE if args.smoke else LARGE
    big, big_ref, spacing, names, source = _big_scan(shape)
    model = run_to_end(Trainer(big, simulate_scribbles(big_ref, 3, seed=0),
                               TrainConfig(max_steps=args.round_steps, time_budget=None, device=gpu, forest=False, seed=0),
                               spacing=spacing, class_names=names).run()).model
    model.network.to("cpu")
    g = inference(gpu, "auto", model, big, spacing)
    c = inference("cpu", "float32", model, big, spacing)
    dice = _dice(g["_labels"], c["_labels"], len(names))
    ok = all(v >= 0.99 for v in dice.values() if v == v)
    report["inference"] = {"shape": list(big.shape), "source": source, "gpu": {k2: v for k2, v in g.items() if k2[0] != "_"},
                           "cpu_float32": {k2: v for k2, v in c.items() if k2[0] != "_"},
                           "speedup": round(c["seconds"] / g["seconds"], 1), "dice_vs_cpu_float32": dice,
                           "dice_at_least_0.99": ok}
    print(f"inference {'x'.join(map(str, big.shape))} ({source}): {gpu} auto {g['seconds']:.1f} s, cpu float32 "
          f"{c['seconds']:.1f} s ({report['inference']['speedup']}x); Dice vs float32 CPU {dice} -> "
          f"{'OK' if ok else 'BELOW 0.99'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", out)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
