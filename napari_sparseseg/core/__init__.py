"""Compute only: numpy, torch and MONAI; never napari, Qt, nibabel or SimpleITK, and never a file (that is ``io``).

Rooms, each a subpackage with one job, from the bottom up (a room imports only those below it;
``pyproject.toml`` states it as import-linter contracts and the test suite checks them):
``base`` (errors, settings, progress, grid checks, device), ``annotations`` (label and weight
conventions, hints, fill, held-out strokes, where to paint next), ``model`` (network, patches,
intensity, forest, the in-memory model), ``inference`` (prediction, refinement,
post-processing), ``training`` (trainer, losses, pretraining), ``session`` (state and rounds).
See ``docs/design.md``.
"""
