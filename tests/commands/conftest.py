"""Fixtures for the command tests: logs of third-party output go to a temporary cache, never to ~/.cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DIGITS


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture
def four_digits(tmp_path: Path) -> Path:
    """Return an .npz holding four digits under `inputs`, the way --data holds them."""
    with np.load(DIGITS / "data.npz") as data:
        inputs = data["inputs"][:4]
    path = tmp_path / "x.npz"
    np.savez(path, inputs=inputs)
    return path


def copy_artifact(folder: Path, tmp_path: Path) -> Path:
    """Return a copy of a session artifact that a test may change."""
    return Path(shutil.copytree(folder, tmp_path / "copy" / folder.name))
