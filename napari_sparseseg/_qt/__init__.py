"""Dock widgets: the only place that imports qtpy / napari.qt."""
