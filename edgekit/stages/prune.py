"""Prune a copy of the model, then recover accuracy: runs only when prune.ratio > 0.

- structured (every backend): whole channels go, with torch-pruning's DepGraph; the exported graph
  has fewer channels, parameters and MACs.
- unstructured / n:m (Core ML only): single weights are zeroed by magnitude in the PyTorch model,
  and the Core ML backend stores them sparse. Other runtimes store zeros densely, so the artifact
  would be no smaller; that request is refused.

The float model and the float baseline stay those of the unpruned model: every later metric is
measured against the model the user gave. So do size and latency: the stage also builds the user's
unpruned model in float in the target's runtime (`unpruned_float_reference`), and "vs float" compares
with it; the pruned model in float is shown beside it for reference.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConfigError
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import PruneMethod, QuantizeConfig, RecoveryMode, Scheme

UNPRUNED = "unpruned-float"  # in the work folder: the user's model in float, in the target's runtime


class PruneStage:
    name = "prune"
    requires = ("load",)

    def applies(self, ctx: BuildContext) -> bool:
        return ctx.recipe.prune.ratio > 0

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        import torch

        from edgekit.pruning import counting, sparse, structured
        from edgekit.pruning.recovery import recover

        data = state.data
        if state.model is None or state.example_input is None or data is None:
            from edgekit.errors import InternalError

            raise InternalError("the prune stage needs the model, example input and data from the load stage")
        config = ctx.recipe.prune
        check_request(ctx, has_labels=data.calibration_labels is not None)
        if state.io is not None and len(state.io.inputs) != 1:
            raise ConfigError(
                f"pruning supports models with one input; this one takes {len(state.io.inputs)}",
                hint="build without pruning (prune.ratio = 0)",
            )
        structured.check_prunable(state.model)

        example = torch.from_numpy(np.ascontiguousarray(state.example_input))
        model = copy.deepcopy(state.model).eval()  # the user's model is never touched
        kept = structured.kept_layers(model, example, config.keep_layers)
        params_before, macs_before = counting.params_and_macs(model, example)
        channels_before = counting.channels(model)
        reference_shape = _output_shape(model, example)

        method = config.method
        masks = None
        if method is PruneMethod.STRUCTURED:
            ctx.reporter.info(
                f"removing {config.ratio:.0%} of the channels ({config.importance.value} importance, "
                f"{'global' if config.global_pruning else 'per layer'}; kept: {', '.join(kept)})"
            )
            taylor = structured.taylor_loss_fn(*_taylor_batch(state), teacher=state.float_model)
            structured.prune_channels(model, example, config, kept, taylor_loss=taylor)
        else:
            # A backend that stores sparse weights says from what size on, in its options (Core ML: 2048).
            threshold = int(getattr(ctx.plan.options, "weight_threshold", 0))
            layers = sparse.eligible_layers(model, kept, threshold)
            if method is PruneMethod.N_M:
                ctx.reporter.info(f"zeroing {config.n} of every {config.m} weights in {len(layers)} layers")
                masks = sparse.n_of_m_masks(model, layers, config.n, config.m)
            else:
                ctx.reporter.info(f"zeroing {config.ratio:.0%} of the weights by magnitude in {len(layers)} layers")
                masks = sparse.magnitude_masks(model, layers, config.ratio, config.global_pruning)
            sparse.apply_masks(model, masks)
            if not layers:
                state = state.with_warning(
                    f"pruning: no layer has more than {threshold} weights (options.weight_threshold); nothing was "
                    "sparsified"
                )

        shape = _output_shape(model, example)
        if shape != reference_shape:
            from edgekit.errors import InternalError

            raise InternalError(f"pruning changed the output shape from {reference_shape} to {shape}")
        params_after, macs_after = counting.params_and_macs(model, example)
        facts: dict[str, Any] = {
            "method": method.value,
            "ratio": config.ratio,
            "importance": config.importance.value if method is PruneMethod.STRUCTURED else "magnitude",
            "global": config.global_pruning,
            "kept_layers": kept,
            "parameters": {
                "before": params_before,
                "after": params_after,
                "ratio": round(params_after / params_before, 4),
            },
            "macs": {
                "before": macs_before,
                "after": macs_after,
                "ratio": round(macs_after / macs_before, 4) if macs_before else None,
            },
        }
        if method is PruneMethod.STRUCTURED:
            facts["channels_changed"] = counting.channel_changes(channels_before, counting.channels(model))
            facts["sparsity"] = {"parameters_removed": round(1 - params_after / params_before, 4)}
        else:
            if method is PruneMethod.N_M:
                facts.update({"n": config.n, "m": config.m})
            facts["sparsity"] = counting.weight_sparsity(model, list(masks or {}))
            facts["stored_sparse_by"] = ctx.backend.name

        accuracy = _Accuracy(state)
        facts["float_top1"] = accuracy.of(state.float_model)
        facts["top1_before_recovery"] = accuracy.of(model)
        recovery = config.recovery
        if recovery.mode is not RecoveryMode.NONE:
            budget = f" or {recovery.time_budget_s:g} s (not reproducible)" if recovery.time_budget_s > 0 else ""
            ctx.reporter.info(f"recovering: {recovery.mode.value}, {recovery.steps} steps{budget}")
        facts["recovery"] = recover(
            model,
            state.float_model,
            _only(data.calibration),
            data.calibration_labels,
            recovery,
            seed=ctx.recipe.data.seed,
            masks=masks,
            progress=ctx.reporter.info,
        )
        facts["recovery"]["data"] = _data_used(state, recovery.mode)
        facts["top1_after_recovery"] = (
            accuracy.of(model) if recovery.mode is not RecoveryMode.NONE else facts["top1_before_recovery"]
        )
        if masks:
            facts["sparsity"] = counting.weight_sparsity(model, list(masks))
        ctx.reporter.info(_summary(facts))
        build_unpruned_float(state, ctx)
        if data.is_synthetic and recovery.mode is not RecoveryMode.NONE:
            state = state.with_warning(
                "pruning recovery distilled on synthetic inputs: the pruned model's accuracy is unchecked"
            )
        return state.evolve(model=model).with_facts("prune", facts)


def build_unpruned_float(state: BuildState, ctx: BuildContext) -> Path | None:
    """Build the user's model, unpruned, in float in the target's runtime; return where it is.

    Size and latency "vs float" compare with this file: what the user would ship without edgekit.
    Without an io contract (a stage run on its own) there is nothing to build it for: None.
    """
    if state.float_model is None or state.io is None or state.example_inputs is None or state.data is None:
        return None
    scratch = ctx.workdir / f"{UNPRUNED}-build"
    scratch.mkdir(parents=True, exist_ok=True)
    compiled = ctx.backend.compile(
        state.float_model, state.io, state.example_inputs, state.data.calibration, QuantizeConfig(scheme=Scheme.FP32),
        ctx.plan.options, scratch, metadata={"preprocessing": dict(state.data.preprocessing)},
    )  # fmt: skip
    reference = compiled.float_reference or compiled.artifact
    kept = _unpruned_path(ctx)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(reference, kept)
    shutil.rmtree(scratch, ignore_errors=True)
    return kept


def unpruned_float_reference(ctx: BuildContext) -> Path | None:
    """Return the user's unpruned model in float, in the target's runtime, when this build pruned it."""
    path = _unpruned_path(ctx)
    return path if path.exists() else None


def _unpruned_path(ctx: BuildContext) -> Path:
    suffix = Path(ctx.backend.artifact_name).suffix  # .onnx, .pte, .mlpackage
    return ctx.workdir / UNPRUNED / f"model{suffix}"


def check_request(ctx: BuildContext, *, has_labels: bool) -> None:
    """Raise ConfigError for a pruning request this data cannot honour (the rest is checked at resolve)."""
    if ctx.recipe.prune.recovery.mode is RecoveryMode.FINETUNE and not has_labels:
        raise ConfigError(
            "prune.recovery.mode = \"finetune\" needs labelled data (an .npz with 'labels', or an image folder)",
            hint='use prune.recovery.mode = "distill", which learns the float model\'s outputs',
        )


class _Accuracy:
    """Top-1 of a torch model on the evaluation split, when the data has labels."""

    def __init__(self, state: BuildState) -> None:
        self.data = state.data

    def of(self, model: Any) -> float | None:
        from edgekit import metrics
        from edgekit.modelio import run_torch

        data = self.data
        if data is None or data.evaluation_labels is None or data.is_synthetic:
            return None
        outputs = run_torch(model, _only(data.evaluation), batch=64)
        return round(metrics.top1_accuracy(outputs, data.evaluation_labels), 3)


def _taylor_batch(state: BuildState) -> tuple[Any, Any]:
    import torch

    data = state.data
    assert data is not None  # noqa: S101 - checked by the caller
    inputs = torch.from_numpy(np.ascontiguousarray(_only(data.calibration)[:64]))
    labels = None if data.calibration_labels is None else torch.from_numpy(data.calibration_labels[:64])
    return inputs, labels


def _data_used(state: BuildState, mode: RecoveryMode) -> str:
    data = state.data
    assert data is not None  # noqa: S101 - checked by the caller
    if mode is RecoveryMode.NONE:
        return "none"
    what = "labels" if mode is RecoveryMode.FINETUNE else "float-model outputs (no labels used)"
    kind = "SYNTHETIC calibration inputs" if data.is_synthetic else f"{data.kind} calibration split"
    return f"{data.calibration_count} {kind}, {what}"


def _summary(facts: dict[str, Any]) -> str:
    p, m, r = facts["parameters"], facts["macs"], facts["recovery"]
    line = f"pruned: parameters {p['before']:,} -> {p['after']:,}, MACs {m['before']:,} -> {m['after']:,}"
    if facts.get("top1_before_recovery") is not None:
        line += (
            f"; top-1 {facts['float_top1']:.2f} float, {facts['top1_before_recovery']:.2f} pruned, "
            f"{facts['top1_after_recovery']:.2f} recovered"
        )
    if r.get("steps"):
        line += f"; recovery {r['steps']} steps, loss {r['loss_before']:.4g} -> {r['loss_after']:.4g}"
    return line


def _output_shape(model: Any, example: Any) -> tuple[int, ...]:
    import torch

    with torch.no_grad():
        out = model(example)
    return tuple((out[0] if isinstance(out, tuple | list) else out).shape)


def _only(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The one input's samples: pruning and recovery take one-input models (checked in run())."""
    (array,) = arrays.values()
    return array
