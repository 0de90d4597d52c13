"""A short HTML page a person reads: verdict, metrics, size, latency, what was quantized, warnings."""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = (
    "body{font-family:sans-serif;max-width:56em;margin:2em auto}td{padding:.2em 1em}pre{background:#f4f4f4;padding:1em}"
)


def render(manifest: dict[str, Any]) -> str:
    """Return report.html for a manifest."""
    esc = html.escape
    acc = manifest["accuracy"]
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in acc.get("metrics", {}).items())
    warnings = "".join(f"<li>{esc(w)}</li>" for w in manifest.get("warnings", [])) or "<li>none</li>"
    sections = "".join(
        f"<h2>{esc(name)}</h2><pre>{esc(json.dumps(manifest.get(name, {}), indent=2, default=str))}</pre>"
        for name in ("prune", "quantize", "export", "latency", "size", "runtime", "io")
        if manifest.get(name)
    )
    gate = acc.get("gate") or {}
    name, target, file = esc(manifest["name"]), esc(manifest["target"]["name"]), esc(manifest["artifact"]["file"])
    verdict = (
        f"<b>Accuracy status: {esc(acc['status'])}</b> &mdash; gate <code>{esc(str(gate.get('rule')))}</code>: "
        f"{esc(str(gate.get('passed')))}; checked with {esc(acc.get('checked_with', ''))}. {esc(acc.get('reason', ''))}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{name} for {target}</title><style>{_STYLE}</style></head>
<body>
<h1>{name} &rarr; {target} ({file})</h1>
<p>{verdict}</p>
<table>{rows}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
{sections}
</body></html>
"""


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
