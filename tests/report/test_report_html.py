"""report.html from hand-made manifests: verdict first, every section, plots inline, and a page without matplotlib."""

from __future__ import annotations

import base64
import io
import re
import sys

import pytest

from edgekit import report
from tests.report import manifests

SECTIONS = ("verdict", "metrics", "size-latency", "sensitivity", "repair", "per-class", "warnings", "details")


def _plots(page: str) -> dict[str, bytes]:
    found = re.findall(r"data-plot='([a-z-]+)'><img alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    return {name: base64.b64decode(data) for name, data in found}


def test_a_repaired_build_shows_verdict_first_then_every_section_with_its_plot() -> None:
    from PIL import Image

    page = report.render(manifests.repaired())

    positions = [page.index(f"<section id='{key}'") for key in SECTIONS]
    assert positions == sorted(positions)
    assert "Verdict: <span class='status'>PASSED</span>" in page
    assert "<td><code>top1_drop &lt;= 1.0</code></td><td>0.700</td><td class='pass'>pass</td>" in page
    assert "data-mode='runtime'>the target's runtime</b>: onnxruntime 1.32.0" in page
    plots = _plots(page)
    assert set(plots) == {"size-latency", "sensitivity", "repair", "per-class"}
    for name, png in plots.items():
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.width >= 600 and image.height >= 150, name
        assert len(set(image.convert("RGB").getdata())) > 20, f"{name} plot is nearly blank"


def test_metrics_carry_their_intervals_and_the_flipped_samples() -> None:
    page = report.render(manifests.repaired())

    assert "<td>top-1 accuracy (labels)</td><td>100.00%</td><td>99.30%</td><td>0.70</td><td>[0.00, 2.00]" in page
    assert "<td>top-1 agreement with float</td><td>&ndash;</td><td>99.3%</td><td>&ndash;</td><td>[96.30, 99.90]" in page
    assert "1 of 150 evaluation samples changed their top-1 class (indices: 17)" in page


def test_sensitivity_names_modules_most_sensitive_first_with_the_tool_and_native_names() -> None:
    page = report.render(manifests.repaired())
    section = page[page.index("<section id='sensitivity'") : page.index("<section id='repair'")]

    assert "<code>onnxruntime.quantization.qdq_loss_debug</code> on 16 samples in 12.3 s" in section
    assert section.index("<code>fc1</code>") < section.index("<code>features.3.conv.0</code>")
    assert "/features/features.3/conv/conv.0/Conv" in section
    assert "<td>30.5 dB</td><td>&ndash;</td>" in section  # output_sqnr_db_if_float missing: a dash, not 0


def test_the_repair_ladder_shows_each_step_the_chosen_one_and_why_layers_stayed_float() -> None:
    page = report.render(manifests.repaired())
    section = page[page.index("<section id='repair'") : page.index("<section id='per-class'")]

    assert "outcome: <b>passed</b>. Why: gate failed: top1_drop &lt;= 1.0 but measured 61.300" in section
    assert "max_float_layers 4, max_steps 8" in section
    assert section.count("<tr") == 4 and section.count("class='fail'>FAIL") == 2
    assert "<tr class=chosen><td>2: keep fc1 in float (chosen)" in section
    assert "<code>fc1</code> in float: SQNR 3.4 dB at its output" in section


def test_warnings_name_each_kind_once() -> None:
    page = report.render(manifests.repaired())
    section = page[page.index("<section id='warnings'") :]

    assert "Warnings (4)" in section and "4 warnings</a> below" in page
    assert section.count("not faster than float") == 1  # the build's own warning says the same: shown once
    for kind in ("int8 not faster", "layers left in float", "small evaluation set", "build"):
        assert f"<b>{kind}</b>" in section
    assert "fc1 (float: SQNR 3.4 dB" in section and "calibration used 16 samples" in section
    assert "Worst class: <b>cat</b> (drop 2.00 points, 50 samples)" in page


def test_a_failed_build_says_failed_with_the_rule_and_the_exhausted_budget() -> None:
    page = report.render(manifests.failed())

    assert "data-status='failed'" in page and "Verdict: <span class='status'>FAILED</span>" in page
    assert "FAILED: the artifact misses its accuracy gate (top1_drop &lt;= 1.0, measured 61.300)" in page
    assert "<td class='fail'>FAIL</td>" in page
    assert "outcome: <b>budget exhausted</b>" in page and "(chosen)" not in page


def test_a_proxy_build_says_so_and_leaves_out_what_was_not_measured() -> None:
    page = report.render(manifests.proxy())

    assert "data-mode='proxy'>a proxy (not the target's runtime)</b>: proxy: host-side MIL interpreter" in page
    assert "<b>proxy check</b>: accuracy was checked on a stand-in" in page
    assert "latency: not measured (no Core ML runtime here)" in page
    assert "No labels: per-class accuracy was not measured." in page
    assert "No per-layer diagnosis was recorded" in page and "No repair was recorded" in page
    assert set(_plots(page)) == {"size-latency"}


def test_an_inconclusive_build_warns_that_the_evaluation_set_is_small() -> None:
    page = report.render(manifests.inconclusive())

    assert "Verdict: <span class='status'>INCONCLUSIVE</span>" in page
    assert "<b>small evaluation set</b>: only 5 evaluation samples: at least 30 are needed" in page


def test_manifest_text_is_escaped() -> None:
    table = manifests.repaired()
    table["diagnosis"]["layers"][0]["module"] = "<script>alert(1)</script>"
    table["accuracy"]["metrics"]["sqnr_db"] = "inf"  # identical outputs: the manifest writes "inf"

    page = report.render(table)

    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>SQNR vs float</td><td>&ndash;</td><td>inf dB</td>" in page


def test_the_same_manifest_gives_the_same_page() -> None:
    assert report.render(manifests.repaired()) == report.render(manifests.repaired())


def test_without_matplotlib_the_page_says_so_and_keeps_its_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError

    page = report.render(manifests.repaired())

    assert "<img" not in page and "data-plot" not in page
    assert "Plots not drawn: matplotlib is not installed (pip install &#x27;edgekit-deploy[report]&#x27;)" in page
    assert "<code>fc1</code>" in page and "<tr class=chosen>" in page and "Verdict: <span" in page


def test_an_artifact_with_no_op_in_int8_says_it_is_float_in_all_but_name() -> None:
    table = manifests.repaired()
    table["quantize"] |= {"float_ops": {"Gemm": 2}, "quantized_ops": {}}
    table["warnings"].append("repair left layers out of int8 to pass the gate: fc1")

    page = report.render(table)
    section = page[page.index("<section id='warnings'") :]

    assert "ops in float: Gemm x2; no op runs in int8: the artifact is float in all but name" in section
    assert "left layers out of int8" not in section  # the build's warning says what the check says: once
