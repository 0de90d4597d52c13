"""Calibration and evaluation data: an .npz file, a folder of images, or (loudly) synthetic inputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.hashing import sha256_of
from edgekit.recipe import DataConfig, Preprocessing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """Inputs split once, deterministically, into a calibration part and an evaluation part.

    `kind` is "npz", "images" or "synthetic"; synthetic data never yields an accuracy verdict.
    """

    calibration: np.ndarray
    evaluation: np.ndarray
    calibration_labels: np.ndarray | None = None
    evaluation_labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)
    kind: str = "npz"
    provenance: dict[str, Any] = field(default_factory=dict)  # path, sha256, sizes, seed

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"

    @property
    def has_labels(self) -> bool:
        return self.evaluation_labels is not None


def load_data(path: Path | None, config: DataConfig, preprocessing: Preprocessing, example: np.ndarray) -> Dataset:
    """Load `path` (or make synthetic inputs shaped like `example`) and split it per `config`."""
    if path is None:
        return synthetic_data(config, example)
    if not path.exists():
        raise InputError(f"data '{path}' does not exist", hint="pass an .npz file or a folder of images")
    labels: np.ndarray | None
    if path.is_dir():
        inputs, labels, names = _read_image_folder(path, preprocessing)
        kind, prep = "images", preprocessing_table(preprocessing)
        digest = sha256_of(path)
    elif path.suffix == ".npz":
        inputs, labels, names, prep = _read_npz(path)
        kind, digest = "npz", sha256_of(path)
        prep = prep or preprocessing_table(preprocessing)
    else:
        raise InputError(
            f"data '{path.name}' is neither an .npz file nor a folder",
            hint="save arrays with numpy.savez(path, inputs=..., labels=...)",
        )
    return _split(inputs, labels, names, prep, kind, config, {"path": str(path), "sha256": digest})


def synthetic_data(config: DataConfig, example: np.ndarray) -> Dataset:
    """Make seeded inputs shaped like `example`: enough to calibrate, never to judge accuracy."""
    rng = np.random.default_rng(config.seed)
    shape = (config.synthetic_samples, *example.shape[1:])
    if np.issubdtype(example.dtype, np.integer):
        high = max(int(example.max()) + 1, 2)
        inputs = rng.integers(0, high, size=shape).astype(example.dtype)
    else:
        inputs = rng.standard_normal(shape).astype(example.dtype)
    half = max(1, len(inputs) // 2)
    return Dataset(
        calibration=inputs[:half],
        evaluation=inputs[half:],
        kind="synthetic",
        provenance={
            "path": None,
            "sha256": None,
            "seed": config.seed,
            "calibration_size": half,
            "evaluation_size": len(inputs) - half,
        },
    )


def check_shape(data: Dataset, example: np.ndarray) -> None:
    """Raise InputError when a sample's shape or dtype does not match the model input."""
    sample_shape = tuple(data.evaluation.shape[1:])
    want = tuple(example.shape[1:])
    if sample_shape != want:
        raise InputError(
            f"data samples have shape {sample_shape} but the model takes {want} (batch dimension excluded)",
            hint="fix the data, or give the model input with --input-shape",
        )
    if np.issubdtype(example.dtype, np.integer) != np.issubdtype(data.evaluation.dtype, np.integer):
        raise InputError(f"data dtype {data.evaluation.dtype} does not match the model input dtype {example.dtype}")


def preprocessing_table(p: Preprocessing) -> dict[str, Any]:
    return {
        "layout": p.layout,
        "color": p.color,
        "resize": list(p.resize),
        "scale": p.scale,
        "mean": list(p.mean),
        "std": list(p.std),
    }


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise InputError(f"data '{path.name}' is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "inputs" not in arrays:
        raise InputError(
            f"data '{path.name}' has no 'inputs' array (found: {', '.join(arrays) or 'nothing'})",
            hint="numpy.savez(path, inputs=x, labels=y)",
        )
    inputs, labels = arrays["inputs"], arrays.get("labels")
    if inputs.ndim == 0 or len(inputs) < 2:
        raise InputError(
            f"data '{path.name}' holds {0 if inputs.ndim == 0 else len(inputs)} samples; at least 2 are needed"
        )
    if inputs.dtype == np.float64:
        inputs = inputs.astype(np.float32)
    if labels is not None and labels.shape != (len(inputs),):
        raise InputError(f"data '{path.name}': labels have shape {labels.shape}, expected ({len(inputs)},)")
    names = tuple(str(n) for n in arrays.get("label_names", ()))
    prep = json.loads(str(arrays["preprocessing"])) if "preprocessing" in arrays else {}
    return inputs, labels, names, prep


def _read_image_folder(path: Path, p: Preprocessing) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read `path/<label>/*.png` and apply the recipe's preprocessing to each image."""
    try:
        from PIL import Image
    except ImportError:
        from edgekit.errors import MissingDependencyError

        raise MissingDependencyError(
            "reading image folders needs Pillow", hint="pip install 'edgekit-deploy[images]'"
        ) from None
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    inputs, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                image = Image.open(file).convert("L" if p.color == "grayscale" else "RGB")
            except Exception as exc:
                raise InputError(f"image '{file}' cannot be read ({exc})") from None
            if p.resize:
                image = image.resize((p.resize[1], p.resize[0]), Image.Resampling.BILINEAR)
            inputs.append(apply_preprocessing(np.asarray(image), p))
            labels.append(index)
    if len(inputs) < 2:
        raise InputError(
            f"image folder '{path}' holds {len(inputs)} images in class subfolders; at least 2 are needed",
            hint="lay it out as <folder>/<label>/<image>.png",
        )
    return np.stack(inputs), np.asarray(labels, dtype=np.int64), tuple(classes)


def apply_preprocessing(pixels: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Turn one HxW or HxWxC uint8 image into a float32 model input (CHW or HWC, no batch)."""
    x: np.ndarray = pixels.astype(np.float32) * np.float32(p.scale)
    if x.ndim == 2:
        x = x[..., None]
    if p.mean:
        x = x - np.asarray(p.mean, dtype=np.float32)
    if p.std:
        x = x / np.asarray(p.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if p.layout == "NCHW" else x)


def _split(inputs, labels, names, prep, kind, config: DataConfig, provenance) -> Dataset:  # type: ignore[no-untyped-def]
    n = len(inputs)
    order = np.random.default_rng(config.seed).permutation(n)
    n_cal = min(config.calibration_size, n // 2)
    n_eval = min(config.evaluation_size, n - n_cal)
    cal, ev = order[:n_cal], order[n_cal : n_cal + n_eval]
    return Dataset(
        calibration=inputs[cal],
        evaluation=inputs[ev],
        calibration_labels=None if labels is None else labels[cal],
        evaluation_labels=None if labels is None else labels[ev],
        label_names=names,
        preprocessing=prep,
        kind=kind,
        provenance={
            **provenance,
            "samples": n,
            "seed": config.seed,
            "calibration_size": n_cal,
            "evaluation_size": n_eval,
        },
    )
