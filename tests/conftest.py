"""Shared fixtures: the bundled digits example, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"


@pytest.fixture(scope="session")
def digits_rpi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the digits example for rpi once per session and return the artifact folder."""
    import edgekit

    out = tmp_path_factory.mktemp("dist")
    result = edgekit.build(str(DIGITS / "model.pt2"), target="rpi", data=DIGITS / "data.npz", out_dir=out)
    return result.path


@pytest.fixture(scope="session")
def digits_android(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the digits example for android once per session and return the artifact folder."""
    import edgekit

    out = tmp_path_factory.mktemp("dist")
    return edgekit.build(str(DIGITS / "model.pt2"), target="android", data=DIGITS / "data.npz", out_dir=out).path


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()
