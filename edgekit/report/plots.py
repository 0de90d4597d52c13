"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state) and returned as PNG bytes.

matplotlib is optional (`pip install 'edgekit-deploy[report]'`): `unavailable()` says why plots cannot
be drawn, and the report then shows its tables alone. Each function takes plain values from
`edgekit.report.facts`.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FLOAT_COLOR = "#7f8c8d"
ARTIFACT_COLOR = "#2e86c1"
PASSED_COLOR = "#27ae60"
FAILED_COLOR = "#c0392b"
DPI = 100


def unavailable() -> str | None:
    """Return why plots cannot be drawn here (matplotlib missing), or None when they can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'edgekit-deploy[report]')"
    return None


def size_latency(facts: dict[str, Any]) -> bytes:
    """Draw size (KB) and host latency (ms, median with p90 whiskers), float vs artifact, side by side."""
    fig = _figure(8.0, 3.0)
    size_axes, latency_axes = fig.subplots(1, 2)
    names = ["float", facts["scheme"]]
    sizes = [(facts["float_bytes"] or 0) / 1e3, (facts["artifact_bytes"] or 0) / 1e3]
    _bars(size_axes, names, sizes, "size (KB)", f"{facts['size_ratio']:.2f}x float" if facts["size_ratio"] else "")
    if facts["latency_measured"] and facts["float_ms"] is not None and facts["artifact_ms"] is not None:
        medians = [facts["float_ms"], facts["artifact_ms"]]
        p90 = [facts["float_p90_ms"] or medians[0], facts["artifact_p90_ms"] or medians[1]]
        whiskers = [[0.0, 0.0], [max(0.0, high - median) for high, median in zip(p90, medians, strict=True)]]
        ratio = facts["latency_ratio"]
        _bars(latency_axes, names, medians, "latency on this host (ms, median; whisker p90)",
              f"{ratio:.2f}x float" if ratio else "", whiskers=whiskers, bad=bool(ratio and ratio >= 1.0))  # fmt: skip
    else:
        latency_axes.axis("off")
        latency_axes.text(0.5, 0.5, "latency not measured", ha="center", va="center", color=FLOAT_COLOR)
    return _png(fig)


def sensitivity(layers: list[dict[str, Any]]) -> bytes:
    """Draw each layer's SQNR at its own output (and the model output's SQNR with it left in float), worst on top."""
    fig = _figure(8.0, 1.3 + 0.38 * max(1, len(layers)))
    axes = fig.subplots()
    names = [layer["module"] for layer in layers][::-1]
    own = [layer["sqnr_db"] if layer["sqnr_db"] is not None else 0.0 for layer in layers][::-1]
    rows = list(range(len(names)))
    axes.barh(rows, own, color=ARTIFACT_COLOR, height=0.6, label="SQNR at the layer's output (dB)")
    for row, value in zip(rows, own, strict=True):  # a 0 dB layer, the worst, has no bar to see: write its value
        axes.text(value, row, f" {value:.1f}", va="center", fontsize=7)
    if_float = [(i, layer["output_sqnr_db_if_float"]) for i, layer in enumerate(layers[::-1])]
    marked = [(i, v) for i, v in if_float if v is not None]
    if marked:
        axes.scatter([v for _, v in marked], [i for i, _ in marked], marker="D", color=FAILED_COLOR, zorder=3,
                     label="model output SQNR with this layer in float (dB)")  # fmt: skip
    axes.set_yticks(rows, names, fontsize=8)
    axes.set_xlabel("dB (lower = more sensitive)")
    fig.legend(fontsize=7, loc="outside lower center", ncols=2)
    axes.grid(axis="x", alpha=0.3)
    return _png(fig)


def repair_ladder(steps: list[dict[str, Any]], chosen: int | None) -> bytes:
    """Draw SQNR and top-1 agreement at each repair step; green/red points for a passed/failed gate."""
    fig = _figure(8.0, 3.4)
    axes = fig.subplots()
    xs = list(range(len(steps)))
    labels = [f"{s['step']}: {s['name']}" for s in steps]
    sqnr = [s["metrics"].get("sqnr_db") for s in steps]
    agreement = [s["metrics"].get("top1_agreement") for s in steps]
    colors = [PASSED_COLOR if s["gate_passed"] else FAILED_COLOR for s in steps]
    if any(v is not None for v in sqnr):
        axes.plot(xs, [v if v is not None else float("nan") for v in sqnr], color=ARTIFACT_COLOR, label="SQNR (dB)")
        axes.scatter(xs, [v if v is not None else float("nan") for v in sqnr], c=colors, zorder=3)
        axes.set_ylabel("SQNR (dB)")
    if any(v is not None for v in agreement):
        right = axes.twinx()
        right.plot(xs, [v if v is not None else float("nan") for v in agreement], color=FLOAT_COLOR, linestyle="--",
                   label="top-1 agreement (%)")  # fmt: skip
        right.set_ylabel("top-1 agreement (%)")
    if chosen is not None and 0 <= chosen < len(steps):
        axes.axvline(chosen, color=PASSED_COLOR, alpha=0.4, linewidth=6, label="chosen")
    axes.set_xticks(xs, labels, fontsize=7, rotation=15, ha="right")
    fig.legend(fontsize=7, loc="outside lower center", ncols=3)
    axes.grid(alpha=0.3)
    return _png(fig)


def per_class(classes: list[dict[str, Any]]) -> bytes:
    """Draw float and artifact top-1 per class, the drop written above each pair."""
    fig = _figure(8.0, 3.0)
    axes = fig.subplots()
    xs = list(range(len(classes)))
    width = 0.4
    axes.bar([x - width / 2 for x in xs], [c["float_top1"] or 0 for c in classes], width, color=FLOAT_COLOR,
             label="float")  # fmt: skip
    axes.bar([x + width / 2 for x in xs], [c["artifact_top1"] or 0 for c in classes], width, color=ARTIFACT_COLOR,
             label="artifact")  # fmt: skip
    for x, c in zip(xs, classes, strict=True):
        drop = c["drop"] or 0.0
        axes.text(x, 101, f"{drop:+.1f}" if drop else "0", ha="center", fontsize=7,
                  color=FAILED_COLOR if drop > 0 else FLOAT_COLOR)  # fmt: skip
    axes.set_xticks(xs, [str(c["label"]) for c in classes], fontsize=8)
    axes.set_ylim(0, 108)
    axes.set_ylabel("top-1 (%); drop above")
    axes.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _bars(
    axes: Axes,
    names: list[str],
    values: list[float],
    title: str,
    note: str,
    *,
    whiskers: list[list[float]] | None = None,
    bad: bool = False,
) -> None:
    colors = [FLOAT_COLOR, FAILED_COLOR if bad else ARTIFACT_COLOR]
    axes.bar(names, values, color=colors, yerr=whiskers, capsize=4 if whiskers else 0)
    axes.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    above = whiskers[1] if whiskers else [0.0] * len(values)
    for x, (value, extra) in enumerate(zip(values, above, strict=True)):
        axes.text(x, value + extra, f"{value:.3g}", ha="center", va="bottom", fontsize=8)  # above the whisker
    axes.margins(y=0.2)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same inputs, same bytes
    return buffer.getvalue()
