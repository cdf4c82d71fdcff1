"""Baseline: a random forest on ilastik's default 3-D filter bank, trained on the same strokes.

Features per voxel (ilastik's "pixel classification" set, in voxel units), at
sigma = 0.7, 1.0, 1.6, 3.5, 5.0: Gaussian smoothing, Laplacian of Gaussian, Gaussian gradient
magnitude, difference of Gaussians (sigma, 0.66 sigma), structure-tensor eigenvalues (inner
sigma, outer 0.5 sigma) and Hessian-of-Gaussian eigenvalues, plus the raw intensity.
scikit-learn RandomForestClassifier, 100 trees. Memory: float32 features, about
53 x 4 bytes per voxel (a 128^3 volume needs ~450 MB).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0)


def _sym_eigvals(a00, a01, a02, a11, a12, a22) -> np.ndarray:
    """Eigenvalues (descending) of per-voxel symmetric 3x3 matrices, in chunks."""
    out = np.empty((3,) + a00.shape, np.float32)
    flat = [a.reshape(-1) for a in (a00, a01, a02, a11, a12, a22)]
    n = flat[0].size
    for s in range(0, n, 1 << 20):
        e = slice(s, min(n, s + (1 << 20)))
        m = np.empty((e.stop - e.start, 3, 3), np.float32)
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = flat[0][e], flat[1][e], flat[2][e]
        m[:, 1, 1], m[:, 1, 2], m[:, 2, 2] = flat[3][e], flat[4][e], flat[5][e]
        m[:, 1, 0], m[:, 2, 0], m[:, 2, 1] = m[:, 0, 1], m[:, 0, 2], m[:, 1, 2]
        out.reshape(3, -1)[:, e] = np.linalg.eigvalsh(m)[:, ::-1].T
    return out


def ilastik_features(image: np.ndarray) -> np.ndarray:
    """``(n_features, *image.shape)`` float32."""
    x = image.astype(np.float32)
    x = (x - x.mean()) / (x.std() + 1e-6)
    feats = [x]
    for s in SIGMAS:
        g = ndi.gaussian_filter(x, s)
        feats += [g, ndi.gaussian_laplace(x, s), ndi.gaussian_gradient_magnitude(x, s), g - ndi.gaussian_filter(x, 0.66 * s)]
        grads = [ndi.gaussian_filter(x, s, order=o) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
        st = [ndi.gaussian_filter(grads[i] * grads[j], 0.5 * s) for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))]
        feats += list(_sym_eigvals(*st))
        del grads, st
        h = [ndi.gaussian_filter(x, s, order=o) for o in ((2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 2, 0), (0, 1, 1), (0, 0, 2))]
        feats += list(_sym_eigvals(*h))
        del h
    return np.stack(feats).astype(np.float32)


def rf_segment(image: np.ndarray, scribbles: np.ndarray, seed: int = 0, n_jobs: int = 2, features=None) -> np.ndarray:
    """Dense class indices from scribbles (0 = unlabelled, c + 1 = class c)."""
    from sklearn.ensemble import RandomForestClassifier

    f = ilastik_features(image) if features is None else features
    lab = scribbles > 0
    rf = RandomForestClassifier(n_estimators=100, n_jobs=n_jobs, random_state=seed)
    rf.fit(f[:, lab].T, scribbles[lab].astype(np.int64) - 1)
    flat = f.reshape(f.shape[0], -1)
    out = np.empty(flat.shape[1], np.uint8)
    for s in range(0, flat.shape[1], 1 << 19):
        out[s : s + (1 << 19)] = rf.classes_[rf.predict_proba(flat[:, s : s + (1 << 19)].T).argmax(1)]
    return out.reshape(image.shape)
