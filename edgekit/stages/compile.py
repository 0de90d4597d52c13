"""Quantize and export through the target's backend: values in, a `Compiled` value out."""

from __future__ import annotations

from edgekit.errors import InternalError
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import PruneMethod


class CompileStage:
    name = "compile"
    requires: tuple[str, ...] = ("load", "prune")

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        if state.model is None or state.io is None or state.example_inputs is None or state.data is None:
            raise InternalError("the compile stage needs the model, io contract, example inputs and data")
        recipe = ctx.recipe
        prune = recipe.prune
        data = state.data
        compiled = ctx.backend.compile(
            state.model,
            state.io,
            state.example_inputs,
            data.calibration,
            recipe.quantize,
            ctx.plan.options,
            ctx.workdir,
            sparse_weights=prune.ratio > 0 and prune.method is not PruneMethod.STRUCTURED,
            metadata={"preprocessing": dict(data.preprocessing), "labels": list(data.label_names)},
        )
        if recipe.quantize.scheme.value == "auto":
            ctx.reporter.info(
                f"scheme auto -> {compiled.scheme.value}: {compiled.facts['quantize'].get('chosen_because', '')}"
            )
        for section, facts in compiled.facts.items():
            state = state.with_facts(section, facts)
        for warning in compiled.warnings:
            state = state.with_warning(warning)
        return state.evolve(compiled=compiled)
