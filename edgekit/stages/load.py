"""Load the model and the data, name every input and output, check they fit, and compute the float baseline once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import DynamicDim, IoContract, TensorSpec
from edgekit.data import RESERVED, Arrays, Dataset, check_labels, check_shape, load_data, take
from edgekit.errors import InputError, first_line
from edgekit.modelio import load_model
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import Recipe
from edgekit.signature import flat_module, flatten_outputs, input_names, run_torch


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
            factory_args=recipe.model.factory_args,
            strip_prefix=recipe.model.strip_prefix,
        )
        examples = loaded.example_inputs or _examples_from_data(loaded.module, request.data)
        _check_examples(examples, recipe)
        module, io, wrapped = _named_io(loaded.module, examples, recipe, loaded.dynamic)
        state_map = _check_state(recipe.io.state, io)
        data = load_data(request.data, recipe.data, recipe.preprocessing, _stateless(examples, state_map),
                         ordered=bool(state_map))  # fmt: skip
        check_shape(data, _stateless(examples, state_map), {t.name: {d.axis for d in t.dynamic} for t in io.inputs})
        if data.is_synthetic:
            state = state.with_warning(
                "no --data given: calibrated on synthetic inputs; accuracy is NOT checked (status 'skipped')"
            )
        if data.preprocessing.get("status") == "unknown" and not data.is_synthetic:
            state = state.with_warning(f"preprocessing unknown: {data.preprocessing['reason']}")
        try:
            data, baseline = baseline_outputs(module, io, data, state_map)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"the float model failed on the data ({first_line(exc)})",
                hint="check the data's shapes and dtypes against the model's inputs: " + _describe(io),
            ) from exc
        check_labels(data, baseline[io.output_names[0]], io.output_names[0])
        facts = {**loaded.facts, "flattened_outputs": wrapped}
        return state.evolve(
            float_model=module,
            model=module,
            io=io,
            example_input=next(iter(examples.values())),
            example_inputs=examples,
            data=data,
            baseline=baseline,
        ).with_facts("source", facts)


def _examples_from_data(module: Any, data: Path | None) -> Arrays:
    """Take the first sample of each input from the data file: TorchScript and factories carry no shapes."""
    hint = "pass --input-shape 1,3,224,224 (or set input.shape in the recipe), --data, or use a .pt2 file"
    if data is None or data.suffix != ".npz" or not data.is_file():
        raise InputError("the model's input shape is unknown", hint=hint)
    with np.load(data, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in RESERVED}
    if "inputs" in arrays:
        return {"input": arrays["inputs"][:1]}
    names = input_names(module, len(arrays))
    if set(names) != set(arrays):
        raise InputError(
            f"cannot tell which array of '{data.name}' feeds which input ({', '.join(arrays)}; forward() takes "
            f"{', '.join(names)})",
            hint=hint,
        )
    return {n: arrays[n][:1].astype(np.float32) if arrays[n].dtype == np.float64 else arrays[n][:1] for n in names}


def _check_examples(examples: Arrays, recipe: Recipe) -> None:
    if recipe.input.shape and len(examples) == 1:
        shape = tuple(next(iter(examples.values())).shape)
        if shape != tuple(recipe.input.shape):
            raise InputError(
                f"the model was exported for input shape {shape}, but the recipe asks for {tuple(recipe.input.shape)}",
                hint="drop --input-shape, or re-export the model",
            )
    for name, example in examples.items():
        if example.ndim == 0 or example.shape[0] != 1:
            raise InputError(
                f"input '{name}' has shape {example.shape}; edgekit builds artifacts with batch size 1",
                hint="export the model with batch-1 example inputs",
            )


def _named_io(
    module: Any, examples: Arrays, recipe: Recipe, exported: dict[str, dict[int, tuple[int, int]]]
) -> tuple[Any, IoContract, bool]:
    """Run the model once to name its outputs; wrap it when they are nested or it takes constants."""
    import torch

    constants = recipe.model.constants
    try:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in examples.values()], **constants)
    except Exception as exc:
        raise InputError(
            f"the model failed on its example inputs ({first_line(exc)})",
            hint="a forward() argument that is not a tensor (a sample rate) goes in the recipe: "
            "[model] constants = {sr = 16000}",
        ) from exc
    outputs = flatten_outputs(out)
    wrapped = bool(constants) or not isinstance(out, torch.Tensor)
    dynamic = dynamic_dims(recipe.io.dynamic, exported, examples)
    io = IoContract(
        inputs=tuple(
            TensorSpec(name=n, shape=tuple(a.shape), dtype=str(a.dtype), dynamic=dynamic.get(n, ()))
            for n, a in examples.items()
        ),
        outputs=tuple(
            TensorSpec(name=n, shape=tuple(t.shape), dtype=str(t.dtype).removeprefix("torch.")) for n, t in outputs
        ),
    )
    return (flat_module(module, constants) if wrapped else module), io, wrapped


def dynamic_dims(
    declared: dict[str, Any], exported: dict[str, dict[int, tuple[int, int]]], examples: Arrays
) -> dict[str, tuple[DynamicDim, ...]]:
    """Merge the .pt2's dynamic axes with the recipe's `io.dynamic` ("axis:min..max", the recipe wins)."""
    found: dict[str, dict[int, tuple[int, int]]] = {n: dict(axes) for n, axes in exported.items()}
    for name, text in declared.items():
        if name not in examples:
            raise InputError(f"io.dynamic names '{name}', which is not an input ({', '.join(examples)})")
        for part in str(text).split(","):
            try:
                axis_text, _, bounds = part.partition(":")
                low_text, _, high_text = bounds.partition("..")
                found.setdefault(name, {})[int(axis_text)] = (int(low_text), int(high_text))
            except ValueError:
                raise InputError(
                    f"io.dynamic.{name} = {text!r} is not 'axis:min..max'",
                    hint="e.g. --set io.dynamic.input_ids=1:1..128",
                ) from None
    dims: dict[str, tuple[DynamicDim, ...]] = {}
    for name, axes in found.items():
        shape = tuple(int(n) for n in examples[name].shape)
        for axis, (low, high) in axes.items():
            if not 0 < axis < len(shape) or not 1 <= low <= shape[axis] <= high:
                size = str(shape[axis]) if 0 <= axis < len(shape) else "?"
                raise InputError(
                    f"dynamic axis {axis} of '{name}' ({low}..{high}) must be a non-batch axis whose range holds the "
                    f"example's size {size}"
                )
        dims[name] = tuple(DynamicDim(axis=a, min=lo, max=hi) for a, (lo, hi) in sorted(axes.items()))
    return dims


def _check_state(state: dict[str, Any], io: IoContract) -> dict[str, str]:
    outputs, inputs = {t.name: t for t in io.outputs}, {t.name: t for t in io.inputs}
    for source, target in state.items():
        if source not in outputs or not isinstance(target, str) or target not in inputs:
            raise InputError(
                f"io.state maps '{source}' -> '{target}', but the model's outputs are {', '.join(outputs)} and its "
                f"inputs {', '.join(inputs)}",
                hint='map a state output to the input it feeds next step: [io] state = {hn = "h"}',
            )
        if outputs[source].shape != inputs[target].shape:
            raise InputError(
                f"state output '{source}' has shape {outputs[source].shape} but input '{target}' takes "
                f"{inputs[target].shape}"
            )
    return {str(k): str(v) for k, v in state.items()}


def _stateless(examples: Arrays, state: dict[str, str]) -> Arrays:
    return {n: a for n, a in examples.items() if n not in state.values()}


def baseline_outputs(module: Any, io: IoContract, data: Dataset, state: dict[str, str]) -> tuple[Dataset, Arrays]:
    """Return the data with state inputs filled by the float model, and the float outputs on evaluation."""
    if not state:
        return data, run_torch(module, data.evaluation, io.input_names, output_names=io.output_names)
    from dataclasses import replace

    from edgekit.sequence import initial_state, run_sequence

    def step(feeds: Mapping[str, np.ndarray]) -> Arrays:
        return run_torch(module, feeds, io.input_names, output_names=io.output_names)

    filled = {}
    for split in ("calibration", "evaluation"):
        arrays = getattr(data, split)
        outputs, fed = run_sequence(step, arrays, io, state, initial_state(io, state, arrays))
        filled[split] = ({**take(arrays, slice(None)), **fed}, outputs)
    data = replace(data, calibration=filled["calibration"][0], evaluation=filled["evaluation"][0])
    return data, filled["evaluation"][1]


def _describe(io: IoContract) -> str:
    return ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in io.inputs)
