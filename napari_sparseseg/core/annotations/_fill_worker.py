"""Runs ITK's morphological contour interpolation in its own process (see :mod:`.fill`).

``python -P .../_fill_worker.py IN.npz OUT.npy`` (run as a file, from a private working folder,
so nothing from the user's folder is imported; it imports only numpy and itk): IN holds ``lab`` (uint8, the
outlined slices) and ``axis`` (ITK's axis); OUT gets the interpolated mask. ITK's Python
wrapping and SimpleITK each bring their own ITK libraries; in one process they corrupted the
heap at exit, so ITK runs apart.
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv=None) -> int:
    src, dst = (argv or sys.argv[1:])[:2]
    import itk

    # One thread: the filter's parallel writes have corrupted the heap before (ITKContourInterpolation
    # issues #33/#40; here "malloc_consolidate(): unaligned fastbin chunk" in about one full test run in four).
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    with np.load(src) as z:
        lab, axis = z["lab"], int(z["axis"])
    f = itk.MorphologicalContourInterpolator.New(itk.image_from_array(lab))
    f.SetAxis(axis)
    f.Update()
    np.save(dst, itk.array_from_image(f.GetOutput()) > 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
