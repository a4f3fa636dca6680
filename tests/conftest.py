"""Shared fixtures: a tiny generated MVTec-layout dataset and the real data root (or a skip)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("DISTILLAD_PROGRESS", "0")  # no progress bars in test logs
os.environ.setdefault("DISTILLAD_OFFLINE", "1")  # never touch the network
# caches (converted datasets, foreground masks) go to a folder of this session, not the user's home
os.environ.setdefault("DISTILLAD_CACHE", tempfile.mkdtemp(prefix="distillad-test-cache-"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Category folder of 10 good training images and 2 good + 2×3 defective test images, 64 px."""
    from distillad.demo_data import make_demo_dataset
    root = tmp_path_factory.mktemp("tiny")
    return make_demo_dataset(root, n_train=10, n_test_good=2, n_test_defect=2, size=64, seed=1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets (../shared/data or DISTILLAD_DATA); skipped with a reason when absent."""
    from distillad.data import find_data_root
    root = find_data_root()
    if root is None:
        pytest.skip("real data not found: set DISTILLAD_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a small shared CPU, spinning OpenMP workers make tiny forwards
    many times slower (seconds instead of tens of ms)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained RD run to serve: random teacher, 64 px, 1 epoch, 3 validation images (so thresholds
    and the colour scale are defined). For ``distillad serve`` tests; its scores mean nothing."""
    from distillad import api
    from distillad.demo_data import make_demo_dataset
    root = tmp_path_factory.mktemp("serve")
    data = make_demo_dataset(root / "data", n_train=10, n_test_good=2, n_test_defect=2, size=64, seed=3)
    api.train(model="rd", data=data, out=root / "run", epochs=1, batch_size=4, image_size=64,
              teacher_weights="random", val_fraction=0.3, progress=False)
    return root / "run"
