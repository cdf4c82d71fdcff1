"""The streamed sliding window against MONAI's over the whole volume (known answer: the same numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from napari_sparseseg.core.inference.predict import _argmax, _Rows, _sliding_windows


def _net(k: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(6, k, 3, padding=1)).eval()
    return lambda x: net(x).softmax(1)


@pytest.mark.parametrize(("shape", "patch", "overlap", "batch"), [
    ((37, 29, 50), (16, 12, 16), 0.25, 2),   # several rows of windows, the last one clamped to the end
    ((10, 40, 33), (16, 16, 8), 0.5, 3),     # thinner than a window along axis 0: padded like MONAI pads
    ((20, 9, 9), (8, 16, 16), 0.0, 1),       # padded in-plane, no overlap
])
def test_streamed_windows_equal_monai_over_the_whole_volume(shape, patch, overlap, batch):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(2, *shape)).astype(np.float32))
    predictor = _net()
    with torch.inference_mode():
        whole = sliding_window_inference(x[None], patch, batch, predictor, overlap=overlap, mode="gaussian",
                                         padding_mode="replicate")[0]
        chunks = list(_sliding_windows(predictor, lambda a, b, out=None: x[:, a:b], shape, patch, overlap, batch, 3))
    # In order, contiguous, covering every row once.
    assert [c[0] for c in chunks] == [0] + [c[1] for c in chunks[:-1]] and chunks[-1][1] == shape[0]
    streamed = torch.cat([p for _, _, p in chunks], 1)
    assert streamed.shape == whole.shape
    assert torch.allclose(streamed, whole, atol=1e-6), float((streamed - whole).abs().max())


def test_rows_serve_overlapping_slabs_from_the_stream_and_drop_what_is_behind():
    data = torch.arange(3 * 50 * 4, dtype=torch.float32).reshape(3, 50, 4)
    rows = _Rows((a, min(a + 7, 50), data[:, a : a + 7]) for a in range(0, 50, 7))
    for lo, hi in [(0, 12), (8, 30), (26, 50)]:  # slabs with margins overlap their neighbours
        assert torch.equal(rows.take(lo, hi), data[:, lo:hi])
        assert all(b > lo for _, b, _ in rows.held)


def test_argmax_is_torch_argmax_with_the_first_of_equal_maxima():
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.integers(0, 3, size=(4, 6, 7, 8)).astype(np.float32))  # many ties
    assert torch.equal(_argmax(p).long(), p.argmax(0))
