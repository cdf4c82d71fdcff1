"""Fill between slices: a structure outlined on two or more parallel slices, interpolated between them.

This is the interpolation behind 3D Slicer's "Fill between slices": ITK's morphological contour
interpolation (Zukić et al., Insight Journal 2016; pip ``itk-morphologicalcontourinterpolation``,
the ``fill`` extra). The result is a dense first guess that enters training as low-weight
pseudo-labels (like the hints of :mod:`~napari_sparseseg.core.annotations.hints`), never over a stroke.

A slice counts as *outlined* for a class when the class's pixels there, holes filled, are thick
(they survive two erosions): a filled region or a closed contour, not a brush stroke.
"""

from __future__ import annotations

import sys

import numpy as np

from napari_sparseseg.core.annotations.labels import label_dtype
from napari_sparseseg.core.base.errors import SparseSegError

# Python 3.11+: a child started with -P prepends nothing (not the cwd, not the script's folder) to its import path.
SAFE_PATH_FLAGS = ("-P",) if sys.version_info >= (3, 11) else ()


def outlined_slices(strokes: np.ndarray, value: int, axis: int, min_area: int = 20) -> dict[int, np.ndarray]:
    """The slices across ``axis`` where scribble ``value`` is outlined: ``{index: filled 2-D region}``."""
    from scipy import ndimage as ndi

    out = {}
    has = np.flatnonzero(np.any(strokes == value, axis=tuple(a for a in range(3) if a != axis)))
    for i in has:
        region = ndi.binary_fill_holes(np.take(strokes, int(i), axis=axis) == value)
        if region.sum() >= min_area and ndi.binary_erosion(region, iterations=2).any():
            out[int(i)] = region
    return out


def _interpolate(lab: np.ndarray, itk_axis: int) -> np.ndarray:
    """ITK's interpolation of ``lab`` across ``itk_axis``, run in a child process.

    ITK's Python wrapping and SimpleITK's libraries corrupted the heap (at exit) when loaded in
    one process. A child that ITK itself crashes (killed by a signal) is run once more before the
    error is reported.
    """
    import importlib.util
    import subprocess
    import tempfile
    from pathlib import Path

    if importlib.util.find_spec("itk") is None:
        raise SparseSegError("fill between slices needs ITK's morphological contour interpolation: "
                             "pip install 'napari-sparseseg[fill]' (or itk-morphologicalcontourinterpolation).")
    with tempfile.TemporaryDirectory(prefix="sparseseg-fill-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npy"
        np.savez(src, lab=lab, axis=np.int64(itk_axis))
        # Isolated from the folder the user started in: `python -m` would put it first on the import path (an
        # itk.py or numpy.py there would run). The worker runs as a file (it imports only numpy and itk), with -P
        # (nothing prepended to the path) and its working folder this private one.
        worker = str(Path(__file__).with_name("_fill_worker.py"))
        command = [sys.executable, *SAFE_PATH_FLAGS, worker, str(src), str(dst)]
        r = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
        if r.returncode < 0:  # killed by a signal: glibc aborted on a corrupted heap inside ITK (seen once in
            # four full test runs, "malloc_consolidate(): unaligned fastbin chunk"); the same input runs again once
            r = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
        if r.returncode != 0 or not dst.is_file():
            last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise SparseSegError(f"fill between slices failed in ITK ({last}); train without it (--no-fill-between).")
        return np.load(dst)


def fill_between(strokes: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Pseudo-labels (scribble convention) interpolated between the outlined slices of each structure.

    For every structure (scribble value >= 2) and every axis with at least two outlined slices,
    the outlines are interpolated morphologically across the slices between them. Voxels where
    two structures' interpolations meet keep the later one. Returns zeros where nothing applies.

    Raises:
        SparseSegError: ITK's interpolation is not installed (the message says how to get it).
    """
    strokes = np.asarray(strokes)
    out = np.zeros(strokes.shape, dtype=label_dtype(int(strokes.max(initial=0))))
    work = []
    for value in np.unique(strokes[strokes >= 2]):
        for axis in range(3):
            slices = outlined_slices(strokes, int(value), axis, min_area)
            if len(slices) >= 2:
                work.append((int(value), axis, slices))
    if not work:
        return out
    for value, axis, slices in work:
        lab = np.zeros(strokes.shape, np.uint8)
        for i, region in slices.items():
            index = [slice(None)] * 3
            index[axis] = i
            lab[tuple(index)] = region
        out[_interpolate(lab, 2 - axis)] = value  # ITK counts axes x, y, z: the reverse of the array's
    return out
