"""Post-processing of a dense prediction with the strokes it was trained on.

A structure the user annotated is where its strokes are. A network trained on a few slices
also lights up look-alike tissue it never saw labelled (bowel and bladder that look like
kidney on the CT, a second bright blob in the brain MRI): on the benchmarks those false
positives lay 20-40 mm from the nearest stroke and were most of the error of the first round.
:func:`keep_stroke_regions` drops every connected region of a class that contains none of
that class's labelled voxels. A true region the user never touched disappears with them;
one stroke (or correction) in it brings it back on the next prediction.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def keep_stroke_regions(labels: np.ndarray, annotations: np.ndarray, connectivity: int = 3) -> dict[int, int]:
    """Set to background, in place, the regions of each class that touch none of its strokes.

    Args:
        labels: dense prediction (0 = background, c = class c); modified in place.
        annotations: strokes in scribble convention (0 = unlabelled, c + 1 = class c),
            corrections included; same shape.
        connectivity: 1 (faces) to 3 (faces, edges and corners; MONAI's
            ``KeepLargestConnectedComponent`` default) for what counts as connected.

    Classes with no stroke at all are left as predicted (nothing to anchor them).

    Returns:
        voxels removed per class.
    """
    labels, annotations = np.asarray(labels), np.asarray(annotations)
    if labels.shape != annotations.shape:
        raise ValueError(f"labels {labels.shape} and annotations {annotations.shape} differ in shape.")
    if not 1 <= connectivity <= 3:
        raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}.")
    structure = ndi.generate_binary_structure(3, connectivity)
    removed: dict[int, int] = {}
    # Only classes with strokes can lose regions. Strokes are sparse, so finding their values
    # costs a mask, not a sort of the whole volume (np.unique(labels) on a 512x512x300 scan).
    for c in (int(v) - 1 for v in np.unique(annotations[annotations > 1])):
        mask = labels == c
        if not mask.any():
            continue
        regions, n = ndi.label(mask, structure=structure)
        anchored = np.unique(regions[annotations == c + 1])
        anchored = anchored[anchored > 0]
        if len(anchored) == n:
            continue  # every region touches a stroke: nothing to drop
        keep = np.zeros(n + 1, dtype=bool)
        keep[anchored] = True
        keep[0] = True  # not class c: untouched
        drop = ~keep[regions]
        labels[drop] = 0
        removed[c] = int(np.count_nonzero(drop))
    return removed
