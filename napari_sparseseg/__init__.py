"""napari-sparseseg: interactive 3-D segmentation of CT/MRI from sparse scribbles.

Importing the package is cheap: torch and MONAI are imported only by the modules that use
them (``napari_sparseseg.core.training.train``, ``predict``, ``network``, ``checkpoint``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
