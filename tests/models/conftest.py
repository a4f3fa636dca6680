"""Per-method tests: tiny models, one thread (see ``one_thread`` in tests/conftest.py)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_models(one_thread):
    yield


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """A batch of 2 random 64 x 64 images, the same in every test."""
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
