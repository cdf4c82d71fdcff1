"""Caches on the user's disk: one root for all of them, the pretraining cache and the feature cache.

:func:`cache_folder` is the one place a cache folder is named: ``$XDG_CACHE_HOME/napari-sparseseg/<kind>``
(``~/.cache`` without it), or the folder an environment variable names for that kind
(``SPARSESEG_CACHE`` for pretrained states, ``SPARSESEG_FEATURE_CACHE`` for the forest's
filter features, ``SPARSESEG_AUTOSAVE_DIR`` for autosaved sessions).

Pretraining (:class:`~napari_sparseseg.core.training.pretrain.Pretrainer`) is cached per scan,
keyed by :func:`~napari_sparseseg.core.training.pretrain.fingerprint`: :func:`pretrain` asked
again on the same scan continues from the cache and stops once the scan has had the seconds
asked for, so it is paid once.

The forest's filter features (:func:`~napari_sparseseg.core.model.forest.scan_features`,
seconds to tens of seconds on a large scan) are cached per scan for the command line by
:func:`cache_scan_features`: one folder per key (a hash of
:func:`~napari_sparseseg.core.model.forest.feature_key`: the voxels, shape, dtype,
normalisation ranges and spacing, and the features' version) holding ``features.npy``
(float16, read back memory-mapped) and ``features.json`` (format version, shape, ranges,
spacing and the key, all checked on read). After each write the oldest entries (by
modification time; a read refreshes it) are removed while the entries together exceed
:data:`FEATURE_CACHE_BYTES` (:func:`trim_feature_cache`); only folders that are clearly
entries of this cache are counted or removed, never anything else in the folder.
Unlike a pretrained state, an entry holds the scan's intensities (the first feature) and
filtered images of it.

Both caches are a convenience: a damaged entry is rebuilt, and a cache that cannot be
written gives a warning and never fails the user's work. Nothing is written outside the
cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import warnings
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from napari_sparseseg import __version__
from napari_sparseseg.core.base.config import PretrainConfig
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.base.progress import Progress
from napari_sparseseg.core.model.forest import FEATURES_VERSION, N_FEATURES, FeatureCache, feature_key
from napari_sparseseg.core.model.intensity import Normalization
from napari_sparseseg.core.model.network import NetworkConfig, build_network
from napari_sparseseg.core.training.pretrain import (
    FORMAT_VERSION,
    STATE_JSON,
    STATE_PT,
    Pretrained,
    Pretrainer,
    seconds_left,
)
from napari_sparseseg.io.atomic import TMP_MARK, check_ours, replace_folder
from napari_sparseseg.io.models import save_tensors

__all__ = ["CACHE_ENV", "FEATURE_CACHE_BYTES", "cache_folder", "cache_scan_features", "feature_entry", "load_cached",
           "load_features", "pretrain", "save_cached", "save_features", "trim_feature_cache"]

# The environment variable that moves each kind of cache elsewhere.
CACHE_ENV = {"pretrained": "SPARSESEG_CACHE", "features": "SPARSESEG_FEATURE_CACHE", "autosave": "SPARSESEG_AUTOSAVE_DIR"}


def cache_folder(kind: str) -> Path:
    """The cache folder of ``kind`` (``"pretrained"``, ``"features"`` or ``"autosave"``); see the module docstring."""
    env = os.environ.get(CACHE_ENV[kind])
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-sparseseg" / kind


def _why(exc: Exception) -> str:
    """One line on why a cache could not be written (the error's own line, or its type and text)."""
    if isinstance(exc, SparseSegError):
        return exc.one_line()
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def save_cached(state: Pretrained, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``state`` to ``cache_dir/<fingerprint>/`` (replacing an older one there) and return that folder."""
    root = Path(cache_dir) if cache_dir is not None else cache_folder("pretrained")
    root.mkdir(parents=True, exist_ok=True)
    folder = root / state.fingerprint

    def ours(path: Path) -> None:
        check_ours(path, {STATE_JSON, STATE_PT}, STATE_JSON, "pretraining cache folder",
                   "set SPARSESEG_CACHE to another folder")

    ours(folder)

    def build(tmp: Path) -> None:
        save_tensors(state.state, tmp / STATE_PT, folder)
        (tmp / STATE_JSON).write_text(json.dumps(state.metadata(), indent=1))

    return replace_folder(folder, build, check=ours)


def load_cached(key: str, cache_dir: str | os.PathLike | None = None) -> Pretrained | None:
    """The cached state for fingerprint ``key``, or ``None`` if there is none.

    A damaged or foreign cache entry is treated as absent (the cache is ours to rebuild).
    """
    import torch

    folder = (Path(cache_dir) if cache_dir is not None else cache_folder("pretrained")) / key
    try:
        meta = json.loads((folder / STATE_JSON).read_text())
        if meta.get("format_version") != FORMAT_VERSION or meta.get("fingerprint") != key:
            return None
        state = torch.load(folder / STATE_PT, map_location="cpu", weights_only=True)
        config = NetworkConfig.from_dict(meta["network"])
        build_network(config).load_state_dict(state)
        return Pretrained(state, config, Normalization.from_dict(meta["normalization"]), tuple(meta["patch_size"]),
                          tuple(meta["spacing"]), meta["task"], int(meta["steps"]), float(meta["seconds"]), key,
                          str(meta["size"]))
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - any damage (truncated, unpicklable, wrong shapes): the entry is rebuilt
        return None


def pretrain(image, cfg: PretrainConfig | None = None, *, spacing=(1.0, 1.0, 1.0),
             cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
             stop: threading.Event | None = None) -> Generator[Progress, None, Pretrained]:
    """Pretrain with the cache: continue from a cached state of this scan, save the result.

    A generator like :meth:`Pretrainer.run`. Whatever ends it (the bound, Stop, Ctrl-C), the
    state reached is saved to the cache; a cache that cannot be written gives a warning, not
    an error. With ``use_cache`` False nothing is read or written.

    Args:
        image: raw intensities, 3-D.
        cfg: the settings; ``seconds`` is the scan's total, cached seconds included.
        spacing: voxel size in mm, array order.
        cache_dir: the cache folder (default :func:`cache_folder` ``("pretrained")``).
        use_cache: read and write the cache.
        stop: set it to end after the current step and return the state so far.
    """
    worker = Pretrainer(image, cfg, spacing=spacing)
    start = load_cached(worker.fingerprint, cache_dir) if use_cache else None
    if start is not None and seconds_left(start, worker.cfg) <= 0 and worker.cfg.max_steps is None:
        return start
    worker.start = worker.result = start
    try:
        result = yield from worker.run(stop)
    finally:
        if use_cache and worker.result is not None and worker.result is not start:
            try:
                save_cached(worker.result, cache_dir)
            except Exception as exc:  # noqa: BLE001 - the cache is a convenience: never fail the user's work
                warnings.warn(f"pretraining could not be cached ({_why(exc)}); it will be redone next time.", stacklevel=2)
    return result


# ---------------------------------------------------------------------------------------------- feature cache

FEATURES_JSON, FEATURES_NPY = "features.json", "features.npy"
FEATURES_FORMAT = 1  # of an entry's folder: bump when its files or metadata change
FEATURE_CACHE_BYTES = 4 * 2**30  # the entries together are kept under this (the oldest are removed)
_FREE_MARGIN = 2**30  # an entry is not written where it would leave less free disk than this
_STALE_SECONDS = 24 * 3600  # a temporary folder older than this was left by a killed process
_ENTRY_NAME = re.compile(r"[0-9a-f]{32}")
_FEATURE_FILES = frozenset({FEATURES_JSON, FEATURES_NPY})


def _feature_root(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_folder("features")


def _entry_key(image: np.ndarray, ranges, spacing) -> dict:
    """The key of a scan's entry, as stored in its JSON (plain types, so it compares after a round trip)."""
    digest, shape, dtype, ranges, spacing = feature_key(image, ranges, spacing)
    return {"image_blake2b": digest, "shape": [int(n) for n in shape], "dtype": dtype,
            "ranges": [[float(v) for v in r] for r in ranges], "spacing": [float(v) for v in spacing],
            "features_version": FEATURES_VERSION, "n_features": N_FEATURES}


def _entry_name(key: dict) -> str:
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()


def feature_entry(image: np.ndarray, ranges, spacing, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or would hold) the cached features of this scan."""
    return _feature_root(cache_dir) / _entry_name(_entry_key(image, ranges, spacing))


def _read_entry(folder: Path, key: dict) -> np.ndarray | None:
    """The entry's features, memory-mapped, if its metadata and array are those of ``key``; else ``None``."""
    shape = [N_FEATURES, *key["shape"]]
    try:
        meta = json.loads((folder / FEATURES_JSON).read_text())
        if (not isinstance(meta, dict) or meta.get("package") != "napari-sparseseg" or meta.get("kind") != "features"
                or meta.get("format_version") != FEATURES_FORMAT or meta.get("key") != key
                or meta.get("shape") != shape or meta.get("dtype") != "float16"):
            return None
        path = folder / FEATURES_NPY
        features = np.load(path, mmap_mode="r", allow_pickle=False)
        if (not isinstance(features, np.memmap) or features.dtype != np.float16 or list(features.shape) != shape
                or not features.flags.c_contiguous or features.offset + features.nbytes != path.stat().st_size):
            return None
        return features
    except Exception:  # noqa: BLE001 - missing, truncated, garbage, foreign: the entry counts as absent
        return None


def load_features(image: np.ndarray, ranges, spacing, cache_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """The cached features of this scan (read-only, memory-mapped), or ``None`` when there is no valid entry.

    A damaged or foreign entry (truncated or garbage ``features.npy``, metadata of another scan,
    version or shape) is treated as absent. A hit refreshes the entry's time, so the entries
    used last are the ones :func:`trim_feature_cache` keeps.
    """
    folder = feature_entry(image, ranges, spacing, cache_dir)
    features = _read_entry(folder, _entry_key(image, ranges, spacing))
    if features is not None:
        try:
            os.utime(folder)
        except OSError:  # a read-only cache still serves its entries
            pass
    return features


def save_features(image: np.ndarray, ranges, spacing, features: np.ndarray, cache_dir: str | os.PathLike | None = None,
                  seconds: float | None = None) -> Path:
    """Write ``features`` as this scan's entry (replacing a damaged one of ours) and return its folder.

    Raises:
        OutputError: the folder cannot be written, or the entry's folder holds files this cache did not write
            (nothing is then changed).
        OSError: the disk is full or not writable.
    """
    key = _entry_key(image, ranges, spacing)
    shape = [N_FEATURES, *key["shape"]]
    if list(features.shape) != shape or features.dtype != np.float16:
        raise ValueError(f"features must be {tuple(shape)} float16, got {features.shape} {features.dtype}.")
    root = _feature_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / _entry_name(key)

    def ours(path: Path) -> None:
        check_ours(path, _FEATURE_FILES, FEATURES_JSON, "feature cache folder",
                   f"set {CACHE_ENV['features']} to another folder")

    ours(folder)
    meta = {"package": "napari-sparseseg", "kind": "features", "format_version": FEATURES_FORMAT, "key": key,
            "shape": shape, "dtype": "float16", "ranges": key["ranges"], "spacing": key["spacing"],
            "version": __version__, "seconds": None if seconds is None else round(float(seconds), 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def build(tmp: Path) -> None:
        with open(tmp / FEATURES_NPY, "wb") as f:
            np.save(f, np.ascontiguousarray(features), allow_pickle=False)
        (tmp / FEATURES_JSON).write_text(json.dumps(meta, indent=1))

    return replace_folder(folder, build, check=ours)


def _our_entry(path: Path, temporary: bool = False) -> int | None:
    """The bytes of a folder of this cache (an entry, or a temporary one when ``temporary``), ``None`` if not one of ours.

    Ours: a real folder (no link) named as this cache names them, holding only ``features.json``
    and ``features.npy``, the JSON written by napari-sparseseg for this cache.
    """
    name = path.name
    if temporary:
        base = name[1:].split(TMP_MARK)[0] if name.startswith(".") and TMP_MARK in name else ""
        if not _ENTRY_NAME.fullmatch(base):
            return None
    elif not _ENTRY_NAME.fullmatch(name):
        return None
    try:
        if path.is_symlink() or not path.is_dir():
            return None
        files = list(path.iterdir())
        if not files or {p.name for p in files} - _FEATURE_FILES or any(p.is_symlink() or not p.is_file() for p in files):
            return None
        if (path / FEATURES_JSON).exists():
            meta = json.loads((path / FEATURES_JSON).read_text())
            if not isinstance(meta, dict) or meta.get("package") != "napari-sparseseg" or meta.get("kind") != "features":
                return None
        elif not temporary:  # an entry without its metadata may be anybody's
            return None
        return sum(p.stat().st_size for p in files)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _remove_entry(path: Path) -> bool:
    """Remove one of our folders by its known file names only (the array first: a half-removed entry stays ours)."""
    try:
        for name in (FEATURES_NPY, FEATURES_JSON):
            if os.path.lexists(path / name):
                os.unlink(path / name)
        os.rmdir(path)  # fails, and keeps the folder, if anything else appeared in it meanwhile
        return True
    except OSError:
        return False


def trim_feature_cache(cache_dir: str | os.PathLike | None = None, max_bytes: int = FEATURE_CACHE_BYTES,
                       keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Remove the oldest feature entries while the entries together exceed ``max_bytes``.

    Only entries of this cache count and go (see :func:`_our_entry`); any other file or folder
    there is left alone. Entries named in ``keep`` (the one just written) stay. Temporary
    folders of this cache older than a day (a write killed before it could clean up) go too.

    Returns:
        The folders removed, oldest first.
    """
    root = _feature_root(cache_dir)
    keep = {Path(k).name for k in keep}
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    now, entries, total, removed = time.time(), [], 0, []
    for path in children:
        size = _our_entry(path)
        if size is not None:
            try:
                entries.append((path.stat().st_mtime, path.name, path, size))
            except OSError:
                continue
            total += size
            continue
        try:
            stale = _our_entry(path, temporary=True) is not None and now - path.stat().st_mtime > _STALE_SECONDS
        except OSError:
            stale = False
        if stale and _remove_entry(path):
            removed.append(path)
    for _, name, path, size in sorted(entries):
        if total <= max_bytes:
            break
        if name in keep:
            continue
        if _remove_entry(path):
            total -= size
            removed.append(path)
    return removed


def cache_scan_features(cache: FeatureCache, image: np.ndarray, ranges, spacing,
                        cache_dir: str | os.PathLike | None = None,
                        max_bytes: int = FEATURE_CACHE_BYTES) -> Literal["read", "written", "computed"]:
    """Put a scan's filter features into ``cache``, from the cache on disk when it holds them.

    A valid entry is read back (memory-mapped) into ``cache``; otherwise the features are
    computed with ``cache.get`` and written to disk atomically, then the cache is trimmed to
    ``max_bytes`` (:func:`trim_feature_cache`). Features larger than ``max_bytes``, or than the
    free disk space allows, are not written. A cache that cannot be read counts as empty;
    one that cannot be written gives a warning: the features are in ``cache`` either way.

    Args:
        cache: the in-memory cache the trainer and the prediction read.
        image: raw intensities, 3-D.
        ranges: the normalisation ranges of the model the features are for.
        spacing: voxel size in mm, array order.
        cache_dir: the cache folder (default :func:`cache_folder` ``("features")``).
        max_bytes: the most the entries may hold together.

    Returns:
        ``"read"`` (from disk), ``"written"`` (computed and cached) or ``"computed"`` (not cached).
    """
    features = load_features(image, ranges, spacing, cache_dir)
    if features is not None:
        cache.put(image, ranges, spacing, features)
        return "read"
    t0 = time.perf_counter()
    features = cache.get(image, ranges, spacing)
    seconds = time.perf_counter() - t0
    if features.nbytes > max_bytes:
        return "computed"
    root = _feature_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if free < features.nbytes + _FREE_MARGIN:
            warnings.warn(f"the filter features ({features.nbytes / 2**30:.1f} GiB) were not cached: {root} has only "
                          f"{free / 2**30:.1f} GiB free; they will be computed again next time.", stacklevel=2)
            return "computed"
        folder = save_features(image, ranges, spacing, features, cache_dir, seconds)
    except Exception as exc:  # noqa: BLE001 - the cache is a convenience: never fail the user's work
        warnings.warn(f"the filter features could not be cached ({_why(exc)}); they will be computed again next time.",
                      stacklevel=2)
        return "computed"
    trim_feature_cache(root, max_bytes, keep=[folder])
    return "written"
