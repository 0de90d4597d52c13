"""Pure functions that compare an artifact's outputs with the float model's (and with labels)."""

from __future__ import annotations

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
