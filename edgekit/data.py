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


Arrays = dict[str, np.ndarray]  # named model inputs, each with the samples along its first axis
RESERVED = ("labels", "label_names", "preprocessing")  # .npz keys that are not model inputs


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """Named inputs split once, deterministically, into a calibration part and an evaluation part.

    `kind` is "npz", "images" or "synthetic"; synthetic data never yields an accuracy verdict. An
    `ordered` split keeps the samples in file order (consecutive steps of a stateful model).
    """

    calibration: Arrays
    evaluation: Arrays
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

    @property
    def evaluation_count(self) -> int:
        return count_of(self.evaluation)

    @property
    def calibration_count(self) -> int:
        return count_of(self.calibration)


def count_of(arrays: Arrays) -> int:
    return min((len(a) for a in arrays.values()), default=0)


def take(arrays: Arrays, index: Any) -> Arrays:
    """Return the samples at `index` (a slice or index array) of every named array."""
    return {name: a[index] for name, a in arrays.items()}


def load_data(
    path: Path | None,
    config: DataConfig,
    preprocessing: Preprocessing,
    examples: Arrays,
    *,
    ordered: bool = False,
) -> Dataset:
    """Load `path` (or make synthetic inputs shaped like `examples`) and split it per `config`."""
    if path is None:
        return synthetic_data(config, examples)
    if not path.exists():
        raise InputError(f"data '{path}' does not exist", hint="pass an .npz file or a folder of images")
    labels: np.ndarray | None
    if path.is_dir():
        if len(examples) != 1:
            raise InputError(
                f"an image folder feeds one input, but the model takes {len(examples)}: {', '.join(examples)}",
                hint="save the inputs in an .npz file, one array per input name",
            )
        images, labels, names = _read_image_folder(path, preprocessing)
        inputs, kind, prep = {next(iter(examples)): images}, "images", preprocessing_table(preprocessing)
    elif path.suffix == ".npz":
        inputs, labels, names, prep = _read_npz(path, examples)
        kind = "npz"
        prep = prep or _declared_preprocessing(preprocessing)
    else:
        raise InputError(
            f"data '{path.name}' is neither an .npz file nor a folder",
            hint="save arrays with numpy.savez(path, inputs=..., labels=...)",
        )
    check_finite(inputs, path.name)
    provenance = {"path": str(path), "sha256": sha256_of(path)}
    return _split(inputs, labels, names, prep, kind, config, provenance, ordered=ordered)


def check_finite(inputs: Arrays, source: str) -> None:
    """Raise InputError when a floating-point input holds NaN or Inf: every metric on it would mean nothing."""
    for name, array in inputs.items():
        if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
            continue
        bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        what = " and ".join(k for k, f in (("NaN", np.isnan), ("Inf", np.isinf)) if f(array).any())
        raise InputError(
            f"data '{source}': input '{name}' holds {what} in {len(bad)} sample(s), the first at index {bad[0]}",
            hint="remove or repair those samples",
        )


def check_labels(data: Dataset, scores: np.ndarray, output: str) -> None:
    """Raise InputError when labels cannot be classes of the first output (N, classes): the top-1 gate
    would measure nothing. Other output shapes leave labels to custom metrics."""
    labels = data.evaluation_labels
    if labels is None or scores.ndim != 2 or scores.shape[1] < 2:
        return
    classes = scores.shape[1]
    if data.label_names and len(data.label_names) != classes:
        raise InputError(
            f"data has {len(data.label_names)} label names but output '{output}' scores {classes} classes",
            hint="give one label name per class, in the output's order",
        )
    every = labels if data.calibration_labels is None else np.concatenate([labels, data.calibration_labels])
    whole = np.issubdtype(every.dtype, np.integer) or (
        np.issubdtype(every.dtype, np.floating) and np.all(np.isfinite(every)) and np.all(every == np.round(every))
    )
    if not whole:
        raise InputError(f"data labels must be class indices (integers); got dtype {every.dtype}")
    if every.min() < 0 or every.max() >= classes:
        raise InputError(
            f"data labels range over {int(every.min())}..{int(every.max())} but output '{output}' scores "
            f"{classes} classes (0..{classes - 1})",
            hint="labels are class indices into the first output",
        )


def synthetic_data(config: DataConfig, examples: Arrays) -> Dataset:
    """Make seeded inputs shaped like `examples`: enough to calibrate, never to judge accuracy."""
    rng = np.random.default_rng(config.seed)
    inputs: Arrays = {}
    for name, example in examples.items():
        shape = (config.synthetic_samples, *example.shape[1:])
        if np.issubdtype(example.dtype, np.integer):
            high = max(int(example.max()) + 1, 2)
            inputs[name] = rng.integers(0, high, size=shape).astype(example.dtype)
        elif example.dtype == np.bool_:
            inputs[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            inputs[name] = rng.standard_normal(shape).astype(example.dtype)
    half = max(1, config.synthetic_samples // 2)
    return Dataset(
        calibration=take(inputs, slice(None, half)),
        evaluation=take(inputs, slice(half, None)),
        kind="synthetic",
        preprocessing={"status": "unknown", "reason": "no data given"},
        provenance={
            "path": None,
            "sha256": None,
            "seed": config.seed,
            "calibration_size": half,
            "evaluation_size": config.synthetic_samples - half,
        },
    )


def check_shape(data: Dataset, examples: Arrays, dynamic: dict[str, set[int]] | None = None) -> None:
    """Raise InputError naming the input whose samples' shape or dtype does not match the model.

    `dynamic` names the axes (batch included in the numbering) whose size may differ from the example's.
    """
    for name, example in examples.items():
        got = data.evaluation[name]
        free = (dynamic or {}).get(name, set())
        sample_shape = tuple(-1 if a + 1 in free else n for a, n in enumerate(got.shape[1:]))
        want = tuple(-1 if a + 1 in free else n for a, n in enumerate(example.shape[1:]))
        if sample_shape != want:
            raise InputError(
                f"data samples of '{name}' have shape {sample_shape} but the model takes {want} (batch dimension "
                "excluded)",
                hint="fix the data, or give the model input with --input-shape",
            )
        if np.issubdtype(example.dtype, np.integer) != np.issubdtype(got.dtype, np.integer):
            raise InputError(f"data dtype {got.dtype} of '{name}' does not match the model input dtype {example.dtype}")


def preprocessing_table(p: Preprocessing) -> dict[str, Any]:
    return {
        "layout": p.layout,
        "color": p.color,
        "resize": list(p.resize),
        "scale": p.scale,
        "mean": list(p.mean),
        "std": list(p.std),
    }


def _declared_preprocessing(p: Preprocessing) -> dict[str, Any]:
    """The recipe's preprocessing when it sets one; otherwise say it is unknown, never a silent default."""
    if p != Preprocessing():
        return preprocessing_table(p)
    return {
        "status": "unknown",
        "reason": "the data file has no 'preprocessing' entry and the recipe sets none; apps must know how the "
        "inputs were made",
    }


def _read_npz(path: Path, examples: Arrays) -> tuple[Arrays, np.ndarray | None, tuple[str, ...], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise InputError(f"data '{path.name}' is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    names = list(examples)
    classic = len(names) == 1 and "inputs" in arrays and names[0] not in arrays
    if classic:  # a one-input model's `inputs`: other arrays (raw pixels for an app test, say) are left alone
        arrays = {names[0]: arrays["inputs"], **{k: v for k, v in arrays.items() if k in RESERVED}}
    missing = [n for n in names if n not in arrays]
    if missing:
        found = ", ".join(arrays) or "nothing"
        example = ", ".join(f"{n}=..." for n in names)
        hint = "numpy.savez(path, inputs=x, labels=y)" if len(names) == 1 else f"numpy.savez(path, {example})"
        raise InputError(f"data '{path.name}' has no array for input '{missing[0]}' (found: {found})", hint=hint)
    extra = [k for k in arrays if k not in names and k not in RESERVED]
    if extra:
        raise InputError(
            f"data '{path.name}' has arrays that are not model inputs: {', '.join(extra)} (inputs: {', '.join(names)})",
            hint="name each array after a model input; labels go in 'labels'",
        )
    inputs = {n: arrays[n].astype(np.float32) if arrays[n].dtype == np.float64 else arrays[n] for n in names}
    counts = {n: 0 if a.ndim == 0 else len(a) for n, a in inputs.items()}
    if len(set(counts.values())) > 1:
        raise InputError(f"data '{path.name}': inputs hold different numbers of samples: {counts}")
    count = next(iter(counts.values()))
    if count < 2:
        raise InputError(f"data '{path.name}' holds {count} samples; at least 2 are needed")
    for n, a in inputs.items():
        want = examples[n].dtype
        if np.issubdtype(want, np.integer) and np.issubdtype(a.dtype, np.integer) and a.dtype != want:
            inputs[n] = a.astype(want)  # int32 token ids for an int64 input, say: same values
    labels = arrays.get("labels")
    if labels is not None and labels.shape != (count,):
        raise InputError(f"data '{path.name}': labels have shape {labels.shape}, expected ({count},)")
    label_names = tuple(str(n) for n in arrays.get("label_names", ()))
    prep = json.loads(str(arrays["preprocessing"])) if "preprocessing" in arrays else {}
    return inputs, labels, label_names, prep


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


def _split(
    inputs: Arrays,
    labels: np.ndarray | None,
    names: tuple[str, ...],
    prep: dict[str, Any],
    kind: str,
    config: DataConfig,
    provenance: dict[str, Any],
    *,
    ordered: bool,
) -> Dataset:
    n = count_of(inputs)
    order = np.arange(n) if ordered else np.random.default_rng(config.seed).permutation(n)
    n_cal = min(config.calibration_size, n // 2)
    n_eval = min(config.evaluation_size, n - n_cal)
    cal, ev = order[:n_cal], order[n_cal : n_cal + n_eval]
    return Dataset(
        calibration=take(inputs, cal),
        evaluation=take(inputs, ev),
        calibration_labels=None if labels is None else labels[cal],
        evaluation_labels=None if labels is None else labels[ev],
        label_names=names,
        preprocessing=prep,
        kind=kind,
        provenance={
            **provenance,
            "samples": n,
            "seed": config.seed,
            "order": "file order (consecutive steps)" if ordered else "seeded shuffle",
            "calibration_size": n_cal,
            "evaluation_size": n_eval,
        },
    )
