"""Shared fixtures for the unit tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run tiny end-to-end runs on one intra-op thread (restored afterwards).

    The models in these runs are so small that a second thread only adds synchronisation, and on a
    busy 2-core machine the spinning OpenMP threads made each conv ~40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
