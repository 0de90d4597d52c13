"""Run one build in its own process and print one JSON line: wall seconds, peak memory, artifact.

`python -m benchmarks.build_one '<json job>'`. One process per build, so the peak RSS read at the end
(`getrusage`) belongs to that build alone. torch and numpy are imported before the clock starts
(both flows need them and a user's process already has them); everything runtime-specific
(executorch, onnxruntime, olive, coremltools) is imported inside the timed region by both flows.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch  # noqa: F401 - imported before the clock on purpose, see the module docstring

from benchmarks.models import Case


def run_job(job: dict) -> dict:
    case = Case(
        **{
            **job["case"],
            "pt2": _path(job["case"]["pt2"]),
            "data": _path(job["case"]["data"]),
            "overrides": tuple(job["case"]["overrides"]),
        }
    )
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    overrides = (*case.overrides, *job.get("extra", ()))
    if job["flow"] == "edgekit":
        import edgekit

        started = time.perf_counter()
        try:
            result = edgekit.build(
                case.edgekit_model, target=job["target"], data=case.data, out_dir=out, name=case.name,
                overrides=overrides, allow_accuracy_failure=job.get("keep_failed", False),
            )  # fmt: skip
            folder, manifest = result.path, result.manifest.to_json()
        except edgekit.EdgekitError as exc:  # a missed gate, kept because the job asked for it
            if getattr(exc, "artifact", None) is None:
                raise
            folder, manifest = exc.artifact, edgekit.read_manifest(exc.artifact).to_json()
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "artifact": str(folder / manifest["artifact"]["file"]), "manifest": _slim(manifest)}
    from benchmarks import reference_flows

    calibration = np.load(job["calibration"])
    example = np.load(job["example"])
    started = time.perf_counter()
    path = reference_flows.FLOWS[job["flow"]](case, calibration, example, out)
    return {"seconds": time.perf_counter() - started, "artifact": str(path)}


def _slim(manifest: dict) -> dict:
    """Keep what the benchmark reports from a manifest."""
    return {
        "seconds_by_stage": manifest["build"]["seconds_by_stage"],
        "data": manifest["data"],
        "quantize": {
            k: manifest["quantize"].get(k)
            for k in ("scheme", "path", "format", "calibration_samples", "quantized_ops", "float_ops")
        },
        "accuracy_status": manifest["accuracy"].get("status"),
        "metrics": manifest["accuracy"].get("metrics", {}),
        "size": manifest["size"],
        "latency": {k: manifest["latency"].get(k) for k in ("measured", "artifact_over_float", "repair_steps_ms")},
        "repair": manifest.get("repair", {}),
        "diagnosis": manifest.get("diagnosis", {}),
    }


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def peak_rss_mb() -> float:
    """Return this process's own peak RSS in MB.

    Not getrusage's ru_maxrss: on Linux it keeps the parent's high-water mark across fork+exec, so
    every build would report at least the RSS of the benchmark driver that started it. VmHWM belongs
    to this process's address space alone.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: best effort


def main() -> None:
    job = json.loads(sys.argv[1])
    warnings.filterwarnings("ignore")
    try:
        result = {"ok": True, **run_job(job)}
    except Exception as exc:  # reported, not raised: one failing flow must not stop the benchmark
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400],
            "traceback": traceback.format_exc()[-3000:],
        }
    result["peak_rss_mb"] = peak_rss_mb()
    print("BENCH_RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
