"""Hand-made manifest tables for the report and `explain`: a repaired build, a failed one, a proxy, a small set."""

from __future__ import annotations

import copy
from typing import Any

DIAGNOSIS: dict[str, Any] = {
    "tool": "onnxruntime.quantization.qdq_loss_debug",
    "output_tool": "onnxruntime (one layer in float at a time)",
    "samples": 16,
    "layers": [
        {"module": "fc1", "native": ["/fc1/Gemm"], "op": "Gemm", "sqnr_db": 3.4, "output_sqnr_db_if_float": 31.0},
        {"module": "features.3.conv.0", "native": ["/features/features.3/conv/conv.0/Conv"], "op": "Conv",
         "sqnr_db": 18.2, "output_sqnr_db_if_float": 25.1},
        {"module": "features.0", "native": ["/features/features.0/Conv"], "op": "Conv", "sqnr_db": 30.5,
         "output_sqnr_db_if_float": None},
    ],
}  # fmt: skip

REPAIR: dict[str, Any] = {
    "enabled": True,
    "ran": True,
    "reason": "gate failed: top1_drop <= 1.0 but measured 61.300",
    "outcome": "passed",
    "budget": {"max_float_layers": 4, "max_steps": 8},
    "steps": [
        {"step": 0, "name": "plain int8", "change": "as built", "metrics": {"sqnr_db": 2.1, "top1_agreement": 30.0},
         "gate_passed": False, "artifact_bytes": 41000, "float_layers": [], "int16_layers": []},
        {"step": 1, "name": "percentile calibration", "change": "calibration_method=percentile",
         "metrics": {"sqnr_db": 6.5, "top1_agreement": 52.0}, "gate_passed": False, "artifact_bytes": 41000,
         "float_layers": [], "int16_layers": []},
        {"step": 2, "name": "keep fc1 in float", "change": "fc1 -> float",
         "metrics": {"sqnr_db": 31.0, "top1_agreement": 99.3}, "gate_passed": True, "artifact_bytes": 52000,
         "float_layers": ["fc1"], "int16_layers": []},
    ],
    "chosen": 2,
    "float_layers": [
        {"module": "fc1", "why": "SQNR 3.4 dB at its output; the output reaches 31.0 dB with it in float"}
    ],
    "int16_layers": [],
}  # fmt: skip


def base() -> dict[str, Any]:
    """Return a passed, labelled 3-class build on rpi, as its manifest table (the keys the report reads)."""
    return {
        "schema_version": 2, "name": "outlier", "created": "2026-11-26T00:00:00+00:00",
        "target": {"name": "rpi", "description": "Raspberry Pi 5", "backend": "onnxruntime", "device": {}},
        "artifact": {"file": "model.onnx", "format": "onnxruntime"},
        "edgekit": {"version": "0.1.0"}, "toolchain": {"onnxruntime": "1.32.0"},
        "quantize": {"scheme": "int8-static", "float_ops": {}},
        "accuracy": {
            "status": "passed", "reason": "", "checked_with": "onnxruntime 1.32.0",
            "metrics": {"sqnr_db": 31.0, "cosine": 0.999, "top1_agreement": 99.3, "float_top1": 100.0,
                        "artifact_top1": 99.3, "top1_drop": 0.7},
            "gate": {"rule": "top1_drop <= 1.0", "value": 0.7, "passed": True,
                     "rules": [{"metric": "top1_drop", "output": "output", "op": "<=", "threshold": 1.0, "value": 0.7,
                                "passed": True, "rule": "top1_drop <= 1.0"}]},
            "evidence": {"samples": 150, "flipped": 1, "flipped_indices": [17], "agreement_ci95": [96.3, 99.9],
                         "top1_drop_ci95": [0.0, 2.0],
                         "per_class_drop": {
                             "cat": {"samples": 50, "float_top1": 100.0, "artifact_top1": 98.0, "drop": 2.0},
                             "dog": {"samples": 50, "float_top1": 100.0, "artifact_top1": 100.0, "drop": 0.0},
                             "owl": {"samples": 50, "float_top1": 100.0, "artifact_top1": 100.0, "drop": 0.0}},
                         "worst_class": {"label": "cat", "samples": 50, "float_top1": 100.0, "artifact_top1": 98.0,
                                         "drop": 2.0},
                         "too_close": "the 95% interval of top1_drop, [0.00, 2.00], straddles the limit 1.0: the "
                                      "evaluation set is too small to be sure (about 900 samples would be needed)"},
        },
        "latency": {"measured": True, "where": "this build host (not the device)",
                    "float": {"median_ms": 0.02, "p90_ms": 0.03}, "artifact": {"median_ms": 0.04, "p90_ms": 0.05},
                    "artifact_over_float": 2.0},
        "size": {"artifact_bytes": 52000, "float_reference_bytes": 110000, "artifact_over_float": 0.47},
        "warnings": ["the quantized artifact is not faster than float on this host (2.00x float latency)",
                     "calibration used 16 samples"],
    }  # fmt: skip


def repaired() -> dict[str, Any]:
    """Return `base()` after a repair that kept fc1 in float, with its diagnosis (timings as measured.json has them)."""
    table = base() | {"diagnosis": copy.deepcopy(DIAGNOSIS), "repair": copy.deepcopy(REPAIR)}
    table["latency"]["repair_steps_ms"] = [0.03, None, 0.04]
    table["build"] = {"seconds_by_stage": {"repair": 40.0, "repair.diagnosis": 12.3}}
    return table


def failed() -> dict[str, Any]:
    """Return a build that failed its gate after the repair budget ran out."""
    table = repaired()
    accuracy = table["accuracy"]
    accuracy["status"] = "failed"
    accuracy["metrics"] |= {"artifact_top1": 38.7, "top1_drop": 61.3, "sqnr_db": 2.1}
    accuracy["gate"] |= {"value": 61.3, "passed": False}
    accuracy["gate"]["rules"][0] |= {"value": 61.3, "passed": False}
    table["repair"] |= {"outcome": "budget exhausted", "chosen": None, "float_layers": []}
    return table


def proxy() -> dict[str, Any]:
    """Return an ios build checked by the Core ML proxy, without labels, latency or repair."""
    table = base()
    table["target"]["name"] = "ios"
    table["accuracy"] |= {"status": "proxy", "reason": "no Core ML runtime off macOS",
                          "checked_with": "proxy: host-side MIL interpreter", "evidence": {}}  # fmt: skip
    table["accuracy"]["metrics"] = {"sqnr_db": 39.7, "top1_agreement": 100.0}
    table["latency"] = {"measured": False, "reason": "no Core ML runtime here"}
    table["warnings"] = []
    return table


def inconclusive() -> dict[str, Any]:
    """Return a build judged on 5 samples."""
    table = base()
    table["accuracy"] |= {"status": "inconclusive",
                          "reason": "only 5 evaluation samples: at least 30 are needed to judge the gate"}  # fmt: skip
    return table
