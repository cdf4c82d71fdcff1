"""The annotation session: edits become corrections, rounds, Stop, save/load, autosave paths."""

import json
import threading

import numpy as np
import pytest

from napari_sparseseg.core.base.config import PredictConfig, RoundSettings, TrainConfig
from napari_sparseseg.core.base.errors import CheckpointError, InputError, ScribbleError
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.session.rounds import accept_round, run_round
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
from napari_sparseseg.io.sessions import autosave_folder, find_autosave, load_session, save_session

NAMES = ["background", "ball", "box"]


def _cfg(**kw):
    base = dict(max_steps=3, time_budget=None, patch_size=(16, 16, 16), device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def session(phantom):
    image, ref = phantom
    return Session(image, simulate_scribbles(ref, k=1, seed=0), NAMES, spacing=(1.0, 1.0, 1.0)), ref


def test_edits_after_a_prediction_become_weighted_corrections(session):
    s, ref = session
    res = run_to_end(run_round(s, _cfg(), PredictConfig(device="cpu")))
    accept_round(s, res)
    assert s.model is not None and s.prediction.shape == ref.shape and len(s.history) == 1
    assert s.absorb_edits() == 0 and not s.corrected.any()  # nothing painted yet

    # A stroke in the scribbles after the prediction is a correction.
    s.scribbles[20, 15, 25:30] = 2
    # A repaint of the prediction layer: those voxels become corrections with the new class.
    edited = s.prediction.copy()
    edited[20, 34, 10:16] = np.where(s.prediction[20, 34, 10:16] == 2, 1, 2)  # a class other than predicted
    changed_in_pred = edited != s.prediction
    n = s.absorb_edits(edited)
    assert n == int(changed_in_pred.sum()) + 5 - int((changed_in_pred[20, 15, 25:30]).sum())
    assert (s.scribbles[20, 34, 10:16] == edited[20, 34, 10:16] + 1).all() and s.corrected[20, 34, 10:16].all()
    assert s.corrected[20, 15, 25:30].all()
    corr = s.corrections
    assert (corr[s.corrected] == s.scribbles[s.corrected]).all() and (corr[~s.corrected] == 0).all()
    # Erasing a correction makes the voxel unlabelled again, not a correction.
    s.scribbles[20, 15, 25] = 0
    s.absorb_edits()
    assert not s.corrected[20, 15, 25]

    # The next round warm-starts and its targets include the corrections at weight 3.
    from napari_sparseseg.core.training.train import Trainer

    t = Trainer(s.image, s.scribbles, _cfg(), corrections=s.corrections, init=s.model, class_names=NAMES)
    assert (t.source[s.corrected] == 2).all() and (t.source[(s.scribbles > 0) & ~s.corrected] == 1).all()


def test_a_round_brings_the_sessions_own_mask_and_counts_the_strokes_it_trained_on(session):
    """Accepting a round copies nothing of the scan's size: the round made the session's mask.

    The shown mask (``prediction.labels``, which a layer edits in place) and the session's are
    different arrays, so an edit of the layer is still seen as one; the history counts the
    strokes the round trained on, not a stroke painted while it ran.
    """
    s, ref = session
    gen = run_round(s, _cfg(), PredictConfig(device="cpu", uncertainty=False))
    next(gen)  # started: the round has its copy of the strokes
    before = s.labelled_counts()
    s.scribbles[20, 15, 25:30] = 2  # painted while the round runs
    res = run_to_end(gen)
    assert res.kept_labels is not None and np.array_equal(res.kept_labels, res.prediction.labels)
    assert not np.shares_memory(res.kept_labels, res.prediction.labels)
    accept_round(s, res)
    assert s.prediction is res.kept_labels  # no copy when accepted
    assert s.history[-1]["labelled"] == before["per_class"] != s.labelled_counts()["per_class"]
    shown = res.prediction.labels
    shown[20, 34, 10:16] = np.where(shown[20, 34, 10:16] == 2, 1, 2)  # the user repaints the shown mask
    assert s.absorb_edits(shown) > 0 and s.corrected[20, 34, 10:16].all()


def test_stop_keeps_model_and_still_predicts(session):
    s, ref = session
    stop = threading.Event()
    gen = run_round(s, _cfg(max_steps=1000), PredictConfig(device="cpu"), stop=stop)
    seen = 0
    while True:
        try:
            p = next(gen)
        except StopIteration as done:
            res = done.value
            break
        if p.stage == "train" and p.step > 0:  # step 0: the forest was fitted
            seen += 1
            if seen == 3:
                stop.set()
    assert res.stopped == "training" and res.train.steps == 3 and res.train.stopped_by == "cancelled"
    assert res.prediction is not None and res.prediction.labels.shape == ref.shape
    accept_round(s, res)
    assert s.history[-1]["stopped_by"] == "cancelled" and s.history[-1]["steps"] == 3


def test_a_round_keeps_its_features_in_its_own_session(session):
    """A round computes the forest's features once, into its session's cache; another session's stays empty."""
    s, ref = session
    other = Session(s.image.copy(), simulate_scribbles(ref, k=1, seed=1), NAMES, spacing=(1.0, 1.0, 1.0))
    assert s.features is not other.features
    result = run_to_end(run_round(s, _cfg(max_steps=1), PredictConfig(device="cpu", uncertainty=False)))
    ranges = result.model.normalization.ranges(s.image)
    assert s.features.has(s.image, ranges, s.spacing)
    assert not other.features.has(other.image, ranges, other.spacing)


def test_round_rejects_classes_outside_the_table(phantom):
    image, ref = phantom
    s = Session(image, simulate_scribbles(ref, k=1, seed=0), ["background", "ball"])
    with pytest.raises(ScribbleError, match="class table has only 2"):
        run_to_end(run_round(s, _cfg()))
    s.scribbles[s.scribbles > 1] = 0
    with pytest.raises(ScribbleError):
        run_to_end(run_round(s, _cfg()))  # background only


def test_save_load_restores_everything(session, tmp_path):
    s, ref = session
    accept_round(s, run_to_end(run_round(s, _cfg(), PredictConfig(device="cpu"))))
    s.scribbles[20, 15, 25:30] = 2
    s.absorb_edits()
    s.colors = ["#000000", "#ff0000", "#00ff00"]
    s.settings = RoundSettings(time_budget=12)
    save_session(s, tmp_path / "sess")
    assert (tmp_path / "sess" / "image.npy").is_file()  # no image_path: the image is stored
    back = load_session(tmp_path / "sess")
    assert np.array_equal(back.image, s.image) and np.array_equal(back.scribbles, s.scribbles)
    assert np.array_equal(back.corrected, s.corrected) and np.array_equal(back.prediction, s.prediction)
    assert back.class_names == NAMES and back.colors == s.colors and back.settings == RoundSettings(time_budget=12)
    assert back.history == json.loads(json.dumps(s.history))
    a = run_to_end(run_round(back, train=False, predict_cfg=PredictConfig(device="cpu")))
    b = run_to_end(run_round(s, train=False, predict_cfg=PredictConfig(device="cpu")))
    assert np.array_equal(a.prediction.labels, b.prediction.labels)  # same weights
    # Painting after the reload still counts as a correction.
    back.scribbles[10, 10, 10] = 1
    assert back.absorb_edits() == 1

    with pytest.raises(ScribbleError, match="drawn on"):
        load_session(tmp_path / "sess", image=np.zeros((3, 3, 3), np.float32))
    meta = json.loads((tmp_path / "sess" / "session.json").read_text())
    (tmp_path / "sess" / "session.json").write_text(json.dumps({**meta, "hints": {"boxes": [{"class": 1, "vertices": "x"}]}}))
    with pytest.raises(CheckpointError, match="corrupt session: in session.json, a box needs three numbers"):
        load_session(tmp_path / "sess")
    (tmp_path / "sess" / "session.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt session"):
        load_session(tmp_path / "sess")
    with pytest.raises(CheckpointError, match="not a napari-sparseseg session"):
        load_session(tmp_path)


def test_autosave_folder_is_per_image(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESEG_AUTOSAVE_DIR", str(tmp_path))
    a = autosave_folder("ct", (4, 5, 6), "/data/a/ct.nii.gz")
    assert a.parent == tmp_path and a.name.startswith("ct.nii.gz-")
    assert a != autosave_folder("ct", (4, 5, 6), "/data/b/ct.nii.gz") != autosave_folder("ct", (4, 5, 7), "/data/a/ct.nii.gz")
    assert find_autosave("ct", (4, 5, 6), "/data/a/ct.nii.gz") is None
    save_session(Session(np.zeros((4, 5, 6), np.float32), np.zeros((4, 5, 6), np.uint8), image_path="/data/a/ct.nii.gz"), a)
    assert find_autosave("ct", (4, 5, 6), "/data/a/ct.nii.gz") == a
    assert not (a / "image.npy").exists()  # referenced by path, not copied


def test_drawn_boxes_and_clicks_are_stored_and_train_the_next_round(session, tmp_path):
    s0, ref = session
    ball = np.argwhere(ref == 1)
    lo, hi = ball.min(0), ball.max(0)
    shapes = {"boxes": [{"class": 2, "vertices": [[20, 5, 5], [20, 12, 5], [20, 12, 12], [20, 5, 12]]}],
              "clicks": [{"class": 1, "point": (lo + hi) / 2}]}
    s = Session(s0.image, np.zeros_like(s0.scribbles), NAMES, hint_shapes=shapes)
    assert s.hint_shapes["clicks"][0]["point"] == list((lo + hi) / 2)  # checked and normalised to lists
    save_session(s, tmp_path / "sess")
    back = load_session(tmp_path / "sess")
    assert back.hint_shapes == s.hint_shapes
    hints = back.drawn_hints()
    centre = tuple(int(v) for v in (lo + hi) // 2)
    assert hints[centre] == 2 and (hints[20] == 3).any() and not (hints[:19] == 3).any()  # click blob, one-slice box
    with pytest.raises(InputError, match="class of a box"):
        Session(s.image, s.scribbles, NAMES, hint_shapes={"boxes": [{"class": 0, "vertices": [[1, 1, 1]]}]})
