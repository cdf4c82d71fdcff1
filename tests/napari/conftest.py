"""Fixtures of the napari tests."""

import pytest


@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    seen = []

    def record(n):
        seen.append(str(n.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture(autouse=True)
def _workers_end_with_their_test():
    """Wait for the test's napari workers (a feature pass left running): one alive at exit aborts the process."""
    yield
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(120_000)
