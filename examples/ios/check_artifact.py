"""Check an edgekit Core ML artifact on a Mac: load the .mlpackage, run the golden inputs, compare.

Usage (macOS only; Core ML predictions need the Core ML runtime):

    pip install coremltools numpy
    python check_artifact.py dist/digits-ios

It reads manifest.json (golden count and tolerances, preprocessing, labels), checks that the
contract stored in the model's own metadata matches the manifest, predicts every
every named input of each golden sample (manifest "golden" -> "samples") and compares every named
output. Exit status 0 when all pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="the artifact folder (holds manifest.json and model.mlpackage)")
    parser.add_argument("--compute-units", default="ALL", choices=["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"])
    args = parser.parse_args(argv)

    if sys.platform != "darwin":
        print("Core ML predictions need macOS; this machine has no Core ML runtime.", file=sys.stderr)
        return 2
    import coremltools as ct

    manifest = json.loads((args.artifact / "manifest.json").read_text())
    model = ct.models.MLModel(
        str(args.artifact / "model.mlpackage"), compute_units=getattr(ct.ComputeUnit, args.compute_units)
    )
    problems = check_metadata(model.user_defined_metadata, manifest)

    golden = manifest.get("golden", {})
    count, atol, rtol = int(golden.get("count", 0)), float(golden.get("atol", 1e-3)), float(golden.get("rtol", 1e-3))
    # Core ML has no int64: token ids go in as the dtype the model declares (edgekit.input_dtypes).
    dtypes = json.loads(model.user_defined_metadata.get("edgekit.input_dtypes", "{}"))
    for i, sample in enumerate(golden.get("samples", [])):
        feeds = {n: np.load(args.artifact / p).astype(dtypes.get(n, "float32")) for n, p in sample["inputs"].items()}
        got = model.predict(feeds)
        for name, path in sample["outputs"].items():
            expected = np.load(args.artifact / path)
            out = np.asarray(got[name]).reshape(expected.shape)
            worst = float(np.max(np.abs(out.astype(np.float64) - expected)))
            ok = np.allclose(out, expected, atol=atol, rtol=rtol)
            print(f"golden {i} {name}: {'ok' if ok else 'MISMATCH'} (max abs error {worst:.3g}, atol {atol})")
            if not ok:
                problems.append(f"golden sample {i} output '{name}' differs")
    if count == 0:
        problems.append("manifest lists no golden samples")
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print("artifact check passed" if not problems else "artifact check FAILED")
    return 0 if not problems else 1


def check_metadata(meta: dict[str, str], manifest: dict) -> list[str]:
    """Return differences between the contract inside the model and the manifest's."""
    problems = []
    io = manifest.get("io", {})
    if "edgekit.preprocessing" not in meta:
        return ["the model carries no edgekit.preprocessing metadata"]
    stored = json.loads(meta["edgekit.preprocessing"])
    expected = io.get("preprocessing")
    if expected is not None and stored != expected:
        problems.append(f"preprocessing in the model {stored} differs from the manifest {expected}")
    labels = json.loads(meta.get("edgekit.labels", "[]"))
    if io.get("labels") is not None and labels != io["labels"]:
        problems.append("labels in the model differ from the manifest")
    return problems


if __name__ == "__main__":
    sys.exit(main())
