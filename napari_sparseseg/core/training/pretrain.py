"""Self-supervised pretraining on the unlabelled scan: restore corrupted patches (Models Genesis).

While the user paints, the segmentation network's body learns this scan's anatomy from the
scan alone: patches are corrupted with MONAI transforms (random boxes blanked and local voxel
shuffling for ``inpaint``; strong Gaussian noise for ``denoise``) and the network, with a
restoration head in place of its class head, is trained to give the original back (mean squared
error over the patch, as in Zhou et al. 2019, "Models Genesis"). The first training round then
starts from these weights (:class:`~napari_sparseseg.core.training.train.Trainer`'s ``pretrained``);
the layers whose shape depends on the number of classes start fresh.

The state is cached per scan (:func:`load_cached` / :func:`save_cached`, keyed by
:func:`fingerprint`): pretraining asked for again on the same scan continues from the cache
and stops once the scan has had the seconds asked for, so it is paid once.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_sparseseg import __version__
from napari_sparseseg.core.base.config import PretrainConfig
from napari_sparseseg.core.base.device import adam, resolve_device
from napari_sparseseg.core.base.errors import ConfigError, SparseSegError
from napari_sparseseg.core.base.grid import validate_spacing
from napari_sparseseg.core.base.progress import Progress
from napari_sparseseg.core.model.intensity import Normalization, choose_normalization, validate_image
from napari_sparseseg.core.model.network import PATCH_VOXELS, NetworkConfig, build_network, size_for_device
from napari_sparseseg.core.model.patches import auto_patch_size

FORMAT_VERSION = 1
STATE_JSON, STATE_PT = "pretrained.json", "pretrained.pt"
# The restoration head predicts the input channels; NetworkConfig needs >= 2 outputs, so a
# one-channel (MRI) scan gets a head of two identical targets.
_MIN_OUT = 2


@dataclass
class Pretrained:
    """A network body pretrained on one scan, ready to start a first round from.

    Args:
        state: the network's ``state_dict`` (CPU tensors), restoration head included.
        config: the architecture (``out_channels`` is the restoration head's).
        normalization: the scan's normalisation (the first round keeps it).
        patch_size: the patch shape it was trained on, array order.
        spacing: the scan's voxel size, array order.
        task: the pretext task.
        steps: optimisation steps so far (cache included).
        seconds: training seconds so far (cache included).
        fingerprint: :func:`fingerprint` of the scan and settings.
        size: the network size (``small``, ``medium``, ``large``).
    """

    state: dict
    config: NetworkConfig
    normalization: Normalization
    patch_size: tuple
    spacing: tuple
    task: str
    steps: int
    seconds: float
    fingerprint: str
    size: str = "small"

    def metadata(self) -> dict:
        """The ``pretrained.json`` content."""
        return {"format_version": FORMAT_VERSION, "package": "napari-sparseseg", "package_version": __version__,
                "kind": "pretrained", "network": self.config.to_dict(), "normalization": self.normalization.to_dict(),
                "patch_size": list(self.patch_size), "spacing": list(self.spacing), "task": self.task,
                "steps": self.steps, "seconds": round(self.seconds, 3), "fingerprint": self.fingerprint, "size": self.size}


def fingerprint(image: np.ndarray, spacing, cfg: PretrainConfig, size: str) -> str:
    """A key for the cache: the scan's voxels, shape and spacing, the task, network size and modality."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"shape": list(image.shape), "dtype": str(image.dtype), "spacing": [round(float(s), 6) for s in spacing],
                         "task": cfg.task, "size": size, "modality": cfg.modality, "format": FORMAT_VERSION}).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def _corruption(task: str, patch, seed: int):
    """MONAI transforms that corrupt a normalised patch ``(C, *patch)`` for the pretext task."""
    from monai.transforms import Compose, RandCoarseDropout, RandCoarseShuffle, RandGaussianNoise

    if task == "denoise":
        t = Compose([RandGaussianNoise(prob=1.0, std=0.5)])
    else:
        hole = tuple(max(2, p // 6) for p in patch)
        big = tuple(max(3, p // 3) for p in patch)
        t = Compose([
            RandCoarseShuffle(holes=4, spatial_size=hole, max_holes=12, max_spatial_size=big, prob=0.5),
            RandCoarseDropout(holes=4, spatial_size=hole, max_holes=10, max_spatial_size=big, fill_value=(-1.0, 1.0), prob=0.9),
        ])
    t.set_random_state(seed=seed)
    return t


class Pretrainer:
    """Pretraining on one scan; :meth:`run` is the generator (Stop by closing it).

    Args:
        image: raw intensities, 3-D.
        cfg: the settings (``seconds`` is the total the scan should get, ``start`` included).
        spacing: voxel size in mm, array order (shapes the patch like training does).
        start: continue from this state (a cached one for the same scan), else fresh.

    Raises:
        InputError: the image or spacing is invalid (the checks of training).
        ConfigError: ``cfg`` is not a :class:`PretrainConfig`, or ``start`` was made for another
            scan or other settings.
    """

    def __init__(self, image, cfg: PretrainConfig | None = None, *, spacing=(1.0, 1.0, 1.0), start: Pretrained | None = None):
        if cfg is not None and not isinstance(cfg, PretrainConfig):
            raise ConfigError(f"cfg must be a PretrainConfig, got {type(cfg).__name__}.")
        self.cfg = cfg or PretrainConfig()
        self.image = validate_image(image)
        self.spacing = validate_spacing(spacing)
        self.device = resolve_device(self.cfg.device)
        self.size = size_for_device(self.cfg.model_size, self.device.type)
        self.fingerprint = fingerprint(self.image, self.spacing, self.cfg, self.size)
        if start is not None and start.fingerprint != self.fingerprint:
            raise ConfigError("the pretrained state to continue from was made for another scan or other settings.")
        self.start = start
        self.result: Pretrained | None = start

    def _setup(self):
        import torch

        if self.start is not None:
            s = self.start
            net = build_network(s.config).to(self.device)
            net.load_state_dict(s.state)
            return net, s.config, s.normalization, s.patch_size
        torch.manual_seed(self.cfg.seed)
        norm = choose_normalization(self.image, self.cfg.modality)
        config = NetworkConfig.of_size(self.size, norm.n_channels, max(_MIN_OUT, norm.n_channels))
        patch = auto_patch_size(self.spacing, self.image.shape, config.divisor, PATCH_VOXELS[self.size])
        return build_network(config).to(self.device), config, norm, patch

    def _centres(self, x: np.ndarray, rng: np.random.RandomState, n: int = 200_000) -> np.ndarray:
        """Flat indices of voxels to centre patches on: the scan's body, not the air around it."""
        first = x[0].reshape(-1)
        cut = np.percentile(first[:: max(1, first.size // 1_000_000)], 5)
        idx = np.flatnonzero(first > cut) if first.size <= 50_000_000 else np.flatnonzero(first[::7] > cut) * 7
        if idx.size == 0:
            idx = np.arange(first.size)
        return idx[rng.randint(0, idx.size, size=min(n, idx.size))]

    def run(self, stop: threading.Event | None = None) -> Generator[Progress, None, Pretrained]:
        """Pretrain; yield :class:`Progress` (stage ``"pretrain"``) after every step.

        Ends at ``cfg.seconds`` (counting the seconds of ``start``) or ``cfg.max_steps`` new
        steps, when ``stop`` is set (returning the state so far: Train pressed while the
        user painted), or when closed; :attr:`result` then holds the state so far.

        Raises:
            SparseSegError: the loss diverged.
        """
        import torch

        cfg = self.cfg
        t0 = time.perf_counter()
        done_steps = self.start.steps if self.start else 0
        done_seconds = self.start.seconds if self.start else 0.0
        rng = np.random.RandomState(cfg.seed + done_steps)  # a continued run draws new patches
        net, config, norm, patch = self._setup()
        x = norm.apply(self.image)
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(patch, self.image.shape, strict=True)]
        if any(b for _, b in pad):
            x = np.pad(x, pad, mode="edge")
        centres = self._centres(x, rng)
        corrupt = _corruption(cfg.task, patch, cfg.seed + done_steps)
        budget = None if cfg.seconds is None else cfg.seconds - done_seconds
        opt = adam(net.parameters(), self.device, lr=cfg.learning_rate)
        net.train()
        repeat = config.out_channels // x.shape[0]
        step = 0

        def snapshot() -> Pretrained:
            state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            return Pretrained(state, config, norm, tuple(patch), tuple(self.spacing), cfg.task, done_steps + step,
                              done_seconds + (time.perf_counter() - t0), self.fingerprint, self.size)

        try:
            while (cfg.max_steps is None or step < cfg.max_steps) and (budget is None or budget > 0):
                if stop is not None and stop.is_set():
                    break
                elapsed = time.perf_counter() - t0
                if budget is not None and step > 0 and elapsed + 0.5 * elapsed / step > budget:
                    break
                clean, dirty = [], []
                for c in centres[rng.randint(0, centres.size, size=cfg.batch_size)]:
                    pos = np.unravel_index(int(c), x.shape[1:])
                    start = [min(max(0, int(p) - s // 2 + int(rng.randint(-(s // 4), s // 4 + 1))), n - s)
                             for p, s, n in zip(pos, patch, x.shape[1:], strict=True)]
                    sl = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, patch, strict=True))
                    target = torch.from_numpy(np.ascontiguousarray(x[sl]))
                    clean.append(target.repeat(repeat, 1, 1, 1) if repeat > 1 else target)
                    dirty.append(torch.as_tensor(np.asarray(corrupt(target.clone())), dtype=torch.float32))
                xb = torch.stack(dirty).to(self.device)
                yb = torch.stack(clean).to(self.device)
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(net(xb), yb)
                if not torch.isfinite(loss):
                    raise SparseSegError(f"pretraining diverged at step {step + 1} (loss {loss.item()}); "
                                         "lower its learning rate or check the image.")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                step += 1
                total = cfg.max_steps or 0
                yield Progress("pretrain", step, total, time.perf_counter() - t0, float(loss.detach()), budget)
        finally:
            net.eval()
            if step:
                self.result = snapshot()
        return self.result if self.result is not None else snapshot()


def transfer(pretrained: Pretrained, network, config: NetworkConfig) -> int:
    """Copy the pretrained weights into a segmentation ``network`` built from ``config``.

    Every tensor is copied except those whose shape depends on the number of outputs (the
    class head), which keep their own initialisation. Returns the number of tensors copied.

    Raises:
        ConfigError: ``config`` differs from the pretrained architecture beyond its outputs.
    """
    import torch

    body = {**pretrained.config.to_dict(), "out_channels": config.out_channels}
    if body != config.to_dict():
        raise ConfigError("the pretrained state does not fit this network (another model size or input channels); "
                          "pretrain again for this model.")
    own = network.state_dict()
    copied = 0
    with torch.no_grad():
        for name, value in pretrained.state.items():
            if name in own and own[name].shape == value.shape:
                own[name].copy_(value)
                copied += 1
    return copied


def seconds_left(state: Pretrained | None, cfg: PretrainConfig) -> float:
    """Pretraining seconds still owed to a scan whose cached state is ``state``.

    Zero once less than half a step is left (the bound that ended the last run).
    """
    if cfg.seconds is None:
        return math.inf
    if state is None:
        return cfg.seconds
    left = cfg.seconds - state.seconds
    return 0.0 if left < 0.5 * state.seconds / max(1, state.steps) else left
