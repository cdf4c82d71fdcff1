import numpy as np
import pytest

from napari_sparseseg.core.annotations.labels import (
    WeightConfig,
    balance_factors,
    class_counts,
    corrections_from_edit,
    merge_annotations,
    validate_scribbles,
    voxel_weights,
)
from napari_sparseseg.core.base.errors import ScribbleError


def test_class_balancing_gives_each_class_equal_total_weight():
    y = np.zeros(1000, np.uint8)
    y[:600] = 1  # long background stroke
    y[600:610] = 2  # thin stroke of a small structure
    y[610:700] = 3
    src = (y > 0).astype(np.uint8)
    w = voxel_weights(y, src, 3, WeightConfig(balance_power=1.0))
    totals = [w[y == v].sum() for v in (1, 2, 3)]
    assert np.allclose(totals, totals[0])
    assert w[y == 0].sum() == 0
    assert w[y == 2][0] > w[y == 1][0] * 10
    # Default (power 0.5): a class's total weight grows with the square root of its stroke length.
    w = voxel_weights(y, src, 3)
    totals = np.array([w[y == v].sum() for v in (1, 2, 3)])
    assert np.allclose(totals / np.sqrt([600, 10, 90]), totals[0] / np.sqrt(600))
    assert np.isclose(w[y == 2][0] / w[y == 1][0], np.sqrt(60))


def test_balance_cap_and_off_switch():
    f = balance_factors(np.array([10_000, 1, 0]), WeightConfig(max_balance=5.0))
    assert f[2] == 0 and f[1] == 5.0
    f = balance_factors(np.array([10_000, 1, 0]), WeightConfig(class_balance=False))
    assert list(f) == [1.0, 1.0, 0.0]


def test_validate_scribbles_errors_say_what_to_do():
    empty = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ScribbleError, match="no scribbles"):
        validate_scribbles(empty)
    one = empty.copy()
    one[0, 0, 0] = 2
    with pytest.raises(ScribbleError, match="only one class"):
        validate_scribbles(one)
    two = one.copy()
    two[1, 1, 1] = 1
    assert validate_scribbles(two) == 2
    two[2, 2, 2] = 5
    with pytest.raises(ScribbleError, match="only 2 classes"):
        validate_scribbles(two, num_classes=2)


def test_corrections_from_edited_prediction():
    before = np.zeros((2, 3, 3), np.uint8)
    before[0, 1, 1] = 2
    after = before.copy()
    after[0, 1, 1] = 0  # erased a false positive
    after[1, 2, 2] = 1  # painted a missed structure voxel
    corr = corrections_from_edit(before, after)
    assert corr[0, 1, 1] == 1 and corr[1, 2, 2] == 2
    assert np.count_nonzero(corr) == 2
    y, src = merge_annotations(np.zeros_like(before), corr)
    assert class_counts(y, 3).tolist() == [1, 1, 0]
