"""Build models for every target, verify and bundle each artifact, and write index.json: edgekit's Python API only.

    python examples/iot-pipeline/pipeline.py --out dist/iot
    python examples/iot-pipeline/pipeline.py --out dist/iot --targets rpi,android --bench
    python examples/iot-pipeline/pipeline.py --out dist/iot --model kws=models/kws.pt2,data/kws.npz

For each model and target: `edgekit.build` (an artifact that misses its accuracy gate is kept, marked
failed, so that the index can say what it measured), `edgekit.verify` (files, golden re-run in the
runtime, recorded gate), `edgekit.bundle` (a deterministic .tar.gz with the manifest inside) and,
with --bench, `edgekit.bench` (host latency and peak memory; not for Core ML off macOS). The index
lists every attempt with its status, metrics, sizes and the bundle's sha256; paths in it are
relative to --out. Exit status: 0 when every build and verify held, else the first failure's
documented edgekit exit status (7 accuracy gate failed, 4 missing runtime, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edgekit

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "digits"
TARGETS = ("rpi", "android", "ios")
METRICS = ("float_top1", "artifact_top1", "top1_drop", "top1_agreement", "sqnr_db")  # what the index keeps


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: Path
    data: Path


def build_verify_bundle(
    spec: ModelSpec, target: str, out: Path, overrides: tuple[str, ...], bench: bool
) -> dict[str, Any]:
    """Return the index entry of one model on one target; an edgekit error becomes its status, not a crash."""
    entry: dict[str, Any] = {"model": spec.name, "target": target}
    try:
        built = edgekit.build(str(spec.model), target=target, data=spec.data, out_dir=out / "artifacts",
                              name=spec.name, overrides=overrides, allow_accuracy_failure=True)  # fmt: skip
        folder, manifest = built.path, built.manifest
    except edgekit.EdgekitError as exc:
        entry |= {"status": "error", "exit_status": int(exc.status), "error": exc.message, "hint": exc.hint}
        if exc.artifact is None:  # nothing kept: nothing to verify or bundle
            return entry
        folder, manifest = exc.artifact, edgekit.read_manifest(exc.artifact)
    entry |= describe(manifest, folder, out)
    verified = edgekit.verify(folder)
    entry["verify"] = {"status": verified.status, "exit_status": int(verified.exit_status),
                       "problems": list(verified.problems)}  # fmt: skip
    bundle = edgekit.bundle(folder, out / "bundles" / f"{folder.name}.tar.gz")
    entry["bundle"] = {"path": str(bundle.relative_to(out)), "bytes": bundle.stat().st_size, "sha256": sha256(bundle)}
    if bench:
        entry["bench"] = measure(folder)
    entry.setdefault("status", "ok" if verified.exit_status == 0 else "error")
    entry.setdefault("exit_status", int(verified.exit_status))
    return entry


def describe(manifest: edgekit.Manifest, folder: Path, out: Path) -> dict[str, Any]:
    """Return what the index says about one artifact, from its manifest."""
    accuracy, size, gate = manifest.accuracy, manifest.size, manifest.accuracy.gate
    return {
        "artifact": str((folder / manifest.artifact.file).relative_to(out)),
        "scheme": manifest.quantize.get("scheme"),
        "accuracy": {
            "status": accuracy.status,
            "checked_with": accuracy.checked_with,
            "reason": accuracy.reason,
            "metrics": {k: accuracy.metrics[k] for k in METRICS if k in accuracy.metrics},
            "gate": None if gate is None else {"rule": gate.rule, "value": gate.value, "passed": gate.passed},
        },
        "size": {"bytes": size.artifact_bytes, "over_float": size.artifact_over_float},
        "source_sha256": manifest.source_model.get("sha256"),
        "toolchain": dict(manifest.toolchain),
        "warnings": list(manifest.warnings),
    }


def measure(folder: Path) -> dict[str, Any]:
    try:
        found = edgekit.bench(folder, runs=50, warmup=5)
    except edgekit.EdgekitError as exc:
        return {"measured": False, "reason": exc.message}
    return {"measured": True, "median_ms": found.latency.median_ms, "p90_ms": found.latency.p90_ms,
            "peak_memory_growth_bytes": found.memory.peak_growth_bytes,
            "build_artifact_over_float": found.vs_float.artifact_over_float}  # fmt: skip


def sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_pipeline(
    models: list[ModelSpec], targets: tuple[str, ...], out: Path, overrides: tuple[str, ...] = (), bench: bool = False
) -> tuple[dict[str, Any], int]:
    """Build, verify and bundle every model for every target; write out/index.json; return it and the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in models:
        for target in targets:
            print(f"pipeline: {spec.name} for {target} ...", file=sys.stderr, flush=True)
            entry = build_verify_bundle(spec, target, out, overrides, bench)
            print(f"pipeline: {spec.name} for {target}: {entry['status']}", file=sys.stderr, flush=True)
            entries.append(entry)
    index = {
        "edgekit": edgekit.__version__,
        "targets": list(targets),
        "models": [{"name": m.name, "model": str(m.model), "data": str(m.data)} for m in models],
        "overrides": list(overrides),
        "artifacts": entries,
        "ok": all(e["status"] == "ok" for e in entries),
    }
    (out / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    failed = [e["exit_status"] for e in entries if e["exit_status"]]
    return index, failed[0] if failed else 0


def parse_model(text: str) -> ModelSpec:
    name, _, files = text.partition("=")
    model, _, data = files.partition(",")
    if not (name and model and data):
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=MODEL,DATA")
    return ModelSpec(name=name, model=Path(model), data=Path(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dist/iot"), help="where artifacts, bundles, index.json go")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets [%(default)s]")
    parser.add_argument("--model", dest="models", action="append", type=parse_model, metavar="NAME=MODEL,DATA",
                        help="a model and its data (repeatable; default: the digits example)")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every build, e.g. latency.enabled=false")  # fmt: skip
    parser.add_argument("--bench", action="store_true", help="also time each artifact with edgekit.bench")
    args = parser.parse_args(argv)
    models = args.models or [ModelSpec(name="digits", model=DIGITS / "model.pt2", data=DIGITS / "data.npz")]
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    index, status = run_pipeline(models, targets, args.out, tuple(args.overrides), args.bench)
    for entry in index["artifacts"]:
        bundle = entry.get("bundle", {})
        print(f"{entry['model']:<10} {entry['target']:<8} {entry['status']:<6} "
              f"{entry.get('accuracy', {}).get('status', '-'):<8} {bundle.get('sha256', '-')[:16]}")  # fmt: skip
    print(f"index: {args.out / 'index.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
