"""How sure a gate can be: paired confidence intervals, flipped samples, per-class drops, the size needed.

Float and artifact run on the same samples, so their difference is paired: the interval of the top-1
drop comes from resampling samples (a seeded paired bootstrap), not from two independent accuracies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Z95 = 1.959964
BOOTSTRAP_ROUNDS = 2000
MAX_LISTED = 50  # flipped samples listed by index in the manifest


def top1_evidence(
    reference: np.ndarray, test: np.ndarray, labels: np.ndarray | None, label_names: tuple[str, ...] = (), seed: int = 0
) -> dict[str, Any]:
    """Return flipped samples, the 95% interval of the top-1 drop (with labels) and per-class drops."""
    ref = np.argmax(reference.reshape(len(reference), -1), axis=1)
    art = np.argmax(test.reshape(len(test), -1), axis=1)
    flipped = np.flatnonzero(ref != art)
    found: dict[str, Any] = {
        "samples": len(ref),
        "flipped": len(flipped),
        "flipped_indices": [int(i) for i in flipped[:MAX_LISTED]],
        "agreement_ci95": _wilson(len(ref) - len(flipped), len(ref)),
    }
    if labels is None:
        return found
    diff = (ref == labels).astype(np.float64) - (art == labels).astype(np.float64)  # +1: artifact lost it
    found["top1_drop_ci95"] = paired_interval(diff, seed)
    found["per_class_drop"] = _per_class(ref, art, labels, label_names)
    if found["per_class_drop"]:
        worst = max(found["per_class_drop"].items(), key=lambda kv: kv[1]["drop"])
        found["worst_class"] = {"label": worst[0], **worst[1]}
    return found


def paired_interval(diff: np.ndarray, seed: int = 0) -> list[float]:
    """Return the 95% bootstrap interval of 100 * mean(diff), resampling samples with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diff), size=(BOOTSTRAP_ROUNDS, len(diff)))
    means = 100.0 * diff[picks].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def samples_needed(diff_sd: float, margin: float) -> int:
    """Return about how many samples make the 95% interval of a paired mean (in points) narrower than `margin`."""
    sd = max(diff_sd, 1.0 / 100.0)  # never claim certainty from zero observed flips
    return int(np.ceil((Z95 * 100.0 * sd / max(margin, 1e-6)) ** 2))


def _wilson(successes: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 100.0]
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return [float(100.0 * max(0.0, centre - half)), float(100.0 * min(1.0, centre + half))]


def _per_class(ref: np.ndarray, art: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    found = {}
    for label in np.unique(labels):
        mask = labels == label
        float_acc, art_acc = 100.0 * np.mean(ref[mask] == label), 100.0 * np.mean(art[mask] == label)
        name = names[int(label)] if 0 <= int(label) < len(names) else str(int(label))
        found[name] = {"samples": int(mask.sum()), "float_top1": float_acc, "artifact_top1": art_acc,
                       "drop": float(float_acc - art_acc)}  # fmt: skip
    return found
