"""Write the artifact folder atomically: `<out>/<name>-<target>.partial/`, then one rename.

A failed or interrupted build leaves no folder that looks finished.
"""

from __future__ import annotations

import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import report
from edgekit.errors import AccuracyGateError
from edgekit.manifest import size_of, write_manifest
from edgekit.pipeline import BuildContext, BuildState
from edgekit.recipe import recipe_to_table
from edgekit.tomlwrite import dumps


class PackageStage:
    name = "package"
    requires = ("verify",)

    def applies(self, ctx: BuildContext) -> bool:
        return True

    def run(self, state: BuildState, ctx: BuildContext) -> BuildState:
        accuracy = state.facts.get("accuracy", {})
        gate_failed = accuracy.get("gate", {}).get("passed") is False
        if gate_failed and not ctx.allow_accuracy_failure:
            raise AccuracyGateError(
                _gate_message(accuracy) + "; no artifact written",
                hint="inspect the metrics with --json, or pass --allow-accuracy-failure to keep the artifact marked failed",
            )
        final = artifact_dir(ctx)
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _fill(staging, state, ctx)
            _replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        state = state.with_facts("package", {"path": str(final)})
        if gate_failed:
            raise AccuracyGateError(_gate_message(accuracy) + f"; artifact kept, marked failed, at {final}")
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


def _fill(folder: Path, state: BuildState, ctx: BuildContext) -> None:
    assert state.artifact is not None and state.example_input is not None and state.baseline is not None  # noqa: S101 - earlier stages ran
    artifact = folder / ctx.backend.artifact_name
    if state.artifact.is_dir():
        shutil.copytree(state.artifact, artifact)
    else:
        shutil.copyfile(state.artifact, artifact)
    if (ctx.workdir / "golden").is_dir():
        shutil.copytree(ctx.workdir / "golden", folder / "golden")
    (folder / "recipe.lock.toml").write_text(
        f"# resolved recipe of this artifact (edgekit {_version()})\n" + dumps(recipe_to_table(ctx.recipe))
    )
    manifest = _manifest(state, ctx, artifact)
    (folder / "report.html").write_text(report.render({**manifest, "files": {}}))
    write_manifest(folder, manifest)


def _manifest(state: BuildState, ctx: BuildContext, artifact: Path) -> dict[str, Any]:
    contract = ctx.backend.runtime_contract(state, ctx)
    data = state.data
    size = {"artifact_bytes": size_of(artifact)}
    if state.reference_artifact is not None and state.reference_artifact.exists():
        size["float_reference_bytes"] = size_of(state.reference_artifact)
        size["artifact_over_float"] = size["artifact_bytes"] / size["float_reference_bytes"]
    facts = {key: dict(value) for key, value in state.facts.items()}
    return {
        "name": artifact_name(ctx),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": {
            "name": ctx.target.name,
            "description": ctx.target.description,
            "backend": ctx.backend.name,
            "device": ctx.target.device,
        },
        "artifact": {"file": ctx.backend.artifact_name, "format": ctx.backend.name},
        "edgekit": {"version": _version()},
        "toolchain": {
            **ctx.backend.versions(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "host": f"{platform.system()} {platform.machine()}",
        },
        "source_model": facts.get("source", {}),
        "recipe": recipe_to_table(ctx.recipe),
        "io": {
            "inputs": [
                {
                    "name": contract.get("input_name", "input"),
                    "shape": list(state.example_input.shape),
                    "dtype": contract.get("input_dtype", str(state.example_input.dtype)),
                }
            ],
            "outputs": [
                {
                    "name": contract.get("output_name", "output"),
                    "shape": [1, *state.baseline.shape[1:]],
                    "dtype": "float32",
                }
            ],
            "preprocessing": data.preprocessing if data else {},
            "labels": list(data.label_names) if data else [],
        },
        "runtime": contract,
        "data": data.provenance if data else {},
        "prune": facts.get("prune", {"applied": False}),
        "quantize": facts.get("quantize", {}),
        "export": facts.get("export", {}),
        "accuracy": facts.get("accuracy", {"status": "skipped", "reason": "not verified"}),
        "latency": facts.get("latency", {"measured": False}),
        "size": size,
        "golden": facts.get("golden", {"count": 0}),
        "warnings": list(state.warnings),
        "build": {"seconds_by_stage": dict(ctx.timings), "pid": os.getpid()},
    }


def _replace(staging: Path, final: Path) -> None:
    """Move `staging` to `final`, replacing an older build of the same name."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _gate_message(accuracy: dict[str, Any]) -> str:
    gate = accuracy["gate"]
    return f"accuracy gate failed: {gate['rule']} but measured {gate['value']:.3f}"


def _version() -> str:
    from edgekit import __version__

    return __version__
