"""Check an artifact from its folder alone: its files, its golden self-test, and the accuracy it recorded.

Nothing here needs the target file or the build's context: the backend, its options and the io
contract all come from the manifest, so an artifact built for a custom `--target my.toml` verifies
like any other. With data, the artifact is measured again against float outputs re-computed from
the source model, whose sha256 must match the one the manifest recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.backends.base import IoContract, Runner, RunnerUnavailable
from edgekit.errors import ExitStatus, InputError
from edgekit.manifest import Golden

if TYPE_CHECKING:
    from edgekit.verify_remote import TargetCheck


@dataclass(frozen=True, slots=True, kw_only=True)
class GoldenCheck:
    samples: int
    max_abs_error: float | None  # None when nothing could run them
    atol: float
    within_tolerance: bool | None
    checked_with: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """What `edgekit verify` found. `exit_status` is 0 only when every check that ran held."""

    artifact: Path
    status: str  # passed | failed | proxy | skipped
    golden: GoldenCheck
    build_accuracy: str  # the accuracy status the manifest recorded at build time
    build_gate: dict[str, Any] | None
    remeasured: dict[str, Any] | None = None  # with --data: metrics, gate, where the float outputs came from
    problems: tuple[str, ...] = ()  # why the status is not `passed`, one line each
    warnings: tuple[str, ...] = field(default_factory=tuple)
    on_target: TargetCheck | None = None  # with --on: the same checks on the target's CPU (edgekit.verify_remote)

    @property
    def exit_status(self) -> ExitStatus:
        if self.status == "failed":
            return ExitStatus.ACCURACY_FAILED
        return ExitStatus.INCONCLUSIVE if self.status == "inconclusive" else ExitStatus.OK


def verify_artifact(folder: Path, *, data: Path | None = None, model: str | None = None) -> VerifyResult:
    """Verify the artifact in `folder`; raise InputError when its files do not match the manifest."""
    from edgekit.artifacts import check_artifact, toolchain_drift
    from edgekit.compat import untested_versions

    checked = check_artifact(folder)
    manifest, backend, options, recipe, io = (
        checked.manifest, checked.backend, checked.options, checked.recipe, checked.io
    )  # fmt: skip
    artifact = checked.path
    warnings = tuple(toolchain_drift(manifest, backend.versions()))
    warnings += tuple(w for w in untested_versions(backend.versions()) if w not in warnings)
    try:
        runner: Runner | None = backend.open(artifact, io, options)
    except RunnerUnavailable as exc:
        runner, unavailable = None, exc.reason
    golden = _check_golden(folder, manifest.golden, io, runner, unavailable if runner is None else "")
    problems = []
    if golden.within_tolerance is False:
        problems.append(
            f"golden outputs differ: max abs error {golden.max_abs_error:.3g} > tolerance {golden.atol:.3g} "
            f"({golden.checked_with})"
        )
    gate = manifest.accuracy.gate
    if manifest.accuracy.status == "failed" and gate is not None:
        problems.append(
            f"the artifact failed its accuracy gate when it was built: {gate.rule} but measured {gate.value:.3f}"
        )
    remeasured = None
    if data is not None:
        if runner is None:
            raise InputError(f"cannot re-measure '{folder}' here: {golden.reason}")
        remeasured = _remeasure(manifest, recipe, runner, io, data, model)
        if remeasured["gate"]["passed"] is False and runner.mode == "runtime":
            problems.append(
                f"re-measured on {data}: {remeasured['gate']['rule']} but measured {remeasured['gate']['value']:.3f}"
            )
    if problems:
        status = "failed"
    elif manifest.accuracy.status == "inconclusive":
        status = "inconclusive"
    elif runner is None or manifest.accuracy.status == "skipped":
        status = "skipped"
    elif runner.mode == "proxy":
        status = "proxy"
    else:
        status = "passed"
    return VerifyResult(
        artifact=folder,
        status=status,
        golden=golden,
        build_accuracy=manifest.accuracy.status,
        build_gate=None if gate is None else {"rule": gate.rule, "value": gate.value, "passed": gate.passed},
        remeasured=remeasured,
        problems=tuple(problems),
        warnings=warnings,
    )


def golden_samples(folder: Path, golden: Golden, io: IoContract) -> list[tuple[dict[str, Path], dict[str, Path]]]:
    """Return each golden sample as ({input name: .npy path}, {output name: .npy path}), in io order."""
    return [
        ({n: folder / sample["inputs"][n] for n in io.input_names},
         {n: folder / sample["outputs"][n] for n in io.output_names})
        for sample in golden.samples
    ]  # fmt: skip


def _check_golden(folder: Path, golden: Golden, io: IoContract, runner: Runner | None, unavailable: str) -> GoldenCheck:
    if runner is None:
        return GoldenCheck(
            samples=golden.count,
            max_abs_error=None,
            atol=golden.atol,
            within_tolerance=None,
            checked_with="nothing",
            reason=unavailable,
        )
    if not golden.count:
        return GoldenCheck(
            samples=0,
            max_abs_error=None,
            atol=golden.atol,
            within_tolerance=None,
            checked_with=runner.checked_with,
            reason=golden.reason or "the artifact has no golden samples",
        )
    worst = 0.0
    for inputs, outputs in golden_samples(folder, golden, io):
        got = runner.run({name: np.load(path) for name, path in inputs.items()})
        for name, path in outputs.items():
            worst = max(worst, float(np.max(np.abs(np.asarray(got[name], dtype=np.float32) - np.load(path)))))
    return GoldenCheck(
        samples=golden.count,
        max_abs_error=worst,
        atol=golden.atol,
        within_tolerance=worst <= golden.atol,
        checked_with=runner.checked_with,
    )


def _remeasure(
    manifest: Any, recipe: Any, runner: Runner, io: IoContract, data: Path, model: str | None
) -> dict[str, Any]:
    """Measure the artifact on `data` against float outputs re-computed from the source model."""
    from edgekit.data import check_shape, load_data
    from edgekit.gate import judge
    from edgekit.modelio import load_model
    from edgekit.stages.load import baseline_outputs
    from edgekit.stages.verify import run_artifact

    source = manifest.source_model
    spec = model or source.get("path") or source.get("spec")
    if not spec:
        raise InputError("the manifest does not say where the source model is", hint="pass --model")
    weights = source.get("weights")
    try:
        loaded = load_model(
            str(spec),
            weights=Path(weights) if weights else None,
            factory_args=recipe.model.factory_args,
            strip_prefix=recipe.model.strip_prefix,
        )
    except InputError as exc:
        raise InputError(
            (f"cannot re-compute the float outputs: {exc.message}"),
            hint=("pass --model with the model the artifact was built from"),
        ) from None
    if loaded.facts.get("sha256") != source.get("sha256"):
        raise InputError(
            f"the source model '{spec}' is not the one this artifact was built from (sha256 differs)",
            hint="pass --model with the model the artifact was built from",
        )
    state = dict(recipe.io.state)
    examples = {t.name: np.zeros(t.shape, dtype=t.dtype) for t in io.inputs if t.name not in state.values()}
    dataset = load_data(data, recipe.data, recipe.preprocessing, examples, ordered=bool(state))
    check_shape(dataset, examples)
    module = loaded.module
    if manifest.source_model.get("flattened_outputs"):
        from edgekit.signature import flat_module

        module = flat_module(module, recipe.model.constants)
    dataset, baseline = baseline_outputs(module, io, dataset, state)
    stateless = {n: a for n, a in dataset.evaluation.items() if n not in state.values()}
    _, outputs = run_artifact(runner, io, stateless, state)
    verdict = judge(baseline, outputs, dataset.evaluation_labels, io, recipe.gate, runner, synthetic=False)
    found = verdict["metrics"]
    same = dataset.provenance.get("sha256") == manifest.data.get("sha256")
    return {
        "data": str(data),
        "samples": dataset.evaluation_count,
        "split": "the build's evaluation split" if same else "the evaluation split of new data",
        "float_outputs": f"re-computed from {spec} (sha256 matches the manifest)",
        "metrics": found,
        "gate": verdict["gate"],
        "checked_with": runner.checked_with,
    }
