"""Shared fixtures: the bundled digits example built once per target, the manifest schema, a CLI runner."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (EDGEKIT_CI=1, set by .ci/run), turn every skip but the macOS-only tests into a failure.

    The test extra installs every backend and .ci/run installs every tool, so a skip there means a broken
    install (an import that fails, a missing program), which must not pass as green.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("EDGEKIT_CI") and report.skipped and not hasattr(report, "wasxfail"):
        if item.get_closest_marker("macos") is None:
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where everything but the macOS tests must run: {reason}"


DIGITS = ROOT / "examples" / "digits"


def assert_valid_manifest(folder: Path) -> dict[str, Any]:
    """Validate `folder/manifest.json` against the published JSON Schema and return it."""
    import jsonschema

    from edgekit.manifest import SCHEMA_PATH, read_manifest

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    jsonschema.validate(manifest, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    assert read_manifest(folder).to_json(measured=False) == manifest  # the typed manifest round-trips
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
