"""A short HTML page a person reads: verdict, metrics, size, latency, what was quantized, warnings."""

from __future__ import annotations

import html
import json
from typing import Any


def render(manifest: dict[str, Any]) -> str:
    """Return report.html for a manifest."""
    acc = manifest["accuracy"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in acc.get("metrics", {}).items())
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in manifest.get("warnings", [])) or "<li>none</li>"
    sections = "".join(
        f"<h2>{html.escape(name)}</h2><pre>{html.escape(json.dumps(manifest.get(name, {}), indent=2, default=str))}</pre>"
        for name in ("prune", "quantize", "export", "latency", "size", "runtime", "io")
        if manifest.get(name)
    )
    gate = acc.get("gate") or {}
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(manifest["name"])} for {html.escape(manifest["target"]["name"])}</title>
<style>body{{font-family:sans-serif;max-width:56em;margin:2em auto}}td{{padding:.2em 1em}}pre{{background:#f4f4f4;padding:1em}}</style></head>
<body>
<h1>{html.escape(manifest["name"])} &rarr; {html.escape(manifest["target"]["name"])} ({html.escape(manifest["artifact"]["file"])})</h1>
<p><b>Accuracy status: {html.escape(acc["status"])}</b> &mdash; gate <code>{html.escape(str(gate.get("rule")))}</code>:
{html.escape(str(gate.get("passed")))}; checked with {html.escape(acc.get("checked_with", ""))}. {html.escape(acc.get("reason", ""))}</p>
<table>{rows}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
{sections}
</body></html>
"""


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
