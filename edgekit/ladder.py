"""The repair ladder's plan: which quantization changes to try, cheapest first.

Pure values, no torch and no runtime: the repair stage compiles and measures each `Attempt` in the
artifact's own runtime, and tells the ladder what it measured. Rungs, in order:

1. calibration: per-channel weights if they were off, then every other calibration method the
   backend offers (a method it refuses is skipped, not counted);
2. one layer at a time: each of the most sensitive layers (per the diagnosis) left in float, alone,
   which also gives the "only this layer in float" view of the diagnosis;
3. growing sets: the k most useful layers together, at 16 bits where the runtime has 16-bit
   activations, then in float, for k = 2 .. `repair.max_float_layers`.

Cross-layer equalization and bias correction are not rungs: the maintained implementations found
(torch's `_equalize`, NNCF's PT2E bias correction) either need module pairs an exported graph no
longer has or measured no gain on MobileNetV2 here (ENVIRONMENT.md); the manifest says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from edgekit.recipe import CalibrationMethod, QuantizeConfig

NOT_A_RUNG = (
    "cross-layer equalization and bias correction: not tried (no maintained implementation applies to "
    "exported graphs; NNCF's PT2E bias correction measured no gain on MobileNetV2 here)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One rung: a name, what changed in words, and the quantization to build with."""

    name: str
    change: str
    quantize: QuantizeConfig


def calibration_rungs(base: QuantizeConfig, methods: Sequence[CalibrationMethod]) -> list[Attempt]:
    """Return rung 1: per-channel weights if off, then each other calibration method the backend offers."""
    rungs = []
    if not base.per_channel:
        rungs.append(Attempt(name="per-channel", change="per-channel weights", quantize=_with(base, per_channel=True)))
        base = _with(base, per_channel=True)
    for method in methods:
        if method is not base.calibration_method:
            rungs.append(
                Attempt(
                    name=f"calibration {method.value}",
                    change=f"calibration_method {base.calibration_method.value} -> {method.value}",
                    quantize=_with(base, calibration_method=method),
                )
            )
    return rungs


def single_layer_rungs(base: QuantizeConfig, ranked: Sequence[str], count: int) -> list[Attempt]:
    """Return rung 2: each of the `count` most sensitive layers left in float on its own."""
    return [
        Attempt(
            name=f"float {layer}",
            change=f"{layer} left in float",
            quantize=_with(base, keep_float=(*base.keep_float, layer)),
        )
        for layer in ranked[:count]
    ]


def growing_rungs(base: QuantizeConfig, ranked: Sequence[str], limit: int, sixteen_bit: bool) -> list[Attempt]:
    """Return rung 3: the top k layers together (16-bit first where offered, then float), k = 2 .. limit."""
    rungs = []
    for k in range(2, limit + 1):
        layers = tuple(ranked[:k])
        if len(layers) < k:
            break
        if sixteen_bit:
            rungs.append(
                Attempt(
                    name=f"int16 top {k}",
                    change=f"16-bit activations for {', '.join(layers)}",
                    quantize=_with(base, int16_activations=(*base.int16_activations, *layers)),
                )
            )
        rungs.append(
            Attempt(
                name=f"float top {k}",
                change=f"{', '.join(layers)} left in float",
                quantize=_with(base, keep_float=(*base.keep_float, *layers)),
            )
        )
    return rungs


def _with(base: QuantizeConfig, **changes: object) -> QuantizeConfig:
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
