"""What a cohort's summary says about each predicted mask, and which scans to review first.

Per scan and class: the volume in mL (voxel count x voxel volume), the mean and 95th
percentile of the normalised entropy inside the class (the model's uncertainty where it put
the class), and the number of connected components (26-connectivity; an organ predicted in
several pieces is suspect). The review priority ranks the scans a reader should look at
first: highest mean uncertainty inside the predicted structures (voxel-weighted over classes),
then the most surplus components, then an empty structure (a class predicted nowhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_sparseseg.core.annotations.labels import MAX_CLASSES
from napari_sparseseg.core.base.config import MAX_SCAN_VOXELS
from napari_sparseseg.io.schema import MapOf, Maybe, Number, Record, spec

__all__ = ["CLASS_ROWS", "ClassRow", "class_summary", "review_ranks", "review_score"]


@dataclass(frozen=True)
class ClassRow:
    """One class's row of :func:`class_summary`, as read back from a batch summary (``sparseseg_summary.json``)."""

    voxels: int = spec(Number(ge=0, le=MAX_SCAN_VOXELS, whole=True))
    volume_ml: float = spec(Number(ge=0))
    components: int = spec(Number(ge=0, le=MAX_SCAN_VOXELS, whole=True))
    mean_uncertainty: float | None = spec(Maybe(Number(ge=0, le=1)), default=None)
    p95_uncertainty: float | None = spec(Maybe(Number(ge=0, le=1)), default=None)


#: The schema of a scan's ``classes`` in a batch summary: class name -> :class:`ClassRow` (io/schema.py).
CLASS_ROWS = MapOf(Record(ClassRow, "a class's row {voxels, volume_ml, components, mean_uncertainty, p95_uncertainty}"),
                   max_items=MAX_CLASSES, what=f"an object of at most {MAX_CLASSES} classes, class name -> row")


def class_summary(labels: np.ndarray, spacing, class_names: Sequence[str], uncertainty: np.ndarray | None = None) -> dict:
    """``{class name: {volume_ml, voxels, components, mean_uncertainty, p95_uncertainty}}``.

    Args:
        labels: the dense mask (0 = background, c = class c).
        spacing: voxel size in mm (any order: only the product is used).
        class_names: background first; one entry per class of the model.
        uncertainty: normalised entropy in [0, 1] on the same grid, or ``None`` (the
            uncertainty fields are then ``None``).
    """
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    structure = np.ones((3, 3, 3), bool)
    out = {}
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        inside = labels == c
        n = int(inside.sum())
        row = {"voxels": n, "volume_ml": round(n * voxel_ml, 3),
               "components": int(ndi.label(inside, structure)[1]) if n else 0,
               "mean_uncertainty": None, "p95_uncertainty": None}
        if uncertainty is not None and n:
            u = uncertainty[inside].astype(np.float32)
            row["mean_uncertainty"] = round(float(u.mean()), 4)
            row["p95_uncertainty"] = round(float(np.percentile(u, 95)), 4)
        out[name] = row
    return out


def review_score(summary: dict) -> tuple:
    """Sort key of one scan's :func:`class_summary`: larger means review sooner.

    First the structures the mask lacks altogether (the model found nothing of a class: the
    surest sign it failed on this scan, and its uncertainty cannot show it, as it is measured
    only where a class was predicted), then the mean uncertainty over the predicted voxels,
    then the surplus pieces (a class split into several).
    """
    voxels = sum(r["voxels"] for r in summary.values())
    weighted = sum((r["mean_uncertainty"] or 0.0) * r["voxels"] for r in summary.values())
    mean_unc = weighted / voxels if voxels else 0.0
    surplus = sum(max(0, r["components"] - 1) for r in summary.values())
    empty = sum(r["voxels"] == 0 for r in summary.values())
    return (empty, round(mean_unc, 6), surplus)


def review_ranks(summaries: dict) -> dict:
    """``{scan: rank}`` with rank 1 = review first; scans whose summary is ``None`` (failed) get none."""
    done = [(review_score(s), name) for name, s in summaries.items() if s is not None]
    done.sort(key=lambda t: (tuple(-v for v in t[0]), t[1]))
    ranks = {name: i for i, (_, name) in enumerate(done, start=1)}
    return {name: ranks.get(name) for name in summaries}
