"""Turn build results and measurements into comparison rows, markdown tables and the RESULTS.md page."""

from __future__ import annotations

import json
from typing import Any

HEADER = (
    "| model | target | reference | quality edgekit / ref | size KiB edgekit / ref (x) "
    "| latency median ms edgekit / ref (x) | p90 ms edgekit / ref | build s edgekit / ref (x) "
    "| peak MB edgekit / ref (x) | goals |"
)
# The stages of an edgekit build, as named in the manifest's build.seconds_by_stage.
STAGES = ("load", "prune", "compile", "verify", "package")
SQNR_SLACK_DB = 0.5  # SQNR within this of the reference's counts as "as accurate" (top-1 must not be lower)


def comparison(model: str, target: str, flow: str, ek: dict, ref: dict, figures: dict, goals: dict) -> dict[str, Any]:
    """One row: edgekit's and the reference flow's figures, the ratios, and which goals are met."""
    sides = {"edgekit": _side(ek, figures["edgekit"]), "ref": _side(ref, figures[flow])}
    a, b = sides["edgekit"], sides["ref"]
    ratios = {
        "size": a["size_bytes"] / b["size_bytes"],
        "build": a["build_s"] / b["build_s"],
        "peak_rss": a["peak_rss_mb"] / b["peak_rss_mb"],
        "latency_median": _ratio(a, b, "median_ms"),
        "latency_p90": _ratio(a, b, "p90_ms"),
    }
    met = {
        "latency": None if ratios["latency_median"] is None else ratios["latency_median"] <= goals["latency"],
        "size": ratios["size"] <= goals["size"],
        "accuracy": _as_accurate(a.get("quality"), b.get("quality")),
        "build": ratios["build"] <= goals["build"],
    }
    row = {"model": model, "target": target, "reference": flow, **sides, "ratios": ratios, "goals_met": met}
    if "float_top1" in figures:
        row["float_top1"] = figures["float_top1"]
    return row


def _side(build: dict, fig: dict) -> dict[str, Any]:
    side = {"build_s": build["seconds"], "peak_rss_mb": build["peak_rss_mb"], **fig}
    if "manifest" in build:
        side["seconds_by_stage"] = build["manifest"]["seconds_by_stage"]
        side["scheme"] = build["manifest"]["quantize"].get("scheme")
    return side


def _ratio(a: dict, b: dict, key: str) -> float | None:
    if "latency" not in a or "latency" not in b:
        return None
    return a["latency"][key] / b["latency"][key]


def _as_accurate(a: dict | None, b: dict | None) -> bool | None:
    if a is None or b is None:
        return None
    if "top1" in a:
        return a["top1"] >= b["top1"]
    return a["top1_agreement"] >= b["top1_agreement"] and a["sqnr_db"] >= b["sqnr_db"] - SQNR_SLACK_DB


def markdown(results: dict) -> str:
    """All tables: the comparison, edgekit's build time by stage, scaling, failures."""
    lines = ["## edgekit vs the reference flows", "", HEADER, _rule(HEADER)]
    for r in results["comparisons"]:
        a, b, x = r["edgekit"], r["ref"], r["ratios"]
        lat_a, lat_b = a.get("latency", {}), b.get("latency", {})
        lines.append(
            f"| {r['model']} | {r['target']} | {r['reference']} | {_quality(a, b)} "
            f"| {a['size_bytes'] / 1024:.1f} / {b['size_bytes'] / 1024:.1f} ({x['size']:.2f}) "
            f"| {_ms(lat_a, 'median_ms')} / {_ms(lat_b, 'median_ms')} ({_x(x['latency_median'])}) "
            f"| {_ms(lat_a, 'p90_ms')} / {_ms(lat_b, 'p90_ms')} "
            f"| {a['build_s']:.1f} / {b['build_s']:.1f} ({x['build']:.2f}) "
            f"| {a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} ({x['peak_rss']:.2f}) | {_goals(r['goals_met'])} |"
        )
    goals = (
        "Goals: L = latency <= 1.05x, S = size <= 1.0x, A = accuracy >= reference (top-1; or agreement "
        f"and SQNR within {SQNR_SLACK_DB} dB), B = build time <= 1.5x. `-` = not measurable here."
    )
    lines += ["", goals, ""]
    lines += _stages_table(results) + _scaling_tables(results)
    if results["failures"]:
        lines += ["", "### Flows that failed", "", "| model | target | flow | error |", "|---|---|---|---|"]
        lines += [
            f"| {f['model']} | {f['target']} | {f['flow']} | {f['error'].replace('|', '/')} |"
            for f in results["failures"]
        ]
    return "\n".join(lines)


def _stages_table(results: dict) -> list[str]:
    head = "| model | target | edgekit build s | " + " | ".join(STAGES) + " | reference build s |"
    out = ["", "### edgekit build time by stage (s, manifest build.seconds_by_stage)", "", head, _rule(head)]
    seen = set()
    for r in results["comparisons"]:
        key = (r["model"], r["target"])
        if key in seen or r["reference"] == "olive":
            continue
        seen.add(key)
        split = r["edgekit"].get("seconds_by_stage", {})
        out.append(
            f"| {r['model']} | {r['target']} | {r['edgekit']['build_s']:.1f} | "
            + " | ".join(f"{split.get(s, 0):.1f}" for s in STAGES)
            + f" | {r['ref']['build_s']:.1f} |"
        )
    return out


def _scaling_tables(results: dict) -> list[str]:
    out = [
        "",
        "### edgekit scaling: calibration samples (synthetic inputs, 32 evaluation samples)",
        "",
        "| model | target | calibration | build s | compile s | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["scaling"]["calibration"]:
        if r["ok"]:
            compile_s = r["seconds_by_stage"].get("compile", 0)  # quantize + export + lower: one stage now
            out.append(
                f"| {r['model']} | {r['target']} | {r['calibration_samples']} | {r['build_s']:.1f} | {compile_s:.1f} "
                f"| {r['peak_rss_mb']:.0f} |"
            )
        else:
            out.append(f"| {r['model']} | {r['target']} | {r['calibration_samples']} | failed: {r['error']} | | |")
    out += [
        "",
        "### edgekit scaling: model size (calibration 128)",
        "",
        "| model | target | edgekit build s | reference build s | edgekit peak MB | reference peak MB |",
        "|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['model']} | {r['target']} | {r['build_s']:.1f} | {r['reference_build_s']:.1f} "
        f"| {r['peak_rss_mb']:.0f} | {r['reference_peak_rss_mb']:.0f} |"
        for r in results["scaling"]["model"]
    ]
    return out


def results_page(results: dict, tables: str) -> str:
    """The RESULTS.md page: when, where, with what, then the tables."""
    m, v = results["machine"], results["versions"]
    return "\n".join([
        "# edgekit benchmark results",
        "",
        f"Latest full run: {results['date']}, {results['total_seconds'] / 60:.1f} min. "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}.",
        "Shared, noisy machine: compare the ratios (measured in one run, interleaved), not absolute times.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        f"Settings: `{json.dumps(results['settings'])}`. Regenerate with `python benchmarks/run.py`.",
        "",
        tables,
        "",
    ])  # fmt: skip


def _quality(a: dict, b: dict) -> str:
    qa, qb = a.get("quality"), b.get("quality")
    if qa is None or qb is None:
        return "- (no runtime here)"
    if "top1" in qa:
        return f"top-1 {qa['top1']:.1f}% / {qb['top1']:.1f}%"
    return (
        f"SQNR {qa['sqnr_db']:.1f} / {qb['sqnr_db']:.1f} dB, "
        f"agree {qa['top1_agreement']:.0f}% / {qb['top1_agreement']:.0f}%"
    )


def _goals(met: dict) -> str:
    return " ".join(f"{k[0].upper()}{'-' if v is None else ('✓' if v else '✗')}" for k, v in met.items())


def _ms(lat: dict, key: str) -> str:
    if key not in lat:
        return "-"
    return f"{lat[key]:.3f}" if lat[key] < 1 else f"{lat[key]:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rule(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)
