"""The stroke-region filter: regions of a class that touch none of its strokes go to background."""

import numpy as np
import pytest

from napari_sparseseg.core.inference.postprocess import keep_stroke_regions


def _scene():
    labels = np.zeros((12, 20, 20), np.uint8)
    labels[2:6, 2:6, 2:6] = 1  # class 1, stroked
    labels[2:6, 12:16, 12:16] = 1  # class 1 island, far from every class-1 stroke
    labels[8:11, 2:6, 12:16] = 2  # class 2, no stroke of class 2 anywhere
    strokes = np.zeros_like(labels)
    strokes[3, 3, 2:5] = 2  # a class-1 stroke (scribble value c + 1)
    strokes[0, 0, :] = 1  # background strokes
    strokes[4, 13, 13] = 1  # a background stroke inside the island: not a class-1 anchor
    return labels, strokes


def test_drops_only_unanchored_regions_of_stroked_classes():
    labels, strokes = _scene()
    out = labels.copy()
    removed = keep_stroke_regions(out, strokes)
    assert removed == {1: 64}
    assert (out[2:6, 2:6, 2:6] == 1).all()  # the stroked region stays whole
    assert (out[2:6, 12:16, 12:16] == 0).all()  # the island is gone
    assert (out[8:11, 2:6, 12:16] == 2).all()  # a class without strokes is left as predicted
    assert np.array_equal(out != labels, (labels == 1) & (np.indices(labels.shape)[1] >= 12))


def test_a_correction_stroke_brings_a_region_back():
    labels, strokes = _scene()
    strokes[4, 14, 14] = 2  # the user marks the island as class 1
    out = labels.copy()
    assert keep_stroke_regions(out, strokes) == {}
    assert np.array_equal(out, labels)


@pytest.mark.parametrize("connectivity, kept", [(1, False), (3, True)])
def test_connectivity_decides_whether_a_corner_touch_connects(connectivity, kept):
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1  # touch at a corner only
    strokes = np.zeros_like(labels)
    strokes[1, 1, 1] = 2
    keep_stroke_regions(labels, strokes, connectivity=connectivity)
    assert bool(labels[2, 2, 2]) is kept and labels[1, 1, 1] == 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        keep_stroke_regions(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8))
