"""report.html: the page a person opens first, readable offline, verdict first.

Order: verdict (status, gate rules, runtime or proxy), float vs artifact metrics with their 95%
intervals, size and latency, per-layer sensitivity, the repair ladder, per-class drops, warnings,
then the build details. Plots are PNGs inline; without matplotlib the page says so and keeps its
tables. `edgekit explain` prints the same facts (`edgekit.report.facts`) in the terminal.
"""

from __future__ import annotations

from html import escape
from typing import Any

from edgekit.report import facts, plots, sections

STYLE = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
.verdict{border-left:.5em solid #999;padding:.5em 1em;background:#f6f6f6}
.verdict.passed{border-color:#27ae60;background:#eef8f1}.verdict.failed{border-color:#c0392b;background:#fbeeee}
.verdict.proxy,.verdict.inconclusive{border-color:#d68910;background:#fdf5e8}
.pass{color:#1e8449;font-weight:bold}.fail{color:#c0392b;font-weight:bold}.na{color:#777}
tr.chosen{background:#eef8f1}figure.plot{margin:.5em 0}figure.plot img{max-width:100%}
pre{background:#f4f4f4;padding:1em;overflow:auto}small{color:#666}.no-plots{color:#a04000}
"""


def render(manifest: dict[str, Any]) -> str:
    """Return report.html for a manifest (its JSON table: `Manifest.to_json()`)."""
    missing = plots.unavailable()
    draw = missing is None
    timing = facts.size_latency(manifest)
    layers = facts.sensitivity(manifest)
    ladder = facts.ladder(manifest)
    classes = facts.per_class(manifest)
    warned = facts.warnings(manifest)
    body = [
        sections.verdict(facts.verdict(manifest), len(warned)),
        f"<p class='no-plots'>Plots not drawn: {escape(missing)}.</p>" if missing else "",
        sections.metrics(facts.metric_rows(manifest), facts.flipped(manifest)),
        sections.size_latency(timing, plots.size_latency(timing) if draw else None),
        sections.sensitivity(
            layers, plots.sensitivity(layers["layers"]) if draw and layers and layers["layers"] else None
        ),
        sections.repair(
            ladder,
            plots.repair_ladder(ladder["steps"], ladder["chosen"]) if draw and ladder and ladder["steps"] else None,
        ),
        sections.per_class(classes, plots.per_class(classes["classes"]) if draw and classes else None),
        sections.warnings(warned),
        sections.details(manifest),
    ]
    name, target = escape(manifest["name"]), escape(manifest["target"]["name"])
    file, scheme = escape(manifest["artifact"]["file"]), escape(str(manifest.get("quantize", {}).get("scheme", "")))
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{name} for {target}: {escape(manifest['accuracy']['status'])}</title><style>{STYLE}</style></head>\n"
        f"<body>\n<h1>{name} &rarr; {target} <small>({file}, {scheme})</small></h1>\n"
        + "\n".join(part for part in body if part)
        + f"\n<footer><small>edgekit {escape(str(manifest.get('edgekit', {}).get('version', '')))}, "
        f"built {escape(manifest.get('created', ''))}</small></footer>\n</body></html>\n"
    )
