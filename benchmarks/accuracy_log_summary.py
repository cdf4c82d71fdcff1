"""Summarise a `benchmarks/accuracy.py` log, also one cut short (the JSON is written only at the end).

    python benchmarks/accuracy_log_summary.py benchmarks/results/accuracy_keep_k123_ct.log [more logs]

Prints the mean U-Net Dice per case, k and round over the seeds the log holds (n = seeds), the
largest change of a correction round over every case, seed and k (negative: a drop), the
case-rounds below their own forest, and the median wall seconds per round.
"""

from __future__ import annotations

import re
import statistics as st
import sys


def parse(paths) -> dict:
    """``{(case, seed, k, round): (dice, wall_s, forest_dice)}`` from the logs' round lines."""
    rows: dict = {}
    for path in paths:
        case = seed = None
        with open(path) as f:
            for line in f:
                if m := re.match(r"(\w+): shape", line):
                    case, seed = m.group(1), 0
                elif m := re.match(r"(\w+): seed (\d+)", line):
                    case, seed = m.group(1), int(m.group(2))
                elif m := re.match(r"\s+k=(\d+) round (\d+): U-Net ([\d.]+) \(\d+ steps, \w+, ([\d.]+) s.*?its forest ([\d.]+)",
                                   line):
                    rows[(case, seed, int(m.group(1)), int(m.group(2)))] = tuple(float(m.group(i)) for i in (3, 4, 5))
    return rows


def main(argv=None) -> None:
    rows = parse(argv if argv is not None else sys.argv[1:])
    changes = sorted((v[0] - rows[(c, s, k, r - 1)][0], c, s, k, r) for (c, s, k, r), v in rows.items()
                     if r > 0 and (c, s, k, r - 1) in rows)
    print(f"{len(rows)} rounds; {len(changes)} correction rounds")
    for d, c, s, k, r in changes[:5]:
        print(f"  smallest correction changes: {d:+.3f}  {c} seed {s} k={k} round {r}")
    below = [(c, s, k, r, v[0] - v[2]) for (c, s, k, r), v in rows.items() if v[0] < v[2]]
    print("below its own forest:", ", ".join(f"{c} seed {s} k={k} round {r} ({d:+.3f})" for c, s, k, r, d in below) or "none")
    print(f"median wall per round {st.median(v[1] for v in rows.values()):.1f} s")
    for case in dict.fromkeys(key[0] for key in rows):
        for k in sorted({key[2] for key in rows if key[0] == case}):
            cells = []
            for r in range(1 + max(key[3] for key in rows)):
                v = [rows[key][0] for key in rows if key[0] == case and key[2] == k and key[3] == r]
                cells.append(f"{st.mean(v):.3f} (n={len(v)})" if v else "-")
            print(f"{case:18s} k={k}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
