"""Caches on the user's disk: one root for all of them, and the pretraining cache.

:func:`cache_folder` is the one place a cache folder is named: ``$XDG_CACHE_HOME/napari-sparseseg/<kind>``
(``~/.cache`` without it), or the folder an environment variable names for that kind
(``SPARSESEG_CACHE`` for pretrained states, ``SPARSESEG_AUTOSAVE_DIR`` for autosaved sessions).

Pretraining (:class:`~napari_sparseseg.core.training.pretrain.Pretrainer`) is cached per scan,
keyed by :func:`~napari_sparseseg.core.training.pretrain.fingerprint`: :func:`pretrain` asked
again on the same scan continues from the cache and stops once the scan has had the seconds
asked for, so it is paid once. The cache is a convenience: a damaged entry is rebuilt and a
cache that cannot be written never fails the user's work.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Generator
from pathlib import Path

from napari_sparseseg.core.base.config import PretrainConfig
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.base.progress import Progress
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
from napari_sparseseg.io.atomic import check_ours, replace_folder

__all__ = ["CACHE_ENV", "cache_folder", "load_cached", "pretrain", "save_cached"]

# The environment variable that moves each kind of cache elsewhere.
CACHE_ENV = {"pretrained": "SPARSESEG_CACHE", "autosave": "SPARSESEG_AUTOSAVE_DIR"}


def cache_folder(kind: str) -> Path:
    """The cache folder of ``kind`` (``"pretrained"`` or ``"autosave"``); see the module docstring."""
    env = os.environ.get(CACHE_ENV[kind])
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-sparseseg" / kind


def save_cached(state: Pretrained, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``state`` to ``cache_dir/<fingerprint>/`` (replacing an older one there) and return that folder."""
    import torch

    root = Path(cache_dir) if cache_dir is not None else cache_folder("pretrained")
    root.mkdir(parents=True, exist_ok=True)
    folder = root / state.fingerprint

    def ours(path: Path) -> None:
        check_ours(path, {STATE_JSON, STATE_PT}, STATE_JSON, "pretraining cache folder",
                   "set SPARSESEG_CACHE to another folder")

    ours(folder)

    def build(tmp: Path) -> None:
        torch.save(state.state, tmp / STATE_PT)
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
            except (OSError, SparseSegError) as exc:  # the cache is a convenience: never fail the user's work
                warnings.warn(f"pretraining could not be cached ({exc}); it will be redone next time.", stacklevel=2)
    return result
