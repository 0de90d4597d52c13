"""Write the artifact folder atomically: a staging folder of this build's own, then one atomic swap.

A failed or interrupted build leaves no folder that looks finished, and two builds of one name into one
output folder never corrupt each other (see `edgekit.atomic_folder`). Two builds of the same inputs
write the same bytes: what varies (time, host latency, timings) goes to measured.json. The manifest is built here, from
the state the earlier stages handed on, and returned in the final state: nothing re-reads it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import report
from edgekit.atomic_folder import identity, output_lock, replace_folder, staging_folder
from edgekit.backends.base import installed_versions
from edgekit.errors import AccuracyGateError, InconclusiveError, InternalError
from edgekit.manifest import (
    MEASURED,
    OUTSIDE_REPRODUCIBLE,
    REPORT,
    Accuracy,
    ArtifactRecord,
    Gate,
    Golden,
    IoRecord,
    Manifest,
    Size,
    TargetRecord,
    size_of,
    write_manifest,
)
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import Recipe, recipe_to_table, recipe_to_toml
from edgekit.stages.prune import unpruned_float_reference


class PackageStage:
    name = "package"
    requires: tuple[str, ...] = ("verify",)

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        manifest = build_manifest(state, ctx)
        if manifest.inconclusive and not ctx.allow_accuracy_failure:
            raise InconclusiveError(
                manifest.accuracy.reason + "; no artifact written",
                hint="give more evaluation data, or pass --allow-accuracy-failure to keep it marked inconclusive",
            )
        if manifest.gate_failed and not ctx.allow_accuracy_failure:
            raise AccuracyGateError(
                gate_message(manifest) + "; no artifact written",
                hint=(
                    "inspect the metrics with --json, or pass --allow-accuracy-failure to keep the artifact "
                    "marked failed"
                ),
            )
        final = artifact_dir(ctx)
        staging = staging_folder(final)
        try:
            manifest = _fill(staging, state, ctx, manifest)
            with output_lock(final.parent):
                replace_folder(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        state = state.evolve(manifest=manifest, path=final)
        if manifest.gate_failed:
            raise AccuracyGateError(gate_message(manifest) + f"; artifact kept, marked failed, at {final}")
        if manifest.inconclusive:
            raise InconclusiveError(manifest.accuracy.reason + f"; artifact kept, marked inconclusive, at {final}")
        return state


def artifact_dir(ctx: BuildContext) -> Path:
    return ctx.request.out_dir / f"{artifact_name(ctx)}-{ctx.target.name}"


def artifact_name(ctx: BuildContext) -> str:
    """Return --name, else the model file's stem (its folder's name when the stem is just 'model')."""
    if ctx.request.name:
        return ctx.request.name
    spec = ctx.request.model
    if ":" in spec and not Path(spec).exists():
        source = spec.rpartition(":")[0]
        if not source.endswith(".py"):
            return source.rsplit(".", 1)[-1]  # my_package.models:build -> models
        spec = source
    path = Path(spec).resolve()
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def resolved_recipe(state: BuildState, ctx: BuildContext) -> Recipe:
    """Return the recipe as it ran: the scheme `auto` chose, what repair changed, and the data's sample counts."""
    recipe = ctx.recipe
    if state.compiled is not None:
        quantize = state.quantize or recipe.quantize  # repair may have changed it
        recipe = dataclasses.replace(recipe, quantize=dataclasses.replace(quantize, scheme=state.compiled.scheme))
    if state.data is not None and not state.data.is_synthetic:
        used = state.data.provenance
        sizes = {"calibration_size": used["calibration_size"], "evaluation_size": used["evaluation_size"]}
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, **sizes))
    return recipe


def build_manifest(state: BuildState, ctx: BuildContext) -> Manifest:
    """Gather the manifest from the state; file hashes are added when it is written."""
    compiled, io, data = state.compiled, state.io, state.data
    if compiled is None or io is None or data is None:
        raise InternalError("the package stage needs the compiled artifact, io contract and data")
    facts = {key: dict(value) for key, value in state.facts.items()}
    backend = ctx.backend
    toolchain = {**backend.versions(), "python": platform.python_version(), "numpy": np.__version__}
    if "prune" in facts:
        toolchain |= installed_versions("torch-pruning")
    accuracy = facts.get("accuracy", {"status": "skipped", "reason": "not verified"})
    gate = accuracy.get("gate")
    golden = facts.get("golden", {"count": 0})
    return Manifest(
        name=artifact_name(ctx),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        target=TargetRecord(
            name=ctx.target.name, description=ctx.target.description, backend=backend.name, device=ctx.target.device
        ),
        artifact=ArtifactRecord(file=backend.artifact_name, format=backend.name),
        edgekit={"version": _version()},
        toolchain={**toolchain, "host": f"{platform.system()} {platform.machine()}"},
        source_model=facts.get("source", {}),
        recipe=recipe_to_table(resolved_recipe(state, ctx)),
        io=IoRecord(
            inputs=io.inputs,
            outputs=io.outputs,
            preprocessing=dict(data.preprocessing),
            labels=data.label_names,
            state=dict(ctx.recipe.io.state),
        ),
        runtime={**compiled.runtime, "options": recipe_to_table(ctx.plan.options)},
        data=dict(data.provenance),
        prune=facts.get("prune", {"applied": False}),
        quantize=facts.get("quantize", {}),
        export=facts.get("export", {}),
        accuracy=Accuracy(
            status=accuracy["status"],
            reason=accuracy.get("reason", ""),
            checked_with=accuracy.get("checked_with", ""),
            metrics=accuracy.get("metrics", {}),
            outputs=accuracy.get("outputs", {}),
            gate=Gate(rule=gate["rule"], value=gate["value"], passed=gate["passed"], rules=tuple(gate.get("rules", ())))
            if gate
            else None,
            sequence=accuracy.get("sequence", {}),
            evidence=accuracy.get("evidence", {}),
        ),
        latency=facts.get("latency", {"measured": False}),
        size=_size(compiled.artifact, compiled.float_reference, unpruned_float_reference(ctx)),
        golden=Golden(
            count=golden["count"],
            atol=golden.get("atol", 0.0),
            rtol=golden.get("rtol", 0.0),
            samples=tuple(golden.get("samples", ())),
            produced_by=golden.get("produced_by", ""),
            reason=golden.get("reason", ""),
        ),
        warnings=state.warnings,
        diagnosis=facts.get("diagnosis", {}),
        repair=facts.get("repair", {}),
        build={"seconds_by_stage": dict(ctx.timings)},
        reproducibility=reproducibility(facts),
    )


def reproducibility(facts: dict[str, Any]) -> dict[str, Any]:
    """Say whether the same inputs rebuild these bytes, and where the facts that vary are.

    Everything but measured.json and report.html is reproducible (same model, data, recipe and
    toolchain, on the same kind of host): seeded data split and calibration, recovery stopped by
    steps, sorted JSON, content-derived Core ML package ids. A wall-clock recovery budget breaks it.
    """
    why_not = []
    recovery = facts.get("prune", {}).get("recovery", {})
    if recovery.get("time_budget_s") is not None:
        why_not.append(
            f"prune.recovery.time_budget_s = {recovery['time_budget_s']:g} may stop recovery by wall-clock time "
            f"(this build: {recovery.get('stopped_by', 'steps')})"
        )
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return {
        "reproducible": not why_not,
        "why_not": "; ".join(why_not),
        "measured_file": MEASURED,
        "outside": list(OUTSIDE_REPRODUCIBLE),
        "source_date_epoch": int(epoch) if epoch.isdigit() else None,
    }


def gate_message(manifest: Manifest) -> str:
    gate = manifest.accuracy.gate
    assert gate is not None  # noqa: S101 - only called when the gate failed
    return f"accuracy gate failed: {gate.rule} but measured {gate.value:.3f}"


def set_aside(final: Path, previous: tuple[int, int] | None) -> Path | None:
    """Move the artifact that was at `final` when this build started (`previous`, from `identity()`) to
    `<name>.previous`, so a failed rebuild never looks like it. An artifact another build has put there
    since is left alone."""
    if previous is None or not final.parent.is_dir():
        return None
    with output_lock(final.parent):
        if identity(final) != previous:
            return None
        aside = final.with_name(final.name + ".previous")
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
    return aside


def _size(artifact: Path, reference: Path | None, unpruned: Path | None) -> Size:
    """Compare with the user's model in float: the unpruned one when the build pruned (the pruned float beside)."""
    size = size_of(artifact)
    pruned = size_of(reference) if unpruned is not None and reference is not None and reference.exists() else None
    if unpruned is not None:
        reference = unpruned
    if reference is None or not reference.exists():
        return Size(artifact_bytes=size)
    float_size = size_of(reference)
    return Size(
        artifact_bytes=size,
        float_reference_bytes=float_size,
        artifact_over_float=size / float_size,
        pruned_float_bytes=pruned,
    )


def _fill(folder: Path, state: BuildState, ctx: BuildContext, manifest: Manifest) -> Manifest:
    compiled = state.compiled
    assert compiled is not None  # noqa: S101 - build_manifest checked
    artifact = folder / ctx.backend.artifact_name
    if compiled.artifact.is_dir():
        shutil.copytree(compiled.artifact, artifact)
    else:
        shutil.copyfile(compiled.artifact, artifact)
    if (ctx.workdir / "golden").is_dir():
        shutil.copytree(ctx.workdir / "golden", folder / "golden")
    header = f"the resolved recipe of this artifact (edgekit {_version()})"
    (folder / "recipe.lock.toml").write_text(recipe_to_toml(resolved_recipe(state, ctx), header), encoding="utf-8")
    (folder / REPORT).write_text(report.render(manifest.to_json()), encoding="utf-8")
    return write_manifest(folder, manifest)


def _version() -> str:
    from edgekit import __version__

    return __version__
