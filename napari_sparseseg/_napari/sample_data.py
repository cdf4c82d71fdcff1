"""npe2 sample data: the bundled abdominal CT crop with its scribbles."""

from __future__ import annotations

from napari_sparseseg._napari.layers import display_array, layer_kwargs
from napari_sparseseg.io.sample import load_sample


def sample_ct():
    """The sample CT (soft-tissue window) and its scribbles, in radiological order."""
    s = load_sample()
    geom = s["geometry"]
    image_kw = layer_kwargs(geom, "sample CT", str(s["path"] / "image.nii.gz"))
    image_kw.update(colormap="gray", contrast_limits=(-160, 240))
    scrib_kw = layer_kwargs(geom, "scribbles", str(s["path"] / "scribbles.nii.gz"))
    scrib_kw["metadata"]["class_names"] = s["class_names"]
    return [(display_array(s["image"], image_kw["metadata"]), image_kw, "image"),
            (display_array(s["scribbles"], scrib_kw["metadata"]), scrib_kw, "labels")]
