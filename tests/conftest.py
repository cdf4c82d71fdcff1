import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return REPO / "napari_sparseseg" / "data" / "ct_abdomen_crop"  # the package data (sample_data/ links here)


def make_phantom(shape=(40, 48, 48), seed=0):
    """Two blobs of different intensity in a noisy, smoothly varying background.

    Returns ``(image, reference)``: reference 0 = background, 1 = bright ball, 2 = dark box.
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    ref = np.zeros(shape, np.uint8)
    ball = (zz - 20) ** 2 + (yy - 15) ** 2 + (xx - 31) ** 2 < 10**2
    box = (np.abs(zz - 20) < 9) & (np.abs(yy - 34) < 8) & (np.abs(xx - 14) < 9)
    ref[ball] = 1
    ref[box] = 2
    image = 100 + 20 * np.sin(xx / 9.0) + rng.normal(0, 12, shape)
    image[ball] += 120
    image[box] -= 90
    return image.astype(np.float32), ref


def make_cohort_files(d: Path, sample_dir: Path, data_dir: Path, bad: bool = True) -> Path:
    """A CT model trained a few steps on the sample (``d/model``) and a cohort of real scans (``d/scans``).

    Scans: the sample, the abdominal CT, a cropped and brightened sample as NRRD (another grid,
    origin and format) and, with ``bad``, a corrupt file and an MRI (another modality than
    the model). ``d/strokes/sample_scribbles.nii.gz`` holds the sample's strokes.
    """
    import shutil

    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.io import Geometry, read_image, read_labels, write_image
    from napari_sparseseg.io.models import save_model

    image, g = read_image(sample_dir / "image.nii.gz")
    scribbles, _ = read_labels(sample_dir / "scribbles.nii.gz", like=g)
    trainer = Trainer(image, scribbles, TrainConfig(max_steps=4, time_budget=None, device="cpu", forest=False),
                      spacing=g.spacing)
    save_model(run_to_end(trainer.run()).model, d / "model")
    scans = d / "scans"
    scans.mkdir()
    shutil.copy(sample_dir / "image.nii.gz", scans / "sample.nii.gz")
    shutil.copy(data_dir / "ct_abdomen_image.nii.gz", scans / "abdomen.nii.gz")
    crop = (image[4:, :, 6:] + 25).astype(np.int16)  # another grid, origin and format; brighter
    affine = g.affine.copy()
    affine[:3, 3] = g.index_to_world((4, 0, 6))
    write_image(scans / "shifted.nrrd", crop, Geometry(affine, crop.shape))
    if bad:
        (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a scan")
        shutil.copy(data_dir / "mr_abdomen_image.nii.gz", scans / "mri.nii.gz")
    strokes = d / "strokes"
    strokes.mkdir()
    shutil.copy(sample_dir / "scribbles.nii.gz", strokes / "sample_scribbles.nii.gz")
    return d


def tree_hash(folder) -> dict:
    """Snapshot of a folder: relative path -> sha256 of the bytes, 'dir', or 'link -> target' (links not followed).

    Two snapshots are equal only when nothing under the folder was added, removed, replaced or relinked.
    """
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = "link -> " + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def tiny_model(forest=False):
    """A two-class CT model small enough to save and load in milliseconds (with a 4-tree forest if asked)."""
    from napari_sparseseg.core.model.checkpoint import SegModel
    from napari_sparseseg.core.model.forest import N_FEATURES, StrokeForest
    from napari_sparseseg.core.model.intensity import Normalization
    from napari_sparseseg.core.model.network import NetworkConfig, build_network

    norm = Normalization("ct")
    cfg = NetworkConfig(norm.n_channels, 2, channels=(2, 4), strides=(2,), num_res_units=0)
    trees = None
    if forest:
        samples = np.random.default_rng(0).normal(size=(20, N_FEATURES)).astype(np.float16)
        trees = StrokeForest(samples, np.arange(20, dtype=np.uint8) % 2, 2, 4, 0, 0.5)
    return SegModel(build_network(cfg), cfg, norm, ["background", "organ"], (8, 8, 8), forest=trees)


@pytest.fixture
def phantom():
    return make_phantom()


def pytest_collection_modifyitems(config, items):
    # GUI tests need a display; skip them cleanly when none is available.
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    skip = pytest.mark.skip(reason="no display; run under xvfb-run")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _pretraining_cache(tmp_path_factory, monkeypatch):
    """Keep every test's pretraining and feature caches out of the user's ~/.cache (subprocesses inherit them)."""
    monkeypatch.setenv("SPARSESEG_CACHE", str(tmp_path_factory.mktemp("pretrain-cache")))
    monkeypatch.setenv("SPARSESEG_FEATURE_CACHE", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in the tests, also when they run as a background job.

    A shell starts a background job (``nohup ... &``) with SIGINT ignored, and Python then
    installs no handler of its own: the tests that send SIGINT to check how a command ends
    would see nothing happen.
    """
    import signal

    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
