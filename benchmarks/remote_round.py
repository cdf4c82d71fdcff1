"""Round time on a Dask worker against the same round here: the cost of going remote, on this machine.

A loopback cluster (`dask scheduler` + one `dask worker` on 127.0.0.1, CPU, as many torch threads
as this process) and this process run the same widget rounds (training with a step bound, then
prediction, refinement, uncertainty and suggestions) on the bundled sample, alternately (remote
first on even repetitions, local first on odd ones, so a load change on a shared machine hits both);
round 1 then warm-started correction rounds, as in the widget. Each remote round is timed from
this side (sending the strokes and the model, the worker's round, bringing back the model, mask
and uncertainty); the first remote round also pays the scan's upload and the worker's imports and
is reported apart. The masks are compared (they must be the same).

    python benchmarks/remote_round.py [--repeats 3] [--steps 40]

Prints the times and the ratio remote / local (median of the warm rounds) and writes
benchmarks/results/remote_round.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds timed each way after the first")
    ap.add_argument("--steps", type=int, default=40, help="training steps per round")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "remote_round.json"))
    args = ap.parse_args(argv)

    import torch

    from benchmarks.cases import load_case
    from napari_sparseseg.core.base.config import PredictConfig, RemoteConfig, TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.session.rounds import accept_round, run_round
    from napari_sparseseg.core.session.state import Session
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
    from napari_sparseseg.remote.rounds import RemoteRounds
    from tests.remote.cluster import Cluster

    image, geom, ref, names = load_case("sample_ct_crop")
    threads = torch.get_num_threads()
    session = Session(image, simulate_scribbles(ref, 3, seed=0), names, spacing=geom.spacing)
    pcfg = PredictConfig(device="cpu")

    def tcfg(i):
        return TrainConfig(max_steps=args.steps, time_budget=None, device="cpu", seed=i, plateau=False)

    rows = []
    with tempfile.TemporaryDirectory(prefix="sparseseg-remote-bench-") as tmp:
        cluster = Cluster(Path(tmp), threads=threads).start(workers=1)
        try:
            with RemoteRounds(RemoteConfig(scheduler=cluster.address, connect_timeout=60, silence_timeout=600)) as rr:
                for i in range(args.repeats + 1):
                    times, results = {}, {}
                    order = ("remote", "local") if i % 2 == 0 else ("local", "remote")
                    for where in order:
                        t = time.perf_counter()
                        rounds = rr.run_round if where == "remote" else run_round
                        results[where] = run_to_end(rounds(session, tcfg(i), pcfg))
                        times[where] = time.perf_counter() - t
                    same = bool(np.array_equal(results["remote"].prediction.labels, results["local"].prediction.labels))
                    rows.append({"round": i + 1, "remote_s": round(times["remote"], 2), "local_s": round(times["local"], 2),
                                 "ratio": round(times["remote"] / times["local"], 3), "same_mask": same,
                                 "first": i == 0, "order": list(order)})
                    print(f"round {i + 1}{' (first: scan upload, worker imports)' if i == 0 else ''}: remote "
                          f"{times['remote']:.2f} s, local {times['local']:.2f} s, ratio {rows[-1]['ratio']:.2f}, "
                          f"same mask {same}", flush=True)
                    accept_round(session, results["local"])  # the next round warm-starts from this model, both ways
                    report = _report(rows, image.shape, threads, args.steps, rr.scans_sent)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")  # after every round: a cut run keeps its rounds
        finally:
            cluster.stop()
    print(f"ratio remote / local (median of the warm rounds): {report['ratio_remote_over_local_median_warm']}; scan sent "
          f"{report['scans_sent']} time(s); masks same: {report['all_masks_same']}")
    print("wrote", args.out)
    return 0


def _report(rows: list, shape, threads: int, steps: int, sent: int) -> dict:
    warm = [r for r in rows if not r["first"]]
    ratio = (statistics.median(r["remote_s"] for r in warm) / statistics.median(r["local_s"] for r in warm)) if warm else None
    return {"machine": platform.node(), "torch_threads": threads, "scan": list(shape), "steps": steps, "rounds": rows,
            "scans_sent": sent, "ratio_remote_over_local_median_warm": None if ratio is None else round(ratio, 3),
            "all_masks_same": all(r["same_mask"] for r in rows),
            "note": "a loopback cluster with one CPU worker on the same machine: the ratio is the cost of going "
                    "through Dask (transfers, packing, events), not a GPU's gain"}


if __name__ == "__main__":
    raise SystemExit(main())
