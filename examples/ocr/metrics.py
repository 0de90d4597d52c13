"""Task metrics for the OCR examples, called by edgekit as fn(float outputs, artifact outputs, labels).

- `word_accuracy` (recognizer): greedy CTC decoding of both outputs, as easyocr's `decode_greedy`
  does it; the % of words each one reads right (labels are the rendered words), the drop, and the %
  of words where float and artifact read the same string.
- `box_agreement` (CRAFT detector): boxes found in each one's text/link score maps the way easyocr's
  `getDetBoxes` finds them (thresholds, 4-connected components, size and peak filters), matched at
  IoU >= 0.5: the % of float boxes the artifact keeps (recall) and the % of artifact boxes that a
  float box explains (precision). Pixel-level agreement of a heat map says little: nearly every
  pixel is background, and a box survives small changes of its scores.
"""

from __future__ import annotations

import numpy as np

# easyocr/config.py, english_g2: class 0 is the CTC blank, class i > 0 is CHARACTERS[i - 1].
CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# easyocr.readtext defaults
TEXT_THRESHOLD, LINK_THRESHOLD, LOW_TEXT, MIN_SIZE = 0.7, 0.4, 0.4, 10


def decode(scores: np.ndarray) -> str:
    """Greedy CTC decoding of one (T, C) score matrix: argmax, merge repeats, drop the blank."""
    best = np.argmax(scores, axis=-1)
    return "".join(CHARACTERS[c - 1] for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1]))


def word_accuracy(
    float_outputs: dict[str, np.ndarray], artifact_outputs: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, float]:
    """Return word accuracy of float and artifact (with labels), their drop, and float/artifact agreement."""
    reference = [decode(s) for s in float_outputs["output"]]
    artifact = [decode(s) for s in artifact_outputs["output"]]
    found = {"word_agreement": 100.0 * float(np.mean([a == b for a, b in zip(reference, artifact, strict=True)]))}
    if labels is not None:
        truth = [str(w) for w in labels]
        found["word_accuracy_float"] = 100.0 * float(np.mean([p == t for p, t in zip(reference, truth, strict=True)]))
        found["word_accuracy_artifact"] = 100.0 * float(np.mean([p == t for p, t in zip(artifact, truth, strict=True)]))
        found["word_accuracy_drop"] = found["word_accuracy_float"] - found["word_accuracy_artifact"]
    return found


def boxes(score_maps: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Return the (top, left, bottom, right) boxes easyocr would keep in one (H, W, 2) text/link score map."""
    from scipy import ndimage

    text, link = score_maps[..., 0], score_maps[..., 1]
    components, count = ndimage.label((text > LOW_TEXT) | (link > LINK_THRESHOLD))  # 4-connected, as easyocr
    found = []
    for k, where in enumerate(ndimage.find_objects(components), start=1):
        if where is None:
            continue
        mask = components[where] == k
        if mask.sum() < MIN_SIZE or text[where][mask].max() < TEXT_THRESHOLD:
            continue
        found.append((where[0].start, where[1].start, where[0].stop, where[1].stop))
    return found


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    h = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - h * w
    return h * w / union if union else 0.0


def _matched(these: list[tuple[int, int, int, int]], those: list[tuple[int, int, int, int]]) -> int:
    """Count boxes of `these` that have a box in `those` with IoU >= 0.5 (each used once)."""
    free, count = list(those), 0
    for box in these:
        best = max(range(len(free)), key=lambda j: _iou(box, free[j]), default=None)
        if best is not None and _iou(box, free[best]) >= 0.5:
            free.pop(best)
            count += 1
    return count


def box_agreement(
    float_outputs: dict[str, np.ndarray], artifact_outputs: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, float]:
    """Return box recall and precision of the artifact against float, and the boxes per image of each."""
    reference = [boxes(m) for m in float_outputs["output_0"]]
    artifact = [boxes(m) for m in artifact_outputs["output_0"]]
    total_ref, total_art = sum(map(len, reference)), sum(map(len, artifact))
    kept = sum(_matched(r, a) for r, a in zip(reference, artifact, strict=True))
    explained = sum(_matched(a, r) for r, a in zip(reference, artifact, strict=True))
    return {
        "box_recall": 100.0 * kept / total_ref if total_ref else 100.0,
        "box_precision": 100.0 * explained / total_art if total_art else 100.0,
        "boxes_per_image_float": total_ref / len(reference),
        "boxes_per_image_artifact": total_art / len(artifact),
    }
