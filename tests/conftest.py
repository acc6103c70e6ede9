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
