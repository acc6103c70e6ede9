"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding the real dataset files ($IBD_DATA_DIR); skips the test only when the variable is unset."""
    value = os.environ.get("IBD_DATA_DIR")
    if value is None:
        pytest.skip("IBD_DATA_DIR is not set (point it at a folder with the dataset files, e.g. ../shared/data)")
    return Path(value)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Point the pre-trained checkpoint cache ($IBD_CACHE_DIR) at a fresh temporary folder."""
    path = tmp_path / "ckpt-cache"
    monkeypatch.setenv("IBD_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One checkpoint cache for the method runs of a test module (its warm-up models are shared)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("IBD_CACHE_DIR", str(tmp_path_factory.mktemp("ckpt")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def synthetic_split():
    """The ci profile's synthetic split (300 users, 390 items): shared, treat as read-only."""
    from ibd_lite.data import load_split

    return load_split("synthetic", seed=0)


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """One intra-op thread: the tests' tensors are tiny, and on a busy 2-core machine torch's thread pool
    oversubscribes the cores and makes small ops orders of magnitude slower (results do not change)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
