"""Test-wide settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread_torch():
    """Tiny models run faster on one thread, and far faster on a shared, busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
