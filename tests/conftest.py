"""Shared fixtures: the bundled digits example built once per target, the manifest schema, a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"


def assert_valid_manifest(folder: Path) -> dict[str, Any]:
    """Validate `folder/manifest.json` against the published JSON Schema and return it."""
    import jsonschema

    from edgekit.manifest import SCHEMA_PATH, read_manifest

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    assert read_manifest(folder).to_json() == manifest  # the typed manifest round-trips
    return manifest


def _build_digits(tmp_path_factory: pytest.TempPathFactory, target: str) -> Path:
    import edgekit

    out = tmp_path_factory.mktemp("dist")
    result = edgekit.build(str(DIGITS / "model.pt2"), target=target, data=DIGITS / "data.npz", out_dir=out)
    assert_valid_manifest(result.path)
    return result.path


@pytest.fixture(scope="session")
def digits_rpi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the digits example for rpi once per session and return the artifact folder."""
    return _build_digits(tmp_path_factory, "rpi")


@pytest.fixture(scope="session")
def digits_android(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the digits example for android once per session and return the artifact folder."""
    return _build_digits(tmp_path_factory, "android")


@pytest.fixture(scope="session")
def digits_ios(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the digits example for ios once per session (accuracy checked by the proxy off macOS)."""
    return _build_digits(tmp_path_factory, "ios")


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()
