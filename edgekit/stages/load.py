"""Load the model and the data, check they fit each other, and compute the float baseline once."""

from __future__ import annotations

from edgekit.backends.base import IoContract, TensorSpec
from edgekit.data import check_shape, load_data
from edgekit.errors import InputError, first_line
from edgekit.modelio import load_model, run_torch
from edgekit.pipeline import BuildContext, BuildState

INPUT_NAME, OUTPUT_NAME = "input", "output"  # the names of a one-input, one-output model


class LoadStage:
    name = "load"
    requires: tuple[str, ...] = ()

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        request, recipe = ctx.request, ctx.recipe
        loaded = load_model(
            request.model,
            weights=request.weights,
            allow_pickle=request.allow_pickle,
            input_shape=recipe.input.shape,
            input_dtype=recipe.input.dtype,
        )
        example = loaded.example_input
        if recipe.input.shape and tuple(example.shape) != tuple(recipe.input.shape):
            raise InputError(
                (
                    f"the model was exported for input shape {tuple(example.shape)}, but the recipe asks for "
                    f"{tuple(recipe.input.shape)}"
                ),
                hint="drop --input-shape, or re-export the model",
            )
        if example.shape[0] != 1:
            raise InputError(
                f"the model input has batch size {example.shape[0]}; edgekit builds artifacts with batch size 1",
                hint="export the model with a batch-1 example input",
            )
        data = load_data(request.data, recipe.data, recipe.preprocessing, example)
        check_shape(data, example)
        if data.is_synthetic:
            state = state.with_warning(
                "no --data given: calibrated on synthetic inputs; accuracy is NOT checked (status 'skipped')"
            )
        try:
            baseline = run_torch(loaded.module, data.evaluation)
        except Exception as exc:
            raise InputError(
                f"the float model failed on the data ({first_line(exc)})",
                hint="check the data's shape and dtype against the model",
            ) from None
        io = IoContract(
            inputs=(TensorSpec(name=INPUT_NAME, shape=tuple(example.shape), dtype=str(example.dtype)),),
            outputs=(TensorSpec(name=OUTPUT_NAME, shape=(1, *baseline.shape[1:]), dtype="float32"),),
        )
        return state.evolve(
            float_model=loaded.module, model=loaded.module, io=io, example_input=example, data=data, baseline=baseline
        ).with_facts("source", loaded.facts)
