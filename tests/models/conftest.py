"""Fixtures for the pure-torch model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run hundreds of tiny passes; on a busy 2-core machine torch's intra-op threads spin against
    other processes and make each pass ~50x slower, so pin one (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
