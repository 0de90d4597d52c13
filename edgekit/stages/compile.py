"""Quantize and export through the target's backend: values in, a `Compiled` value out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import InternalError
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import PruneMethod, QuantizeConfig

if TYPE_CHECKING:
    from edgekit.backends.base import Compiled


class CompileStage:
    name = "compile"
    requires: tuple[str, ...] = ("load", "prune")

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        if state.model is None or state.io is None or state.example_inputs is None or state.data is None:
            raise InternalError("the compile stage needs the model, io contract, example inputs and data")
        recipe = ctx.recipe
        compiled = compile_with(state, ctx, recipe.quantize, ctx.workdir)
        if recipe.quantize.scheme.value == "auto":
            ctx.reporter.info(
                f"scheme auto -> {compiled.scheme.value}: {compiled.facts['quantize'].get('chosen_because', '')}"
            )
        for section, facts in compiled.facts.items():
            state = state.with_facts(section, facts)
        for warning in compiled.warnings:
            state = state.with_warning(warning)
        return state.evolve(compiled=compiled)


def compile_with(state: BuildState, ctx: BuildContext, quantize: QuantizeConfig, workdir: Path) -> Compiled:
    """Compile the state's model with `quantize` into `workdir` (the compile stage and each repair step)."""
    if state.model is None or state.io is None or state.example_inputs is None or state.data is None:
        raise InternalError("compiling needs the model, io contract, example inputs and data")
    prune, data = ctx.recipe.prune, state.data
    return ctx.backend.compile(
        state.model,
        state.io,
        state.example_inputs,
        data.calibration,
        quantize,
        ctx.plan.options,
        workdir,
        sparse_weights=prune.ratio > 0 and prune.method is not PruneMethod.STRUCTURED,
        metadata={"preprocessing": dict(data.preprocessing), "labels": list(data.label_names)},
    )
