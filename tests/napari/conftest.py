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
