"""report.html opened in headless Chromium (Debian's `chromium`): the verdict is there and the plots are drawn.

`--dump-dom` gives the page as the browser parsed it; `--screenshot` gives what a person sees, and
the plots' bar colour must cover a real area of it. Without chromium the tests skip, except in CI
(EDGEKIT_REQUIRE_CHROMIUM=1, set by .ci/run), where they fail.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit import report
from edgekit.report.plots import ARTIFACT_COLOR
from tests.report import manifests

WINDOW = (1200, 2000)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars",
)  # fmt: skip


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("EDGEKIT_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is not installed, and CI requires it: apt-get install -y chromium (.ci/run does)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _browse(page: Path, tmp_path: Path, *action: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    command = [_chromium(), *FLAGS, f"--user-data-dir={profile}", *action, page.resolve().as_uri()]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return ran


def _dom(page: Path, tmp_path: Path) -> str:
    return _browse(page, tmp_path, "--dump-dom").stdout


def _screenshot(page: Path, tmp_path: Path) -> tuple[int, int, int, int]:
    """Return width, height, distinct colours and pixels of the plots' artifact colour in a screenshot."""
    from PIL import Image

    shot = tmp_path / "out.png"
    _browse(page, tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    target = tuple(int(ARTIFACT_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    pixels = list(image.getdata())
    bars = sum(1 for p in pixels if all(abs(a - b) <= 6 for a, b in zip(p, target, strict=True)))
    return image.width, image.height, len(set(pixels)), bars


def _plots_in(dom: str) -> list[str]:
    return re.findall(r'<figure class="plot" data-plot="([a-z-]+)"><img alt="[^"]*" src="data:image/png;base64,', dom)


def test_the_digits_report_shows_its_verdict_and_plots_in_chromium(digits_rpi: Path, tmp_path: Path) -> None:
    page = digits_rpi / "report.html"

    dom = _dom(page, tmp_path)
    width, height, colours, bars = _screenshot(page, tmp_path)

    assert '<section id="verdict" class="verdict passed" data-status="passed">' in dom
    assert 'Verdict: <span class="status">PASSED</span>' in dom
    assert "passed: the artifact meets its accuracy gate, measured in its runtime (onnxruntime " in dom
    assert _plots_in(dom) == ["size-latency", "per-class"]
    assert (width, height) == WINDOW
    assert colours > 100, "the screenshot is nearly one colour"
    assert bars > 5000, f"only {bars} pixels of the plots' bar colour: the plots did not draw"


def test_a_repaired_report_draws_the_sensitivity_and_ladder_plots_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(report.render(manifests.failed()), encoding="utf-8")
    without_plots = tmp_path / "tables.html"
    without_plots.write_text(re.sub(r"<figure class='plot'.*?</figure>", "", page.read_text()), encoding="utf-8")

    dom = _dom(page, tmp_path)
    bars = _screenshot(page, tmp_path)[3]
    bars_without_plots = _screenshot(without_plots, tmp_path)[3]

    assert 'Verdict: <span class="status">FAILED</span>' in dom
    assert _plots_in(dom) == ["size-latency", "sensitivity", "repair", "per-class"]
    assert bars > 5000 and bars_without_plots < 100  # the colour comes from the plots, nothing else
