"""Classify images with an edgekit rpi artifact, using only onnxruntime and numpy.

Everything the app must know comes from the artifact's manifest.json: the input name and shape,
the preprocessing (scale, mean, std, layout) and the labels. Nothing here imports edgekit.

    python classify.py dist/digits-rpi images.npy            # uint8 images, (N, H, W[, C])
    python classify.py dist/digits-rpi digit.pgm              # one binary PGM image
    python classify.py dist/digits-rpi --self-test            # the artifact's golden vectors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load_artifact(folder: Path) -> tuple[ort.InferenceSession, dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(manifest["runtime"].get("threads", 4))
    session = ort.InferenceSession(
        str(folder / manifest["artifact"]["file"]), options, providers=["CPUExecutionProvider"]
    )
    return session, manifest


def preprocess(pixels: np.ndarray, prep: dict) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 (1, C, H, W): (x * scale - mean) / std, per the manifest."""
    x = pixels.astype(np.float32) * np.float32(prep.get("scale", 1.0))
    if x.ndim == 2:
        x = x[..., None]
    if prep.get("mean"):
        x = x - np.asarray(prep["mean"], dtype=np.float32)
    if prep.get("std"):
        x = x / np.asarray(prep["std"], dtype=np.float32)
    if prep.get("layout", "NCHW") == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None]).astype(np.float32)


def read_pgm(path: Path) -> np.ndarray:
    """Read a binary (P5) 8-bit PGM image."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval, skipping comments
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P5" or int(fields[3]) > 255:
        raise SystemExit(f"{path}: only 8-bit binary PGM (P5) is supported")
    width, height = int(fields[1]), int(fields[2])
    return np.frombuffer(data[pos + 1 : pos + 1 + width * height], dtype=np.uint8).reshape(height, width)


def classify(session: ort.InferenceSession, manifest: dict, images: np.ndarray) -> list[tuple[str, float]]:
    labels = manifest["io"].get("labels") or []
    name = manifest["io"]["inputs"][0]["name"]
    results = []
    for image in images:
        logits = session.run(None, {name: preprocess(image, manifest["io"]["preprocessing"])})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(np.argmax(probs))
        results.append((labels[best] if best < len(labels) else str(best), float(probs[best])))
    return results


def self_test(session: ort.InferenceSession, manifest: dict, folder: Path) -> bool:
    """Run the golden inputs and compare with the expected outputs within the manifest's tolerance."""
    golden = manifest["golden"]
    worst = 0.0
    for sample in golden["samples"]:  # every input and output by name, never by position
        feeds = {name: np.load(folder / path) for name, path in sample["inputs"].items()}
        names = list(sample["outputs"])
        for name, out in zip(names, session.run(names, feeds), strict=True):
            worst = max(worst, float(np.max(np.abs(out - np.load(folder / sample["outputs"][name])))))
    ok = worst <= golden["atol"]
    print(f"self-test {'passed' if ok else 'FAILED'}: max abs error {worst:.3g} (tolerance {golden['atol']:.3g})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path, help="an edgekit rpi artifact folder")
    parser.add_argument("images", type=Path, nargs="?", help=".npy of uint8 images, or a .pgm image")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    session, manifest = load_artifact(args.artifact)
    if args.self_test:
        return 0 if self_test(session, manifest, args.artifact) else 1
    if args.images is None:
        parser.error("give images or --self-test")
    images = read_pgm(args.images)[None] if args.images.suffix == ".pgm" else np.load(args.images)
    if images.ndim == len(manifest["io"]["inputs"][0]["shape"]) - 2:  # a single image
        images = images[None]
    for label, p in classify(session, manifest, images):
        print(f"{label}\t{p:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
