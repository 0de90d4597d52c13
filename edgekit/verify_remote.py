"""Verify an artifact on the target's CPU: its golden inputs (and, with data, the evaluation inputs) run
on an executor (emulated aarch64, a board over ssh), and the outputs are compared with the host's.

The host's outputs are the golden outputs the build wrote (ONNX Runtime or ExecuTorch on this x86-64
host); the tolerance is the manifest's. Every output is compared: max abs error, top-1 agreement for
class-score outputs, and each sample that differs is listed. With data, the evaluation split runs on
both sides and the accuracy gate is applied again to the target's outputs. Where the check ran (ISA,
CPU, emulated or not, runtime version) is part of the result. No timing is taken: emulated latency is
no performance figure, and one board run is no benchmark.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.backends.base import IoContract
from edgekit.errors import InputError
from edgekit.executors.base import NO_RUNNER, REMOTE_RUNNERS, Platform

if TYPE_CHECKING:
    from edgekit.executors.base import Executor
    from edgekit.manifest import Manifest
    from edgekit.verification import VerifyResult

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputDiff:
    """One named output, target vs host, over every sample compared."""

    name: str
    max_abs_error: float
    top1_agreement: float | None  # percent of samples whose arg-max agrees; None unless a score vector
    within_tolerance: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Disagreement:
    """One sample whose output differs beyond the tolerance, or whose top-1 class differs, or did not run."""

    split: str  # "golden" or "data"
    sample: int
    output: str
    max_abs_error: float | None
    host_top1: int | None = None
    target_top1: int | None = None
    error: str = ""  # why the sample did not run on the target


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetCheck:
    """What ran on the target, where, and how its outputs compare with the host's."""

    status: str  # passed | failed | not run
    where: Platform | None
    runtime: str = ""  # the runtime that ran on the target
    runtime_version: str = ""
    samples: int = 0  # golden samples compared
    atol: float = 0.0
    rtol: float = 0.0
    outputs: tuple[OutputDiff, ...] = ()
    disagreements: tuple[Disagreement, ...] = ()
    data: dict[str, Any] | None = None  # with --data: samples, per-output comparison, the gate re-applied
    reason: str = ""  # why it did not run, or why it failed
    timing: str = "not measured: an emulated or one-off run is not a performance figure"


def verify_on(folder: Path, executor: Executor, *, data: Path | None = None, model: str | None = None) -> VerifyResult:
    """Verify `folder` on this host (files, golden, recorded gate), then on `executor`; return both in one result."""
    from edgekit.manifest import read_manifest
    from edgekit.verification import verify_artifact

    host = verify_artifact(folder)  # files first: a tampered artifact stops here with exit 5
    manifest = read_manifest(folder)
    check = check_on(folder, manifest, executor, data=data, model=model)
    problems = list(host.problems)
    warnings = list(host.warnings)
    status = host.status
    if check.status == "failed":
        status = "failed"
        problems.append(f"on {_where(check)}: {check.reason}")
    elif check.status == "not run":
        warnings.append(f"not run on {executor.name}: {check.reason}")
    warnings += list(check.where.notes) if check.where else []
    remeasured = check.data.get("host") if check.data else None
    if remeasured is not None and remeasured["gate"]["passed"] is False:
        status = "failed"
        problems.append(f"re-measured on {data} (host): {remeasured['gate']['rule']}")
    return dataclasses.replace(
        host, status=status, problems=tuple(problems), warnings=tuple(warnings), on_target=check, remeasured=remeasured
    )


def check_on(
    folder: Path, manifest: Manifest, executor: Executor, *, data: Path | None = None, model: str | None = None
) -> TargetCheck:
    """Run the golden samples (and `data`) of the artifact in `folder` on `executor`; compare with the host."""
    from edgekit.executors.request import read_outputs, write_request
    from edgekit.verification import golden_samples

    backend = manifest.target.backend
    if backend not in REMOTE_RUNNERS:
        reason = NO_RUNNER.get(backend, f"no runner for the {backend} runtime off this host")
        return TargetCheck(status="not run", where=None, reason=reason)
    io = IoContract(inputs=manifest.io.inputs, outputs=manifest.io.outputs)
    golden = manifest.golden
    if not golden.count:
        return TargetCheck(status="not run", where=None, reason=golden.reason or "the artifact has no golden samples")
    where = executor.platform()
    artifact = folder / manifest.artifact.file
    samples = golden_samples(folder, golden, io)
    with tempfile.TemporaryDirectory(prefix="edgekit-request-") as scratch:
        request = write_request(Path(scratch) / "golden", artifact, backend, io, [inputs for inputs, _ in samples])
        report = executor.run(request)
        if report.error:
            return TargetCheck(status="failed", where=where, runtime=report.runtime, reason=report.error)
        got = read_outputs(request, io, len(samples))
    expected = [{name: np.load(path) for name, path in outputs.items()} for _, outputs in samples]
    errors = dict(report.failed)
    diffs, disagreements = compare(expected, got, io, golden.atol, golden.rtol, split="golden", errors=errors)
    check = TargetCheck(
        status="passed",
        where=where,
        runtime=report.runtime,
        runtime_version=report.runtime_version,
        samples=len(samples),
        atol=golden.atol,
        rtol=golden.rtol,
        outputs=diffs,
        disagreements=disagreements,
    )
    if data is not None:
        check = dataclasses.replace(check, data=_on_data(folder, manifest, executor, io, data, model))
    return _verdict(check)


def compare(
    expected: Sequence[Outputs],
    got: Sequence[Outputs | None],
    io: IoContract,
    atol: float,
    rtol: float,
    *,
    split: str,
    errors: dict[int, str] | None = None,
) -> tuple[tuple[OutputDiff, ...], tuple[Disagreement, ...]]:
    """Compare per output and per sample: |got - expected| <= atol + rtol * |expected| (NaN never matches)."""
    errors = errors or {}
    diffs, disagreements = [], []
    for name in io.output_names:
        worst, agree, scored, held = 0.0, 0, 0, True
        for i, (want, have) in enumerate(zip(expected, got, strict=True)):
            if have is None or name not in have:
                why = errors.get(i, "no output came back")
                disagreements.append(Disagreement(split=split, sample=i, output=name, max_abs_error=None, error=why))
                held = False
                continue
            a, e = np.asarray(have[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
            if a.shape != e.shape:
                why = f"shape {a.shape} but the host's is {e.shape}"
                disagreements.append(Disagreement(split=split, sample=i, output=name, max_abs_error=None, error=why))
                held = False
                continue
            error = np.abs(a - e)
            largest = float(np.max(error)) if error.size else 0.0
            largest = largest if np.isfinite(largest) else float("inf")
            ok = bool(np.all(error <= atol + rtol * np.abs(e)))
            host_top1 = target_top1 = None
            if _is_scores(e):
                scored += 1
                host_top1, target_top1 = int(np.argmax(e.reshape(-1))), int(np.argmax(a.reshape(-1)))
                agree += host_top1 == target_top1
            worst = max(worst, largest)
            if not ok or host_top1 != target_top1:
                disagreements.append(
                    Disagreement(split=split, sample=i, output=name, max_abs_error=largest,
                                 host_top1=host_top1, target_top1=target_top1)
                )  # fmt: skip
            held = held and ok
        agreement = 100.0 * agree / scored if scored else None
        diffs.append(OutputDiff(name=name, max_abs_error=worst, top1_agreement=agreement, within_tolerance=held))
    return tuple(diffs), tuple(disagreements)


def _is_scores(array: np.ndarray) -> bool:
    """A class-score vector: one sample, a last axis longer than one, floating point."""
    return array.ndim >= 1 and array.shape[-1] > 1 and array.size == array.shape[-1]


def _verdict(check: TargetCheck) -> TargetCheck:
    """Failed when any output differs beyond tolerance, any sample did not run, or the gate fails there."""
    reasons = [
        f"'{d.name}' max abs error {d.max_abs_error:.3g} > tolerance {check.atol:.3g}"
        for d in check.outputs
        if not d.within_tolerance and d.max_abs_error > check.atol
    ]
    not_run = [d for d in check.disagreements if d.error]
    if not_run:
        reasons.append(f"{len(not_run)} sample output(s) did not come back ({not_run[0].error})")
    if check.data:
        reasons += [f"--data: '{d.name}' max abs error {d.max_abs_error:.3g} > tolerance {check.atol:.3g}"
                    for d in check.data["outputs"] if not d.within_tolerance]  # fmt: skip
        gate = check.data["target"]["gate"]
        if gate["passed"] is False:
            reasons.append(f"--data: the gate fails on the target: {gate['rule']} (measured {gate['value']:.3f})")
    if reasons:
        return dataclasses.replace(check, status="failed", reason="; ".join(reasons))
    return check


def _on_data(
    folder: Path, manifest: Manifest, executor: Executor, io: IoContract, data: Path, model: str | None
) -> dict[str, Any]:
    """Run the evaluation split on the host and on the target; compare, and apply the gate to both.

    The host pass records the exact inputs the verification feeds (preprocessing, order, state), the
    target runs them in one request, and a second pass replays the target's outputs through the same
    measurement, so the metrics and the gate are computed by the code that computed them at build time.
    """
    from edgekit.backends import Runner, get_backend
    from edgekit.executors.request import read_outputs, write_request
    from edgekit.recipe import build_recipe, parse_table
    from edgekit.verification import _remeasure

    backend = get_backend(manifest.target.backend)
    options: Any = parse_table(backend.Options, manifest.runtime.get("options", {}), "runtime.options", what="option")
    recipe = build_recipe(manifest.recipe)
    host_runner = backend.open(folder / manifest.artifact.file, io, options)
    fed: list[dict[str, np.ndarray]] = []
    host_outputs: list[Outputs] = []

    def record(feeds: Any) -> Outputs:
        outputs = host_runner.run(feeds)
        fed.append({name: np.array(value) for name, value in feeds.items()})
        host_outputs.append({name: np.array(value) for name, value in outputs.items()})
        return outputs

    recording = Runner(run=record, mode=host_runner.mode, checked_with=host_runner.checked_with)
    host = _remeasure(manifest, recipe, recording, io, data, model)
    with tempfile.TemporaryDirectory(prefix="edgekit-request-") as scratch:
        request = write_request(Path(scratch) / "data", folder / manifest.artifact.file, backend.name, io, fed)
        report = executor.run(request)
        if report.error:
            raise InputError(f"the evaluation data did not run on {executor.name}: {report.error}")
        got = read_outputs(request, io, len(fed))
    replies = iter(got)

    def replay(_feeds: Any) -> Outputs:
        outputs = next(replies)
        if outputs is None:
            raise InputError(f"a sample of {data} did not run on {executor.name}")
        return outputs

    where = executor.platform()
    target_runner = Runner(run=replay, mode="runtime", checked_with=f"{report.runtime} {report.runtime_version}")
    target = _remeasure(manifest, recipe, target_runner, io, data, model)
    diffs, disagreements = compare(host_outputs, got, io, manifest.golden.atol, manifest.golden.rtol, split="data")
    return {
        "samples": len(fed),
        "outputs": diffs,
        "disagreements": disagreements,
        "host": host,
        "target": {**target, "checked_with": f"{target_runner.checked_with} on {where.line()}"},
    }


def _where(check: TargetCheck) -> str:
    return check.where.line() if check.where else "the target"


def render_target(check: TargetCheck) -> list[str]:
    """Return the lines `edgekit verify --on` prints for the target check."""
    if check.status == "not run":
        return [f"  on target not run: {check.reason}"]
    lines = [f"  on target {check.status}: {_where(check)}"]
    if check.where and check.where.system:
        lines.append(f"            {check.where.system}")
    lines.append(f"            {check.runtime} {check.runtime_version}; timing {check.timing}")
    lines.append(f"            {check.samples} golden samples vs the host's outputs (tolerance {check.atol:.3g}):")
    lines += _output_lines(check.outputs)
    if check.data:
        lines.append(f"            --data: {check.data['samples']} evaluation samples vs the host's outputs:")
        lines += _output_lines(check.data["outputs"])
        gate = check.data["target"]["gate"]
        verdict = "n/a" if gate["passed"] is None else "passed" if gate["passed"] else "FAILED"
        lines.append(f"            gate on the target: {gate['rule']}: {verdict} (measured {gate['value']:.3f})")
    disagreements = [*check.disagreements, *(check.data["disagreements"] if check.data else ())]
    for d in disagreements[:20]:
        if d.error:
            lines.append(f"            {d.split} sample {d.sample} '{d.output}': {d.error}")
        else:
            top1 = f", top-1 host {d.host_top1} target {d.target_top1}" if d.host_top1 is not None else ""
            lines.append(
                f"            {d.split} sample {d.sample} '{d.output}': max abs error {d.max_abs_error:.3g}{top1}"
            )
    if len(disagreements) > 20:
        lines.append(f"            ... and {len(disagreements) - 20} more samples differ (see --json)")
    return lines


def _output_lines(diffs: Sequence[OutputDiff]) -> list[str]:
    lines = []
    for d in diffs:
        agreement = f", top-1 agreement {d.top1_agreement:.1f}%" if d.top1_agreement is not None else ""
        held = "within tolerance" if d.within_tolerance else "BEYOND tolerance"
        lines.append(f"              {d.name}: max abs error {d.max_abs_error:.3g}{agreement} ({held})")
    return lines
