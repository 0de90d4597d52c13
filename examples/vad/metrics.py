"""Task metric for the VAD example: do float and artifact make the same speech / non-speech decisions?

edgekit calls `decision_agreement(float_outputs, artifact_outputs, labels)` on the evaluation split
(`--metric examples/vad/metrics.py:decision_agreement`), after running both models closed loop over
consecutive chunks, each on its own state. Gate on it with a rule:

    [[gate.rules]]
    metric = "decision_agreement"
    op = ">="
    value = 98.0
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # silero-vad's default speech threshold (get_speech_timestamps, VADIterator)


def decisions(prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Return one speech (True) / non-speech (False) decision per chunk."""
    return np.asarray(prob).reshape(len(prob), -1)[:, 0] > threshold


def decision_agreement(
    float_outputs: dict[str, np.ndarray], artifact_outputs: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, float]:
    """Return the % of chunks with the same decision, the % called speech by each, and each one's % correct."""
    reference, artifact = decisions(float_outputs["prob"]), decisions(artifact_outputs["prob"])
    found = {
        "decision_agreement": 100.0 * float(np.mean(reference == artifact)),
        "speech_float": 100.0 * float(np.mean(reference)),
        "speech_artifact": 100.0 * float(np.mean(artifact)),
    }
    if labels is not None:  # the generator's ground truth: was the chunk mostly speech?
        truth = np.asarray(labels).astype(bool)
        found["float_vs_truth"] = 100.0 * float(np.mean(reference == truth))
        found["artifact_vs_truth"] = 100.0 * float(np.mean(artifact == truth))
    return found
