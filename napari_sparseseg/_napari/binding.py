"""Layers <-> :class:`~napari_sparseseg.core.session.state.Session`, without Qt.

The reader shows a scan as a permuted/flipped *view* of the file's own grid
(:mod:`.orientation`). A session, and everything written from it, stays on that grid: every
array crossing the boundary goes through :func:`.layers.grid_array` (layer -> session) or
:func:`.layers.display_array` (session -> layer) with the image layer's metadata. Both return
views, so a stroke painted on the display lands in the session's scribbles without a copy.

One :class:`SessionBinding` per dock widget: it creates the session from the picked image and
scribbles layers, folds strokes and prediction edits into it before a round or a save, shows a
round's result as the ``prediction`` and ``uncertainty`` layers, installs a loaded session's
layers and styles them. It runs on the GUI thread only (napari layers are not thread-safe).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from napari_sparseseg._napari.layers import (
    GEOMETRY_KEY,
    default_colors,
    display_array,
    geometry_from_layer,
    grid_array,
    layer_kwargs,
    prediction_colormap,
    scribble_colormap,
)
from napari_sparseseg._napari.orientation import AXIS_LABELS, ORIENTATION_KEY, orientation_from_metadata
from napari_sparseseg._napari.session import open_session, session_geometry
from napari_sparseseg.core.annotations.hints import checked_hint_shapes
from napari_sparseseg.core.annotations.labels import label_dtype
from napari_sparseseg.core.base.config import MAX_BOXES, MAX_CLICKS, RoundSettings
from napari_sparseseg.core.base.errors import InputError, SparseSegError
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.session.rounds import RoundResult, accept_round
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io import Geometry, check_format_limits, check_outputs, write_labels
from napari_sparseseg.io.sessions import autosave_folder, find_autosave, read_session_info

__all__ = ["PREDICTION", "SCRIBBLES", "UNCERTAINTY", "SessionBinding", "grid_shape", "image_path", "layer_geometry"]

SCRIBBLES, PREDICTION, UNCERTAINTY, PREVIEW = "scribbles", "prediction", "uncertainty", "preview (forest)"
BOXES, CLICKS = "boxes", "clicks"
BRUSH_SIZE = 3  # thin strokes: a few voxels wide, as scribbles should be
_SHARED_META = (GEOMETRY_KEY, ORIENTATION_KEY, "orientation")


def image_path(layer) -> str | None:
    """The file (or DICOM folder) a layer was read from, if any."""
    path = (layer.metadata or {}).get("source_path")
    return str(path) if path else (str(layer.source.path) if layer.source.path else None)


def layer_geometry(layer) -> Geometry:
    """The geometry of the file's own grid under a layer's (display) data."""
    return geometry_from_layer(np.shape(layer.data), layer.metadata, layer.scale, layer.translate)


def grid_shape(layer) -> tuple[int, int, int]:
    """Shape of a 3-D layer's data on the file's own grid."""
    return orientation_from_metadata(layer.metadata).grid_shape(np.shape(layer.data))


def kwargs_like(image, name: str) -> dict:
    """Layer keyword arguments of a volume shown exactly over ``image`` (transform, geometry, orientation)."""
    meta = {k: copy.deepcopy(v) for k, v in (image.metadata or {}).items() if k in _SHARED_META}
    return {"name": name, "scale": tuple(image.scale), "translate": tuple(image.translate), "metadata": meta}


class SessionBinding:
    """The session of one image + scribbles pair in a viewer, and the layers that show it.

    Args:
        viewer: the napari viewer.
        on_stroke: called after every finished stroke in the scribbles or prediction layer.

    Attributes:
        session: the current session (``None`` until :meth:`bind` or :meth:`install`).
        image_layer: the image layer of :attr:`session`.
        scribbles_layer: the scribbles layer of :attr:`session`.
    """

    def __init__(self, viewer, on_stroke: Callable[[], None] | None = None):
        self.viewer = viewer
        self.on_stroke = on_stroke
        self.session: Session | None = None
        self.image_layer = None
        self.scribbles_layer = None
        self._watched: weakref.WeakSet = weakref.WeakSet()
        self._features: tuple | None = None  # (weak image layer, its FeatureCache)

    # ------------------------------------------------------------------ layers
    def layer(self, name: str):
        """The viewer's layer called ``name``, or ``None``."""
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def prediction_layer(self):
        """The ``prediction`` Labels layer, or ``None``."""
        return self.layer(PREDICTION)

    def is_bound(self, image, scribbles=None) -> bool:
        """Whether the session belongs to ``image`` (and ``scribbles`` when given)."""
        return self.session is not None and self.image_layer is image and (scribbles is None or self.scribbles_layer is scribbles)

    def to_grid(self, data) -> np.ndarray:
        """The file-grid view of display data over the session's image."""
        return grid_array(data, self.image_layer.metadata)

    def to_display(self, grid) -> np.ndarray:
        """The display view, over the session's image, of an array on the file's grid."""
        return display_array(grid, self.image_layer.metadata)

    @staticmethod
    def check_image(image) -> None:
        """Raise :class:`InputError` unless ``image`` is a single-channel 3-D image layer."""
        if image is None:
            raise InputError("No image: open a CT/MRI volume (File > Open or File > Open Sample) and select it in 'Image'.")
        if image.ndim != 3 or image.multiscale or image.rgb:
            raise InputError(f"'{image.name}' is not a single-channel 3-D volume; pick a 3-D CT/MRI image layer.")

    def new_scribbles_layer(self, image, colors: list[str]):
        """Add an empty uint8 scribbles layer over ``image`` (same shape, transform and metadata)."""
        self.check_image(image)
        name = SCRIBBLES if SCRIBBLES not in self.viewer.layers else f"{SCRIBBLES} ({image.name})"
        layer = self.viewer.add_labels(np.zeros(np.shape(image.data), np.uint8), **kwargs_like(image, name))
        self.style_scribbles(layer, colors)
        layer.mode = "paint"
        return layer

    def style_scribbles(self, layer, colors: list[str]) -> None:
        """Class colours, painting on the slice shown (any orientation), autosave after strokes."""
        layer.colormap = scribble_colormap(colors)
        layer.n_edit_dimensions = 2
        if layer.selected_label < 1 or layer.selected_label > len(colors):
            layer.selected_label = 1
        self._watch(layer)

    def set_classes(self, scribbles, names: list[str], colors: list[str]) -> None:
        """Show new class names/colours in the scribbles and prediction layers and the session."""
        if scribbles is not None:
            scribbles.colormap = scribble_colormap(colors)
            scribbles.metadata["class_names"] = list(names)
        if self.prediction_layer is not None:
            self.prediction_layer.colormap = prediction_colormap(colors)
        if self.session is not None:
            self.session.class_names, self.session.colors = list(names), list(colors)

    @staticmethod
    def stroke_count(scribbles, value: int) -> int:
        """Voxels of ``scribbles`` painted with ``value``."""
        return 0 if scribbles is None else int(np.count_nonzero(np.asarray(scribbles.data) == value))

    @staticmethod
    def shift_down(scribbles, value: int) -> None:
        """After class ``value`` was removed: values above it move down by one (in place)."""
        if scribbles is None:
            return
        data = np.asarray(scribbles.data)
        data[data > value] -= 1
        scribbles.refresh()

    @staticmethod
    def scan(image) -> tuple[np.ndarray, tuple]:
        """The image layer's voxels on the file's grid (a view) and its spacing, array order."""
        return grid_array(image.data, image.metadata), tuple(layer_geometry(image).spacing)

    def show_orientation(self, image) -> str | None:
        """Label the viewer's axes with the anatomical directions of a reoriented scan; returns the note."""
        note = (image.metadata or {}).get("orientation")
        if ORIENTATION_KEY in (image.metadata or {}) and self.viewer.dims.ndim >= 3:
            labels = tuple(self.viewer.dims.axis_labels)
            self.viewer.dims.axis_labels = labels[: len(labels) - 3] + AXIS_LABELS
        return note

    # ------------------------------------------------------------------ session
    def features_for(self, image) -> FeatureCache:
        """The forest-feature cache of ``image``: the one its sessions get, and a head start fills.

        One image's at a time (memory: one scan's features): asking for another image's
        empties the previous one, which its session then fills again if it needs it.
        """
        if self._features is None or self._features[0]() is not image:
            if self._features is not None:
                self._features[1].clear()
            self._features = (weakref.ref(image), FeatureCache())
        return self._features[1]

    def bind(self, image, scribbles, class_names: list[str], colors: list[str]) -> Session:
        """The session of ``image`` + ``scribbles``, created on first use.

        A new pair keeps the model and history when the image is the same (new scribbles on
        the same scan). The session's image and scribbles are file-grid views of the layers.

        Raises:
            InputError: no image or scribbles layer, not a 3-D volume, or shapes that differ.
        """
        self.check_image(image)
        if scribbles is None:
            raise InputError("No scribbles layer: press 'New' next to Scribbles, then paint background and at least one structure.")
        if tuple(scribbles.data.shape) != tuple(np.shape(image.data)):
            raise InputError(f"The scribbles layer '{scribbles.name}' has shape {tuple(scribbles.data.shape)} but the image "
                             f"'{image.name}' has {tuple(np.shape(image.data))}; press 'New' to create scribbles on the image's grid.")
        meta = image.metadata
        if self.is_bound(image, scribbles) and np.shares_memory(grid_array(scribbles.data, meta), self.session.scribbles):
            return self.session
        if not isinstance(scribbles.data, np.ndarray) or not np.issubdtype(scribbles.data.dtype, np.integer):
            data = np.asarray(scribbles.data)
            scribbles.data = data.astype(label_dtype(data.max(initial=0)))
        geom = layer_geometry(image)
        model = self.session.model if self.is_bound(image) else None
        history = self.session.history if model is not None else []
        self.session = Session(grid_array(image.data, meta), grid_array(scribbles.data, meta), list(class_names),
                               tuple(geom.spacing), geom.to_dict(), image_path(image), list(colors), model=model, history=history,
                               features=self.features_for(image))
        self.image_layer, self.scribbles_layer = image, scribbles
        pred = self.prediction_layer
        if model is not None and pred is not None and pred.data.shape == scribbles.data.shape:
            self.session.set_prediction(self.to_grid(pred.data))
        return self.session

    def sync(self, class_names: list[str], colors: list[str], settings: RoundSettings) -> Session:
        """Before a round or a save: fold strokes in either layer into the session's corrections.

        Also copies the class table and settings into the session.
        """
        s = self.session
        pred = self.prediction_layer
        edited = None
        if pred is not None and s.prediction is not None and pred.data.shape == self.scribbles_layer.data.shape:
            edited = self.to_grid(pred.data)
        s.absorb_edits(edited)
        scr = self.scribbles_layer
        if not np.shares_memory(self.to_grid(scr.data), s.scribbles):  # widened for a new class value
            scr.data = self.to_display(s.scribbles)
        scr.refresh()
        s.class_names, s.colors, s.settings = list(class_names), list(colors), settings
        s.hint_shapes = self.read_hint_shapes(strict=False)  # stored with the session; cheap (no pseudo-labels)
        return s

    def accept(self, result: RoundResult, class_names: list[str], colors: list[str], settings: RoundSettings) -> None:
        """Apply a finished round: strokes painted meanwhile are kept, the prediction is shown."""
        self.sync(class_names, colors, settings)
        accept_round(self.session, result)
        if result.prediction is not None:
            # The early mask goes when the round is idle (drop_preview): removing a layer of a
            # clinical CT holds the GUI thread 0.3 s, so not on the turn that adds the prediction.
            self.show_prediction(result.prediction.labels)  # the uncertainty: show_uncertainty, a moment later

    # ------------------------------------------------------------------ hints
    def add_hint_layer(self, kind: str, label: int):
        """A ``boxes`` (Shapes, rectangles) or ``clicks`` (Points) layer over the image, or the one there.

        New shapes and points get class ``label`` (mask convention: 0 = background, clicks only).
        """
        name = BOXES if kind == "boxes" else CLICKS
        layer = self.layer(name)
        if layer is None:
            kw = kwargs_like(self.image_layer, name)
            if kind == "boxes":
                layer = self.viewer.add_shapes(ndim=3, shape_type="rectangle", edge_width=1, face_color="transparent",
                                               features={"class": np.zeros(0, int)}, **kw)
                layer.mode = "add_rectangle"
            else:
                layer = self.viewer.add_points(ndim=3, size=4, features={"class": np.zeros(0, int)}, **kw)
                layer.mode = "add"
        self.set_hint_class(label)
        self.viewer.layers.selection.active = layer
        return layer

    def paint_class(self, layer, value: int) -> None:
        """Make ``layer`` (the scribbles) the active layer, painting scribble ``value``."""
        if layer is not None:
            layer.selected_label = value
            self.viewer.layers.selection.active = layer
            layer.mode = "paint"

    def set_hint_class(self, label: int) -> None:
        """The class new boxes and clicks get (boxes need a structure: background is skipped for them)."""
        for name in (BOXES, CLICKS):
            layer = self.layer(name)
            if layer is not None and (name == CLICKS or label >= 1):
                layer.feature_defaults["class"] = int(label)

    def _to_grid_index(self, points) -> np.ndarray:
        """Display voxel indices ``(n, 3)`` of the image -> indices on the file's grid."""
        o = orientation_from_metadata(self.image_layer.metadata)
        return o.to_grid_index(points, np.shape(self.image_layer.data))

    def read_hint_shapes(self, strict: bool = True) -> dict:
        """The boxes and clicks of the ``boxes``/``clicks`` layers, on the file's grid.

        The session stores them as :func:`~napari_sparseseg.core.annotations.hints.checked_hint_shapes`
        reads them: a rectangle's corners as drawn, a click's point. ``strict``: a hint with an
        unusable class raises; otherwise (the autosave after a stroke) it is left out, so one
        bad box never stops the strokes being saved. At most ``MAX_BOXES`` boxes and
        ``MAX_CLICKS`` clicks (``core/base/config.py``), as a session file may hold; beyond them
        ``strict`` raises, otherwise the first ones are kept.

        Raises:
            InputError: ``strict`` and a box or click with an unusable class, or too many.
        """
        items = {"boxes": [], "clicks": []}
        for name, kind, key in ((BOXES, "boxes", "vertices"), (CLICKS, "clicks", "point")):
            layer = self.layer(name)
            if layer is None or not len(layer.data):
                continue
            for data, label in zip(layer.data, layer.features["class"], strict=True):
                grid = self._to_grid_index(data)
                item = {"class": int(label), key: grid.tolist() if kind == "boxes" else grid[0].tolist()}
                try:
                    items[kind] += checked_hint_shapes({kind: [item]})[kind]
                except InputError:
                    if strict:
                        raise
        for kind, most in (("boxes", MAX_BOXES), ("clicks", MAX_CLICKS)):  # what a session file may hold
            if len(items[kind]) > most:
                if strict:
                    raise InputError(f"{len(items[kind])} {kind} are drawn, more than the {most} a round takes; remove "
                                     "some.")
                items[kind] = items[kind][:most]
        return items

    def _show_hint_shapes(self, shapes: dict) -> None:
        """Layers for a loaded session's boxes and clicks (a layer already holding hints is kept)."""
        o = orientation_from_metadata(self.image_layer.metadata)
        grid = grid_shape(self.image_layer)
        for kind, key in (("boxes", "vertices"), ("clicks", "point")):
            items = shapes.get(kind) or []
            if not items or self.layer(BOXES if kind == "boxes" else CLICKS) is not None:
                continue
            layer = self.add_hint_layer(kind, 1)
            data = [o.to_display_index(item[key], grid) for item in items]
            layer.data = data if kind == "boxes" else np.concatenate(data)
            layer.features = {"class": np.array([item["class"] for item in items], dtype=int)}
            layer.mode = "pan_zoom"

    def describe_slice(self, axis: int, index: int) -> tuple[str, int]:
        """The anatomical plane of grid ``axis`` and the slider position of its slice ``index``."""
        _, display_index = self._display_slice(axis, index)
        return layer_geometry(self.image_layer).plane(axis), display_index

    def _display_slice(self, axis: int, index: int) -> tuple[int, int]:
        o = orientation_from_metadata(self.image_layer.metadata)
        return o.to_display_slice(axis, index, grid_shape(self.image_layer))

    def go_to_slice(self, axis: int, index: int) -> None:
        """Show slice ``index`` across grid ``axis`` of the image in 2-D, whatever the display order."""
        d, display_index = self._display_slice(axis, index)
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            dims.ndisplay = 2
        rest = [a for a in dims.order if a != d]
        dims.order = (d, *rest)
        position = [0.0, 0.0, 0.0]
        position[d] = float(display_index)
        dims.set_point(d, float(self.image_layer.data_to_world(position)[d]))

    def show_prediction(self, labels: np.ndarray, uncertainty: np.ndarray | None = None) -> None:
        """Show file-grid ``labels`` (class colours, background transparent) and ``uncertainty`` (hidden)."""
        shown = self.to_display(labels)
        pred = self.prediction_layer
        preview = self.layer(PREVIEW)
        if pred is None and preview is not None and preview.data.shape == shown.shape:
            # The round's early mask becomes its prediction: on a clinical CT adding a layer and
            # removing another held the GUI thread about a second; new data and a name do not.
            pred = preview
            pred.name, pred.editable = PREDICTION, True
        if pred is not None and pred.data.shape == shown.shape:
            pred.data = shown
        else:
            if pred is not None:
                self.viewer.layers.remove(pred)
            pred = self._under_scribbles(Labels(shown, opacity=0.45, **kwargs_like(self.image_layer, PREDICTION)))
        pred.n_edit_dimensions = 2
        self._watch(pred)
        pred.colormap = prediction_colormap(self.session.colors or default_colors(len(self.session.class_names)))
        if uncertainty is not None:
            self.show_uncertainty(uncertainty)
        self._raise_scribbles()

    def show_uncertainty(self, uncertainty: np.ndarray) -> None:
        """Show file-grid ``uncertainty`` (normalised entropy) as the hidden ``uncertainty`` layer.

        As it comes (float16 from a prediction): napari shows it so, and a float32 copy of a
        clinical CT's took the GUI thread 0.8 s. Nothing when the scan's layer is gone.
        """
        if self.image_layer is None:
            return
        self._put_layer(UNCERTAINTY, self.to_display(uncertainty), self._add_uncertainty)
        self._raise_scribbles()

    def prepare_uncertainty(self) -> None:
        """Add the hidden ``uncertainty`` layer, empty, for the round's result to fill in place.

        Adding an Image layer builds its Qt controls (the colormap list above all): 0.2-0.3 s of
        the GUI thread under software OpenGL. Called when a round starts, that is a response to
        the Train click; when the round's result arrives the layer only gets new data. The
        placeholder is a read-only broadcast zero (no memory). Nothing when the layer is there.
        """
        if self.image_layer is None:
            return
        shape = tuple(np.shape(self.image_layer.data))
        layer = self.layer(UNCERTAINTY)
        if layer is not None and tuple(layer.data.shape) == shape:
            return
        self._put_layer(UNCERTAINTY, np.broadcast_to(np.float16(0), shape), self._add_uncertainty)
        self._raise_scribbles()

    def _add_uncertainty(self, data):
        return self._under_scribbles(Image(data, colormap="magma", contrast_limits=(0, 1), visible=False, blending="additive",
                                           **kwargs_like(self.image_layer, UNCERTAINTY)))

    def _put_layer(self, name: str, data: np.ndarray, add: Callable):
        """The layer ``name`` showing ``data``: updated in place if its shape fits, else (re)added with ``add``."""
        layer = self.layer(name)
        if layer is not None and layer.data.shape == data.shape:
            layer.data = data
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        return add(data)

    def _raise_scribbles(self) -> None:
        """Keep the scribbles on top (and active) so strokes stay visible over a mask.

        Each move and each change of the active layer rebuilds napari's layer controls (0.1 s
        and more under software OpenGL), so neither is done when it would change nothing.
        """
        layers, scr = self.viewer.layers, self.scribbles_layer
        if scr is None or scr not in layers:
            return
        if layers.index(scr) != len(layers) - 1:
            layers.move(layers.index(scr), len(layers))
        if layers.selection.active is not scr:
            layers.selection.active = scr

    def _under_scribbles(self, layer):
        """Add ``layer`` right under the scribbles (on top without them): no layer has to move over it."""
        layers, scr = self.viewer.layers, self.scribbles_layer
        if scr is not None and scr in layers:
            layers.insert(layers.index(scr), layer)
        else:
            layers.append(layer)
        return layer

    def show_preview(self, labels: np.ndarray) -> None:
        """Show the early mask of a round (file grid) as a read-only layer until the round ends."""
        if self.image_layer is None:
            return
        layer = self._put_layer(PREVIEW, self.to_display(labels), lambda d: self._under_scribbles(Labels(
            d, opacity=0.45, **kwargs_like(self.image_layer, PREVIEW))))
        layer.editable = False  # the round's prediction replaces it; edits would be lost
        layer.colormap = prediction_colormap(self.session.colors or default_colors(len(self.session.class_names)))
        self._raise_scribbles()

    def drop_preview(self) -> None:
        """Remove the early mask (the round ended)."""
        layer = self.layer(PREVIEW)
        if layer is not None:
            self.viewer.layers.remove(layer)

    def reset_model(self) -> None:
        """Forget the model; the next round trains a fresh network (annotations kept)."""
        if self.session is not None:
            self.session.model = None

    def export_mask(self, path) -> Path:
        """Write the (possibly edited) prediction on the scan's own grid and geometry (a ``.dcm`` path: a DICOM SEG).

        Raises:
            SparseSegError: no prediction yet, or the file cannot be written.
        """
        pred = self.prediction_layer
        if pred is None or self.session is None:
            raise SparseSegError("there is no prediction to export yet; train a model first.")
        # The safety contract: never onto the scan or its scribbles' files (any path or link to them).
        inputs = {"scan": self.session.image_path, "scribbles": image_path(self.scribbles_layer) if self.scribbles_layer is not None else None}
        check_outputs({"mask": path}, inputs)
        check_format_limits({"mask": path}, self.session.scribbles.shape, len(self.session.class_names))
        # A .dcm path is a DICOM SEG of the scan's series (check_outputs refused it for any other scan).
        return Path(write_labels(path, self.to_grid(pred.data), session_geometry(self.session),
                                 source=self.session.image_path, class_names=self.session.class_names))

    # ------------------------------------------------------------------ files
    def autosave_target(self) -> tuple[Session, Path]:
        """The session (synced by the caller) and its autosave folder."""
        s = self.session
        return s, autosave_folder(self.image_layer.name, s.scribbles.shape, s.image_path)

    def autosave_offer(self, image) -> tuple[Path, str] | None:
        """``(folder, saved time)`` of an autosaved session of ``image`` not open now, else ``None``."""
        if image is None or image.ndim != 3 or self.is_bound(image):
            return None
        folder = find_autosave(image.name, grid_shape(image), image_path(image))
        if folder is None:
            return None
        try:
            return folder, str(read_session_info(folder).get("saved", "?"))
        except SparseSegError:
            return None  # unreadable or from another version: nothing to offer

    def find_image_for(self, folder):
        """The open image layer of a saved session's scan (same file, same grid), or ``None``."""
        try:
            meta = read_session_info(folder)
        except SparseSegError:
            return None  # open_session reports what is wrong

        for lay in self.viewer.layers:
            p = image_path(lay) if isinstance(lay, Image) and lay.ndim == 3 else None
            if p and meta.get("image_path") and Path(p).resolve() == Path(meta["image_path"]).resolve() \
                    and list(grid_shape(lay)) == list(meta.get("shape", [])):
                return lay
        return None

    def load(self, folder) -> tuple[Session, object]:
        """Read a saved session, reusing its scan's image layer when open; ``(session, layer or None)``.

        Raises:
            SparseSegError: not a session, corrupt, or its scan is gone.
        """
        image = self.find_image_for(folder)
        s = open_session(folder, image=None if image is None else grid_array(image.data, image.metadata))
        return s, image

    def install(self, session: Session, image=None) -> tuple:
        """Show a loaded session: its image (added when ``None``), scribbles and prediction.

        Strokes already in a layer are never overwritten: the session's scribbles get their own
        layer unless the ``scribbles`` layer is empty. Returns ``(image layer, scribbles layer)``.
        """
        if image is None:
            name = Path(session.image_path).name if session.image_path else "scan"
            kw = layer_kwargs(session_geometry(session), name, session.image_path)
            image = self.viewer.add_image(display_array(session.image, kw["metadata"]), colormap="gray", **kw)
        shown = display_array(session.scribbles, image.metadata)
        scr = self.layer(SCRIBBLES)
        if scr is not None and scr.data.shape == shown.shape and not np.asarray(scr.data).any():
            scr.data = shown
        else:
            scr = self.viewer.add_labels(shown, **kwargs_like(image, SCRIBBLES if scr is None else f"{SCRIBBLES} (session)"))
        session.features = self.features_for(image)
        self.session, self.image_layer, self.scribbles_layer = session, image, scr
        if session.prediction is not None:
            self.show_prediction(np.array(session.prediction, copy=True))
        self._show_hint_shapes(session.hint_shapes)
        self.viewer.layers.selection.active = scr  # painting goes on in the scribbles
        return image, scr

    # ------------------------------------------------------------------ strokes
    def _watch(self, layer) -> None:
        if layer in self._watched:
            return
        self._watched.add(layer)
        layer.brush_size = BRUSH_SIZE
        layer.events.paint.connect(self._stroke)

    def _stroke(self, event=None) -> None:
        if self.on_stroke is not None:
            self.on_stroke()
