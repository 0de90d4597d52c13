"""The ExecuTorch backend (target android): PT2E int8 before lowering, XNNPACK delegate, `.pte` artifact.

Flow: torch.export -> PT2E quantization (XNNPACKQuantizer) or torchao dynamic int8 -> torch.export
-> `to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])` -> `.to_executorch()` -> `.pte`,
then verified in `executorch.runtime`, the same C++ runtime an Android app links.

Heavy imports live inside the methods so `import edgekit` stays free of torch and executorch.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.backends import Runner, installed_versions
from edgekit.errors import ConfigError, ExportError, MissingDependencyError, did_you_mean
from edgekit.recipe import Scheme

if TYPE_CHECKING:
    from edgekit.pipeline import BuildContext, BuildState

ABIS = ("arm64-v8a", "armeabi-v7a", "x86_64", "x86")
OPTIONS: dict[str, str] = {
    "abi": f"Android ABI the app ships: one of {', '.join(ABIS)}",
    "threads": "XNNPACK threads the app should use; 0 lets the runtime decide",
    "min_sdk": "minimum Android API level of the app (ExecuTorch's AAR needs 21 or newer)",
}
SCHEMES = (Scheme.AUTO, Scheme.INT8_STATIC, Scheme.INT8_DYNAMIC, Scheme.FP32)
REFERENCE_NAME = Path("reference") / "model-fp32.pte"
_HINT = "pip install 'edgekit-deploy[android]'"


class ExecuTorchBackend:
    """Quantize and lower a PyTorch model to an XNNPACK-delegated ExecuTorch program."""

    name = "executorch"
    artifact_name = "model.pte"
    stage_order = ("quantize", "export")
    extra = "android"

    def check_installed(self) -> None:
        """Raise MissingDependencyError when executorch or torchao is not importable."""
        for module in ("torch", "executorch", "torchao"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(f"target android needs '{module}', which is not installed", hint=_HINT)
        if importlib.util.find_spec("executorch.runtime") is None:
            raise MissingDependencyError(
                "the installed executorch has no Python runtime (executorch.runtime)", hint=_HINT
            )

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError for an unknown key or a bad value in the target's [options]."""
        for key in options:
            if key not in OPTIONS:
                raise ConfigError(
                    f"unknown option '{key}' for backend executorch",
                    hint=did_you_mean(key, list(OPTIONS)) or f"known options: {', '.join(OPTIONS)}",
                )
        abi = options.get("abi", "arm64-v8a")
        if abi not in ABIS:
            raise ConfigError(
                f"option 'abi' cannot be {abi!r}", hint=did_you_mean(str(abi), ABIS) or f"one of: {', '.join(ABIS)}"
            )
        for key, low in (("threads", 0), ("min_sdk", 21)):
            value = options.get(key, low)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"option '{key}' must be an integer >= {low}, got {value!r}", hint=OPTIONS[key])

    def versions(self) -> dict[str, str]:
        """Return the versions of torch, executorch and torchao."""
        return installed_versions("torch", "executorch", "torchao")

    def quantize(self, state: BuildState, ctx: BuildContext) -> BuildState:
        """Quantize a copy of state.model per the recipe; also lower its fp32 form as the reference."""
        from edgekit.backends import _executorch_quantize as q
        from edgekit.backends._executorch_lower import export_program, lower_to_pte

        model, example = _require(state)
        requested = ctx.recipe.quantize.scheme
        if requested not in SCHEMES:
            raise ConfigError(
                f"scheme '{requested.value}' is not available for target android",
                hint=f"one of: {', '.join(s.value for s in SCHEMES)}",
            )
        float_program = export_program(model, example)
        census = q.op_census(float_program.graph_module)
        scheme, because = (
            (requested, "set by the recipe") if requested is not Scheme.AUTO else q.choose_scheme(census, example)
        )
        facts: dict[str, Any] = {"requested": requested.value, "scheme": scheme.value, "chosen_because": because}
        if scheme is Scheme.FP32:
            return state.with_facts("quantize", {**facts, "path": "none", "quantized_count": 0})

        # The fp32 program of the model as it stands now (pruned, not quantized): the latency and
        # size baseline in the same runtime. Only this stage still holds that model.
        reference = ctx.workdir / REFERENCE_NAME
        reference_facts = lower_to_pte(float_program, reference)
        if scheme is Scheme.INT8_STATIC:
            quantized, graph, how = q.static_int8(
                model, example, state.data.calibration if state.data else example[:0], ctx.recipe.quantize
            )
        else:
            quantized, graph, how = q.dynamic_int8(model, example, ctx.recipe.quantize)
        facts.update(how)
        facts.update(q.quantize_facts(q.op_census(graph), graph))
        state = state.evolve(model=quantized, reference_artifact=reference)
        state = state.with_facts("quantize", facts).with_facts(
            "export", {"reference": {"path": str(REFERENCE_NAME), "bytes": reference_facts["pte_bytes"]}}
        )
        if facts["quantized_count"] == 0:
            state = state.with_warning(
                f"{scheme.value} quantization ran but quantized no compute op"
                + (
                    f" ({_fmt(facts['float_ops'])} stayed float)"
                    if facts["float_ops"]
                    else " (the model has no conv, linear or matmul)"
                )
                + ": the artifact is effectively fp32"
            )
        elif facts["float_count"]:
            ctx.reporter.info(f"left float: {_fmt(facts['float_ops'])}")
        return state

    def export(self, state: BuildState, ctx: BuildContext) -> BuildState:
        """Lower state.model to XNNPACK and write model.pte; record what was and was not delegated."""
        from edgekit.backends._executorch_lower import export_program, lower_to_pte

        model, example = _require(state)
        artifact = ctx.workdir / self.artifact_name
        facts = lower_to_pte(export_program(model, example), artifact)
        reference = state.reference_artifact
        if reference is None:
            # Nothing was quantized, so the artifact is itself the fp32 program.
            reference = ctx.workdir / REFERENCE_NAME
            reference.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(artifact, reference)
            facts["reference"] = {
                "path": str(REFERENCE_NAME),
                "bytes": reference.stat().st_size,
                "same_as_artifact": True,
            }
        facts["export_batch"] = int(example.shape[0])
        state = state.evolve(artifact=artifact, reference_artifact=reference).with_facts("export", facts)
        if facts["non_delegated_nodes"]:
            ctx.reporter.info(f"outside XNNPACK, on ExecuTorch CPU kernels: {_fmt(facts['portable_ops'])}")
        if facts["delegated_nodes"] == 0:
            state = state.with_warning("XNNPACK delegated nothing: the whole model runs on portable CPU kernels")
        return state

    def runner(self, state: BuildState, ctx: BuildContext) -> Runner:
        """Return a runner that executes model.pte in executorch.runtime."""
        return self._runner(state.artifact, state)

    def reference_runner(self, state: BuildState, ctx: BuildContext) -> Runner | None:
        """Return a runner for the fp32 reference .pte, or None when there is none."""
        return None if state.reference_artifact is None else self._runner(state.reference_artifact, state)

    def runtime_contract(self, state: BuildState, ctx: BuildContext) -> dict[str, Any]:
        """Return what an Android app needs: runtime, version, delegate, ABI and kernel libraries."""
        export = state.facts.get("export", {})
        options = ctx.target.options
        return {
            "runtime": "executorch",
            "version": self.versions()["executorch"],
            "delegate": "XnnpackBackend",
            "abi": options.get("abi", "arm64-v8a"),
            "threads": options.get("threads", 0),
            "min_sdk": options.get("min_sdk", 21),
            "kernels": list(export.get("kernels", ["kernels_optimized"])),
            "operators": list(export.get("operators", [])),
            "method": "forward",
            "batch": export.get("export_batch", 1),
        }

    def _runner(self, path: Path | None, state: BuildState) -> Runner:
        from edgekit.backends._executorch_lower import load_method, make_run

        if path is None or not Path(path).is_file():
            raise ExportError(f"no ExecuTorch program to run at {path}", hint="the export stage must run first")
        if state.example_input is None:  # a runner needs only the artifact and the input layout
            from edgekit.errors import InternalError

            raise InternalError("the executorch runner needs state.example_input")
        return Runner(run=make_run(load_method(Path(path)), state.example_input), mode="runtime")


def _require(state: BuildState) -> tuple[Any, Any]:
    from edgekit.errors import InternalError

    if state.model is None or state.example_input is None:
        raise InternalError("the executorch backend needs state.model and state.example_input")
    return state.model, state.example_input


def _fmt(ops: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in ops.items()) or "none"
