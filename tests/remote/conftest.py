"""The loopback cluster the remote tests share (one scheduler, one CPU worker, started once per module)."""

import pytest

from tests.remote.cluster import Cluster


def torch_threads() -> int:
    """The test process's torch threads: the workers are started with as many, so their arithmetic is the same."""
    import torch

    return int(torch.get_num_threads())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"), threads=torch_threads()).start(workers=1)
    yield c
    c.stop()
