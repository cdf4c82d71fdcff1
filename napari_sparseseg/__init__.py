"""napari-sparseseg: interactive 3-D segmentation of CT/MRI from sparse scribbles.

The public Python API is the names in ``__all__``, importable from here; everything else is
internal and may change between releases. Scripts and the docs import only from here::

    import napari_sparseseg as ss

    image, geom = ss.read_image("ct.nii.gz")
    scribbles, _ = ss.read_labels("strokes.nii.gz", like=geom, what="scribbles")
    with ss.ProgressPrinter() as show:  # a tqdm bar on a terminal, one line per stage in a log
        result = ss.run_to_end(ss.train(image, scribbles, ss.TrainConfig(time_budget=60), spacing=geom.spacing), show)
        prediction = ss.run_to_end(ss.predict(result.model, image, annotations=scribbles, spacing=geom.spacing), show)
    ss.write_labels("mask.nii.gz", prediction.labels, geom)
    ss.save_model(result.model, "round1")

Importing the package is cheap: it imports nothing but this file. Each public name is looked up
on first use (module ``__getattr__``, PEP 562) in the module that defines it, so
``import napari_sparseseg`` pulls in neither torch, MONAI, napari nor Qt (the napari plugin's
manifest and ``sparseseg --help`` rely on that); torch and MONAI are imported only when a name
that needs them is first used (``train``, ``predict``, ``load_model``...).

Training and prediction (:func:`~napari_sparseseg.core.training.train.train`,
:func:`~napari_sparseseg.core.inference.predict.predict`, :class:`~napari_sparseseg.core.training.train.Trainer`)
are generators: they yield :class:`~napari_sparseseg.core.base.progress.Progress` between steps
and return their result; :func:`~napari_sparseseg.core.base.progress.run_to_end` drives one to
its end. Closing a ``Trainer.run()`` generator stops training; ``trainer.model`` then holds the
averaged weights so far. Example, one correction round by hand::

    corrections, _ = ss.read_labels("fixes.nii.gz", like=geom, what="corrections")
    trainer = ss.Trainer(image, scribbles, ss.TrainConfig(time_budget=30), corrections=corrections,
                         init=ss.load_model("round1"), spacing=geom.spacing)
    result: ss.TrainResult = ss.run_to_end(trainer.run())   # model, steps, seconds, why it stopped
    mask = ss.predict_volume(result.model, image, annotations=trainer.y, spacing=geom.spacing).labels
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it (looked up on first use; see the module docstring).
_PUBLIC = {
    # scans on disk, with their geometry
    "Geometry": "napari_sparseseg.io.geometry",
    "read_image": "napari_sparseseg.io.volumes",
    "read_labels": "napari_sparseseg.io.volumes",
    "write_labels": "napari_sparseseg.io.volumes",
    "load_sample": "napari_sparseseg.io.sample",
    # training and prediction
    "train": "napari_sparseseg.core.training.train",
    "Trainer": "napari_sparseseg.core.training.train",
    "TrainResult": "napari_sparseseg.core.training.train",
    "predict": "napari_sparseseg.core.inference.predict",
    "predict_volume": "napari_sparseseg.core.inference.predict",
    "Prediction": "napari_sparseseg.core.inference.predict",
    "Progress": "napari_sparseseg.core.base.progress",
    "ProgressPrinter": "napari_sparseseg.core.base.progress",
    "run_to_end": "napari_sparseseg.core.base.progress",
    # models on disk
    "SegModel": "napari_sparseseg.core.model.checkpoint",
    "load_model": "napari_sparseseg.io.models",
    "save_model": "napari_sparseseg.io.models",
    # an annotation session (what the widget runs), in memory and on disk
    "Session": "napari_sparseseg.core.session.state",
    "run_round": "napari_sparseseg.core.session.rounds",
    "accept_round": "napari_sparseseg.core.session.rounds",
    "load_session": "napari_sparseseg.io.sessions",
    "save_session": "napari_sparseseg.io.sessions",
    # settings
    "TrainConfig": "napari_sparseseg.core.base.config",
    "PredictConfig": "napari_sparseseg.core.base.config",
    "WeightConfig": "napari_sparseseg.core.base.config",
    "RoundSettings": "napari_sparseseg.core.base.config",
    # errors
    "SparseSegError": "napari_sparseseg.core.base.errors",
    "InputError": "napari_sparseseg.core.base.errors",
    "ScribbleError": "napari_sparseseg.core.base.errors",
    "ConfigError": "napari_sparseseg.core.base.errors",
    "DeviceError": "napari_sparseseg.core.base.errors",
    "CheckpointError": "napari_sparseseg.core.base.errors",
    "OutputError": "napari_sparseseg.core.base.errors",
    "TrainingCancelled": "napari_sparseseg.core.base.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """A public name, imported from its module on first use (then cached in this module)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sparseseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
