"""Pure functions that compare an artifact's outputs with the float model's (and with labels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the signal-to-quantization-noise ratio 20*log10(||ref|| / ||ref - test||) in dB."""
    ref = reference.astype(np.float64).ravel()
    noise = np.linalg.norm(ref - test.astype(np.float64).ravel())
    if noise == 0.0:
        return float("inf")
    return float(20.0 * np.log10(np.linalg.norm(ref) / noise))


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the mean cosine similarity between matching rows (one row per sample)."""
    a = reference.astype(np.float64).reshape(len(reference), -1)
    b = test.astype(np.float64).reshape(len(test), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)))


def max_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    return float(np.max(np.abs(reference.astype(np.float64) - test.astype(np.float64))))


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Return top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.argmax(logits.reshape(len(logits), -1), axis=1) == labels))


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the percentage of samples whose top-1 class is the same in both outputs."""
    a = np.argmax(reference.reshape(len(reference), -1), axis=1)
    b = np.argmax(test.reshape(len(test), -1), axis=1)
    return float(100.0 * np.mean(a == b))


def top5_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the percentage of samples whose float top-1 class is among the artifact's top 5."""
    a = np.argmax(reference.reshape(len(reference), -1), axis=1)
    b = np.argsort(test.reshape(len(test), -1), axis=1)[:, -5:]
    return float(100.0 * np.mean([x in row for x, row in zip(a, b, strict=True)]))


def pixel_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the percentage of pixels whose class (argmax over axis 1 of N, C, H, W) is the same."""
    return float(100.0 * np.mean(np.argmax(reference, axis=1) == np.argmax(test, axis=1)))


def mean_iou(reference: np.ndarray, test: np.ndarray) -> float:
    """Return the mean over classes present of the IoU between the float and artifact class maps, in percent."""
    a, b = np.argmax(reference, axis=1), np.argmax(test, axis=1)
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        union = np.sum((a == c) | (b == c))
        ious.append(np.sum((a == c) & (b == c)) / union)
    return float(100.0 * np.mean(ious))


def sequence_agreement(reference: np.ndarray, test: np.ndarray, blank: int = 0) -> float:
    """Return the % of samples whose greedy CTC decoding (N, T, C: argmax, merge repeats, drop blank) is equal."""

    def decode(scores: np.ndarray) -> list[int]:
        best = np.argmax(scores, axis=-1)
        return [int(c) for i, c in enumerate(best) if c != blank and (i == 0 or c != best[i - 1])]

    return float(100.0 * np.mean([decode(r) == decode(t) for r, t in zip(reference, test, strict=True)]))


@dataclass(frozen=True, slots=True)
class Metric:
    """A registered metric: fn(float outputs, artifact outputs, labels) -> value."""

    fn: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
    higher_is_better: bool
    needs_labels: bool = False
    description: str = ""


REGISTRY: dict[str, Metric] = {
    "sqnr_db": Metric(lambda r, t, _: sqnr_db(r, t), True, description="20 log10(|float| / |float - artifact|)"),
    "cosine": Metric(lambda r, t, _: cosine(r, t), True, description="mean cosine similarity per sample"),
    "max_abs_error": Metric(lambda r, t, _: max_abs_error(r, t), False),
    "top1_agreement": Metric(lambda r, t, _: top1_agreement(r, t), True, description="% same top-1 class"),
    "exact_agreement": Metric(
        lambda r, t, _: float(100.0 * np.mean([np.array_equal(a, b) for a, b in zip(r, t, strict=True)])),
        True,
        description="% samples whose output is exactly equal (integer outputs)",
    ),
    "top5_agreement": Metric(lambda r, t, _: top5_agreement(r, t), True),
    "pixel_agreement": Metric(lambda r, t, _: pixel_agreement(r, t), True, description="% same class per pixel"),
    "mean_iou": Metric(lambda r, t, _: mean_iou(r, t), True, description="mean IoU of float vs artifact class maps"),
    "sequence_agreement": Metric(lambda r, t, _: sequence_agreement(r, t), True, description="% equal CTC strings"),
    "float_top1": Metric(lambda r, t, y: top1_accuracy(r, y), True, needs_labels=True),  # type: ignore[arg-type]
    "artifact_top1": Metric(lambda r, t, y: top1_accuracy(t, y), True, needs_labels=True),  # type: ignore[arg-type]
    "top1_drop": Metric(
        lambda r, t, y: top1_accuracy(r, y) - top1_accuracy(t, y),  # type: ignore[arg-type]
        False,
        needs_labels=True,
        description="float top-1 minus artifact top-1, in points",
    ),
}


def metrics_for(shape: tuple[int, ...], *, labels: bool) -> list[str]:
    """Choose the metrics that mean something for an output of this shape (batch first)."""
    chosen = ["sqnr_db", "cosine", "max_abs_error"]
    if len(shape) == 2 and shape[1] > 1:  # scores per class
        chosen += ["top1_agreement"] + (["top5_agreement"] if shape[1] >= 5 else [])
        chosen += ["float_top1", "artifact_top1", "top1_drop"] if labels else []
    elif len(shape) == 4 and shape[1] > 1:  # a class map (N, C, H, W): segmentation
        chosen += ["pixel_agreement", "mean_iou"]
    return chosen


def measure(names: list[str], reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Return {metric: value} for the registered metrics named."""
    if reference.shape != test.shape:
        from edgekit.errors import InternalError

        raise InternalError(f"artifact output shape {test.shape} differs from the float output {reference.shape}")
    reference = reference.astype(np.float32, copy=False)
    test = test.astype(np.float32, copy=False)
    return {name: float(REGISTRY[name].fn(reference, test, labels)) for name in names}


def compare(reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Return every metric that applies, as plain floats for the manifest."""
    if reference.shape != test.shape:
        from edgekit.errors import InternalError

        raise InternalError(f"artifact output shape {test.shape} differs from the float output {reference.shape}")
    metrics = {
        "sqnr_db": sqnr_db(reference, test),
        "cosine": cosine(reference, test),
        "max_abs_error": max_abs_error(reference, test),
        "top1_agreement": top1_agreement(reference, test),
    }
    if labels is not None:
        metrics["float_top1"] = top1_accuracy(reference, labels)
        metrics["artifact_top1"] = top1_accuracy(test, labels)
        metrics["top1_drop"] = metrics["float_top1"] - metrics["artifact_top1"]
    return metrics
