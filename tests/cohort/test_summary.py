"""Per-scan class summary and review priority (cohort/summary.py), on masks with known answers."""

from __future__ import annotations

import numpy as np

from napari_sparseseg.cohort.summary import class_summary, review_ranks

NAMES = ["background", "liver", "lesion"]


def _mask():
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[2:6, 2:12, 2:12] = 1  # 400 voxels, one piece
    labels[1:3, 15:17, 15:17] = 2  # 8 voxels
    labels[7:9, 15:17, 15:17] = 2  # 8 more, a second piece
    return labels


def test_volumes_components_and_uncertainty_inside_each_class():
    labels = _mask()
    unc = np.zeros(labels.shape, np.float16)
    unc[labels == 2] = 0.5
    unc[2, 2, 2:12] = 1.0  # 10 of the liver's 400 voxels are unsure
    s = class_summary(labels, (2.0, 1.5, 1.0), NAMES, unc)
    assert s["liver"]["voxels"] == 400 and s["liver"]["volume_ml"] == 400 * 3.0 / 1000
    assert s["liver"]["components"] == 1 and s["lesion"]["components"] == 2
    assert s["liver"]["mean_uncertainty"] == round(10 / 400, 4) and s["liver"]["p95_uncertainty"] == 0.0
    assert s["lesion"]["mean_uncertainty"] == 0.5 and s["lesion"]["p95_uncertainty"] == 0.5
    empty = class_summary(np.zeros_like(labels), (1, 1, 1), NAMES, unc)
    assert empty["lesion"] == {"voxels": 0, "volume_ml": 0.0, "components": 0, "mean_uncertainty": None,
                               "p95_uncertainty": None}
    assert class_summary(labels, (1, 1, 1), NAMES)["liver"]["mean_uncertainty"] is None


def test_the_most_uncertain_scan_is_reviewed_first_and_failed_scans_get_no_rank():
    labels = _mask()
    calm, unsure = np.zeros(labels.shape, np.float16), np.full(labels.shape, 0.4, np.float16)
    one_piece = labels.copy()
    one_piece[7:9, 15:17, 15:17] = 0
    summaries = {
        "calm": class_summary(one_piece, (1, 1, 1), NAMES, calm),
        "unsure": class_summary(labels, (1, 1, 1), NAMES, unsure),
        "fragmented": class_summary(labels, (1, 1, 1), NAMES, calm),  # as calm, but a class in two pieces
        "broken": None,
    }
    assert review_ranks(summaries) == {"unsure": 1, "fragmented": 2, "calm": 3, "broken": None}
    # A scan where the model found nothing of a structure comes first, however calm its other classes
    # (the uncertainty is measured where a class was predicted, so a missed structure adds none).
    missing = one_piece.copy()
    missing[missing == NAMES.index("lesion")] = 0
    summaries["missed"] = class_summary(missing, (1, 1, 1), NAMES, calm)
    assert summaries["missed"]["lesion"]["voxels"] == 0
    assert review_ranks(summaries) == {"missed": 1, "unsure": 2, "fragmented": 3, "calm": 4, "broken": None}
