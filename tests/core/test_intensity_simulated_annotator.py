import numpy as np
import pytest

from napari_sparseseg.core.base.errors import ConfigError, InputError
from napari_sparseseg.core.model.intensity import choose_normalization, detect_modality, validate_image
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles
from napari_sparseseg.io import read_image, read_labels


def test_modality_detected_on_real_scans(data_dir):
    ct, _ = read_image(data_dir / "ct_abdomen_image.nii.gz")
    mr, _ = read_image(data_dir / "mr_abdomen_image.nii.gz")
    brain, _ = read_image(data_dir / "mr_brain_image.nrrd")
    assert detect_modality(ct) == "ct"
    assert detect_modality(mr) == "mri" and detect_modality(brain) == "mri"
    n = choose_normalization(ct)
    x = n.apply(ct)
    assert x.shape == (2,) + ct.shape and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    # Soft-tissue window: liver (~60 HU) and fat (~-100 HU) are far apart in channel 0.
    assert np.ptp(n.apply(np.array([[[60.0, -100.0]]]))[0]) > 0.7
    m = choose_normalization(mr)
    assert m.n_channels == 1 and np.isclose(np.percentile(m.apply(mr), 50), np.percentile(m.apply(mr * 7.0), 50), atol=1e-4)


def test_bad_images_rejected():
    with pytest.raises(InputError, match="NaN/inf"):
        validate_image(np.array([[[1.0, np.nan], [0, 0]], [[0, 0], [np.inf, 0]]]))
    with pytest.raises(InputError, match="3-D"):
        validate_image(np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="unknown modality 'pet'; use one of auto, ct, mri"):
        choose_normalization(np.zeros((3, 3, 3)), "pet")


def test_simulated_strokes_are_sparse_correct_and_on_few_slices(data_dir):
    lab, _ = read_labels(data_dir / "ct_abdomen_labels.nii.gz")
    ref = np.zeros(lab.shape, np.uint8)
    for v, tid in enumerate([5, 1, 2, 3], start=1):
        ref[lab == tid] = v
    s = simulate_scribbles(ref, k=2, seed=0)
    lab_mask = s > 0
    assert np.array_equal(s[lab_mask] - 1, ref[lab_mask])  # every stroke has the true class
    assert set(np.unique(s)) == {0, 1, 2, 3, 4, 5}
    for axis in range(3):
        per_slice = lab_mask.sum(axis=tuple(a for a in range(3) if a != axis))
        plane = lab.size // lab.shape[axis]
        assert per_slice.max() < 0.1 * plane  # strokes, never whole slices
    assert np.count_nonzero(np.any(lab_mask, axis=(1, 2))) <= 2 + 2 * ref.shape[1] + ref.shape[2]
    pred = np.zeros_like(ref)  # a prediction that missed everything
    corr = simulate_corrections(pred, ref, k=1, seed=0)
    c = corr > 0
    assert c.any() and np.array_equal(corr[c] - 1, ref[c]) and (ref[c] > 0).all()
