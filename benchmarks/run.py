"""Benchmark edgekit against the reference flows written directly against each runtime's own APIs.

    python benchmarks/run.py [--quick] [--json-out benchmarks/results.json]

For each model and target: build with edgekit (edgekit.build) and with each reference flow, each in
its own subprocess (build wall time, peak RSS); then load every artifact in this process and compare
accuracy / fidelity on the same held-out inputs, size, and latency timed interleaved on one input.
Then edgekit's build time and peak memory as the calibration set and the model grow.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/run.py` from anywhere

from benchmarks import measure, report  # noqa: E402
from benchmarks.models import ALL_MODELS, ROOT, Case, float_outputs, prepare, split  # noqa: E402
from benchmarks.reference_flows import BY_TARGET  # noqa: E402

if TYPE_CHECKING:
    from benchmarks.models import Split

GOALS = {"latency": 1.05, "size": 1.0, "build": 1.5}  # edgekit/reference at most; accuracy: at least the reference's


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    models = args.models or (["digits"] if args.quick else list(ALL_MODELS))
    targets = args.targets or (["rpi", "android"] if args.quick else ["rpi", "android", "ios"])
    runs = args.runs or (30 if args.quick else 60)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgekit-bench-"))
    started = time.time()
    settings = {"latency_runs": runs, "latency_warmup": 10, "ort_threads": measure.ORT_THREADS, "goals": GOALS}
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "versions": versions(),
                     "quick": args.quick, "settings": settings, "comparisons": [], "failures": [],
                     "scaling": {"calibration": [], "model": []}}  # fmt: skip
    warm_up(work, targets)
    pair = 0
    for name in models:
        case = prepare(name, work / "models")
        for target in targets:
            compare(case, target, work / name / target, runs, results, flip=pair % 2 == 1)
            pair += 1
            _save(results, Path(args.json_out))  # a long run interrupted still leaves what it measured
    scaling(models, targets, args.quick, work, results)
    results["total_seconds"] = round(time.time() - started, 1)
    text = report.markdown(results)
    print(text)
    _save(results, Path(args.json_out))
    if args.results_md or not args.quick and not args.models and not args.targets:
        Path(args.results_md or ROOT / "benchmarks" / "RESULTS.md").write_text(report.results_page(results, text))
    return 0


def compare(case: Case, target: str, folder: Path, runs: int, results: dict, *, flip: bool = False) -> None:
    """Build with edgekit and every reference flow for `target`, then measure them side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    data = split(case, target)
    np.save(folder / "calibration.npy", data.calibration)
    np.save(folder / "example.npy", data.evaluation[:1])
    flows = [f for f in BY_TARGET[target] if f != "olive" or olive_available()]
    if "olive" in BY_TARGET[target] and "olive" not in flows:
        results["failures"].append(
            {"model": case.name, "target": target, "flow": "olive", "error": "olive-ai is not installed"}
        )
    builds: dict[str, dict] = {}
    order = ["edgekit", *flows]
    for flow in reversed(order) if flip else order:  # alternate who builds first (caches, machine load)
        builds[flow] = build(case, target, flow, folder / flow, folder)
        if not builds[flow]["ok"]:
            results["failures"].append(
                {
                    "model": case.name,
                    "target": target,
                    "flow": flow,
                    "error": builds[flow]["error"],
                    "traceback": builds[flow].get("traceback", ""),
                }
            )
            print(f"[bench] {case.name}/{target}/{flow} FAILED: {builds[flow]['error']}", file=sys.stderr)
    if not builds["edgekit"]["ok"]:
        return
    ek = builds["edgekit"]
    used = ek["manifest"]["data"].get("calibration_size")
    if used != len(data.calibration):  # the comparison is only fair on the same calibration samples
        raise SystemExit(f"edgekit calibrated on {used} samples, the reference flows on {len(data.calibration)}")
    figures = measure_all({f: Path(b["artifact"]) for f, b in builds.items() if b["ok"]}, case, data, runs, target)
    for flow in flows:
        if builds[flow]["ok"]:
            results["comparisons"].append(
                report.comparison(case.name, target, flow, builds["edgekit"], builds[flow], figures, GOALS)
            )


def measure_all(artifacts: dict[str, Path], case: Case, data: Split, runs: int, target: str) -> dict[str, Any]:
    """Size for every artifact; quality and interleaved latency for those a host runtime can run."""
    figures: dict[str, Any] = {flow: {"size_bytes": measure.size_bytes(path)} for flow, path in artifacts.items()}
    if target == "ios":  # no Core ML runtime on Linux: size (and build) only
        return figures
    runners = {flow: measure.runner(path) for flow, path in artifacts.items()}
    reference = float_outputs(case, data.evaluation)
    for flow, run in runners.items():
        figures[flow]["quality"] = measure.fidelity(
            reference, measure.outputs(run, data.evaluation), data.evaluation_labels
        )
    if data.evaluation_labels is not None:
        figures["float_top1"] = measure.fidelity(reference, reference, data.evaluation_labels)["top1"]
    timed = measure.latency(runners, np.ascontiguousarray(data.evaluation[:1]), warmup=10, rounds=runs)
    for flow, t in timed.items():
        figures[flow]["latency"] = t
    return figures


def build(
    case: Case,
    target: str,
    flow: str,
    out: Path,
    folder: Path,
    extra: tuple[str, ...] = (),
    *,
    keep_failed: bool = False,
) -> dict:
    """Run one build in a fresh Python process and return its BENCH_RESULT (`keep_failed`: keep a missed gate's)."""
    job = {"case": dataclasses.asdict(case), "target": target, "flow": flow, "out": str(out), "extra": list(extra),
           "calibration": str(folder / "calibration.npy"), "example": str(folder / "example.npy"),
           "keep_failed": keep_failed}  # fmt: skip
    env = {
        **os.environ,
        "OLIVE_DISABLE_TELEMETRY": "1",
        "CI": "true",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    print(f"[bench] building {case.name} for {target} with {flow} {' '.join(extra)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module; the job is JSON this script wrote
            [sys.executable, "-m", "benchmarks.build_one", json.dumps(job, default=str)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "timed out after 1800 s"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        return {"ok": False, "error": f"exit {proc.returncode}: {last}"[:400]}
    result = json.loads(line[len("BENCH_RESULT ") :])
    result["process_seconds"] = time.perf_counter() - started
    return result


def scaling(models: list[str], targets: list[str], quick: bool, work: Path, results: dict) -> None:
    """edgekit build time and peak memory as calibration grows (synthetic inputs) and as the model grows."""
    name = "digits" if quick or "mobilenet_v2" not in models else "mobilenet_v2"
    base = prepare(name, work / "models")
    case = dataclasses.replace(base, data=None, overrides=())  # synthetic inputs: any calibration size
    for target in (t for t in ("rpi", "android") if t in targets):
        for n in (32, 128) if quick else (32, 128, 512):
            extra = (f"data.synthetic_samples={2 * n}", f"data.calibration_size={n}", "data.evaluation_size=32")
            folder = work / "scaling" / f"{target}-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            b = build(case, target, "edgekit", folder / "out", folder, extra)
            row = {"model": name, "target": target, "calibration_samples": n, "ok": b["ok"], "error": b.get("error")}
            if b["ok"]:
                row |= {
                    "build_s": b["seconds"],
                    "peak_rss_mb": b["peak_rss_mb"],
                    "seconds_by_stage": b["manifest"]["seconds_by_stage"],
                }
            results["scaling"]["calibration"].append(row)
    for c in results["comparisons"]:  # the model axis reuses the main builds (calibration 128)
        if (
            c["model"] in ("digits", "mobilenet_v2", "resnet18")
            and c["target"] in ("rpi", "android")
            and c["reference"] in ("executorch", "onnxruntime")
        ):
            ek, ref = c["edgekit"], c["ref"]
            results["scaling"]["model"].append({"model": c["model"], "target": c["target"], "build_s": ek["build_s"],
                                                "peak_rss_mb": ek["peak_rss_mb"], "reference_build_s": ref["build_s"],
                                                "reference_peak_rss_mb": ref["peak_rss_mb"]})  # fmt: skip


def warm_up(work: Path, targets: list[str]) -> None:
    """Build digits once per target untimed: the first build after boot reads GBs of libraries from disk."""
    case = prepare("digits", work / "models")
    folder = work / "warm-up"
    folder.mkdir(parents=True, exist_ok=True)
    for target in (t for t in targets if t != "ios"):
        build(case, target, "edgekit", folder / target, folder)


def olive_available() -> bool:
    return importlib.util.find_spec("olive") is not None


def machine() -> dict:
    model = "unknown"
    lscpu = shutil.which("lscpu")  # an absolute path, so the command is not looked up again at run time
    try:
        if lscpu is not None:
            out = subprocess.run([lscpu], capture_output=True, text=True, check=True).stdout  # noqa: S603 - fixed command
            model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in (
        "edgekit-deploy",
        "torch",
        "torchvision",
        "torchao",
        "executorch",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "coremltools",
        "olive-ai",
        "numpy",
    ):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=_jsonable))


def _jsonable(value: object) -> object:
    return float(value) if isinstance(value, np.floating) else str(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="digits only, rpi + android, fewer latency runs (a few minutes)"
    )
    p.add_argument("--models", nargs="*", choices=ALL_MODELS, help=f"default: all ({', '.join(ALL_MODELS)})")
    p.add_argument("--targets", nargs="*", choices=("rpi", "android", "ios"), help="default: rpi android ios")
    p.add_argument("--runs", type=int, help="timed latency rounds per artifact (default 60; 30 with --quick)")
    p.add_argument("--json-out", default=str(ROOT / "benchmarks" / "results.json"))
    p.add_argument("--results-md", help="write the RESULTS.md page here (a full run writes benchmarks/RESULTS.md)")
    p.add_argument("--workdir", help="where models and artifacts go (default: a new temporary folder)")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
