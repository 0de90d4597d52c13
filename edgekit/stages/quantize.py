"""Quantize through the target's backend (before or after export, as the backend declares)."""

from __future__ import annotations

from edgekit.errors import ConfigError
from edgekit.pipeline import BuildContext, BuildState


class QuantizeStage:
    name = "quantize"
    requires = ("load", "prune")

    def applies(self, ctx: BuildContext) -> bool:
        return True  # the fp32/fp16 schemes still pass through, so the artifact says what it is

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        scheme = ctx.recipe.quantize.scheme
        if scheme not in ctx.target.schemes:
            allowed = ", ".join(s.value for s in ctx.target.schemes)
            raise ConfigError(
                f"target '{ctx.target.name}' does not support scheme '{scheme.value}'", hint=f"use one of: {allowed}"
            )
        return ctx.backend.quantize(state, ctx)
