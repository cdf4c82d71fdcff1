"""Numpy + torch + MONAI only. Never imports napari, Qt or magicgui (a test enforces it)."""
