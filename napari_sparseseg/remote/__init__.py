"""Rounds of the interactive loop on a Dask worker (a GPU box in the server room): ``segment --scheduler``, the widget.

:mod:`.client` connects (the one place that does), :mod:`.wire` packs what travels,
:mod:`.worker` is what the worker runs, :mod:`.rounds` is the round as the CLI and the widget
drive it (the same generator as :func:`~napari_sparseseg.core.session.rounds.run_round`).
"""
