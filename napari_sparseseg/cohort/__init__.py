"""Cohorts: one model over many scans (``sparseseg batch``, the Cohort widget), scaled out on Dask.

Built on ``core`` and ``io``; never imports napari or Qt. :mod:`.batch` plans, resumes and
summarises a batch, :mod:`.work` is what a worker does for one scan, :mod:`.cluster` holds
the Dask client (a local cluster or ``--scheduler``), :mod:`.scheduler` checks a scheduler's
address and reaches it in bounded time (:func:`~napari_sparseseg.scheduler.connect`, the
one way to an existing scheduler).
"""
