"""Per-method tests: tiny models, one thread (see ``one_thread`` in tests/conftest.py)."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_models(one_thread):
    yield
