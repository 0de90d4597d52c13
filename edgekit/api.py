"""What the CLI and Python pipelines call: build, verify and inspect artifacts; list targets, recipes."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.compat import untested_versions
from edgekit.errors import ConfigError, InputError
from edgekit.pipeline import BuildContext, BuildRequest, BuildState, Reporter, check_order, run_pipeline
from edgekit.recipe import Recipe, build_recipe, parse_overrides, read_recipe_file
from edgekit.targets import TargetSpec, load_target


@dataclass(frozen=True, slots=True)
class BuildResult:
    path: Path
    manifest: dict[str, Any]


def resolve(
    target: str, recipe: str | None = None, overrides: tuple[str, ...] = (), input_shape: tuple[int, ...] = ()
) -> tuple[TargetSpec, Recipe]:
    """Resolve target and recipe: `--set` > recipe file > target defaults > dataclass defaults."""
    spec = load_target(target)
    table = read_recipe_file(recipe or spec.default_recipe)
    extra = parse_overrides(list(overrides))
    if input_shape:
        extra.setdefault("input", {})["shape"] = list(input_shape)
    resolved = build_recipe(spec.defaults, table, extra)
    if resolved.quantize.scheme not in spec.schemes:
        allowed = ", ".join(s.value for s in spec.schemes)
        raise ConfigError(
            f"target '{spec.name}' does not support scheme '{resolved.quantize.scheme.value}'",
            hint=f"use one of: {allowed}",
        )
    return spec, resolved


def build(
    model: str,
    *,
    target: str,
    recipe: str | None = None,
    data: str | Path | None = None,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    out_dir: str | Path = "dist",
    name: str | None = None,
    overrides: tuple[str, ...] = (),
    input_shape: tuple[int, ...] = (),
    allow_accuracy_failure: bool = False,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Prune, quantize and export `model` for `target`, verify the artifact, and package it.

    Raises an EdgekitError subclass for anything the user can fix; AccuracyGateError when the
    artifact misses its gate (after writing it, marked failed, if allow_accuracy_failure).
    """
    from edgekit.backends import get_backend
    from edgekit.manifest import read_manifest
    from edgekit.stages import stages_for
    from edgekit.stages.package import artifact_dir

    spec, resolved = resolve(target, recipe, overrides, input_shape)
    backend = get_backend(spec.backend)
    backend.check_options(spec.options)
    backend.check_installed()
    stages = stages_for(backend)
    check_order(stages)  # before anything heavy runs
    request = BuildRequest(
        model=str(model),
        data=Path(data) if data is not None else None,
        weights=Path(weights) if weights is not None else None,
        allow_pickle=allow_pickle,
        out_dir=Path(out_dir),
        name=name,
    )
    if request.data is not None and not request.data.exists():
        raise InputError(f"data '{request.data}' does not exist", hint="pass an .npz file or a folder of images")
    request.out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".edgekit-work-", dir=request.out_dir))
    try:
        ctx = BuildContext(
            recipe=resolved,
            target=spec,
            backend=backend,
            workdir=workdir,
            request=request,
            reporter=reporter or Reporter(),
            allow_accuracy_failure=allow_accuracy_failure,
        )
        state = BuildState(warnings=tuple(untested_versions(backend.versions())))
        run_pipeline(stages, state, ctx)
        path = artifact_dir(ctx)
        return BuildResult(path=path, manifest=read_manifest(path))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def inspect(artifact: str | Path) -> dict[str, Any]:
    """Read an artifact's manifest and check every file's sha256 against it."""
    from edgekit.manifest import check_files, read_manifest

    folder = Path(artifact)
    manifest = read_manifest(folder)
    return {"manifest": manifest, "file_problems": check_files(folder, manifest)}


def verify(artifact: str | Path) -> dict[str, Any]:
    """Re-run an artifact on its golden inputs in its runtime (or proxy) and compare the outputs.

    Returns {"status": "passed"|"failed"|"proxy", "max_abs_error", "atol", "samples", "file_problems"}.
    """
    import numpy as np

    from edgekit.backends import get_backend
    from edgekit.manifest import check_files, read_manifest
    from edgekit.recipe import build_recipe

    folder = Path(artifact)
    manifest = read_manifest(folder)
    problems = check_files(folder, manifest)
    if problems:
        raise InputError(
            f"artifact files do not match the manifest: {'; '.join(problems)}", hint="rebuild the artifact"
        )
    backend = get_backend(manifest["target"]["backend"])
    backend.check_installed()
    spec = load_target(manifest["target"]["name"])
    golden = manifest["golden"]
    if not golden.get("count"):
        raise InputError(f"'{folder}' has no golden samples to verify with")
    inputs = [np.load(folder / p) for p in golden["inputs"]]
    state = BuildState(artifact=folder / manifest["artifact"]["file"], example_input=inputs[0])
    ctx = BuildContext(recipe=build_recipe(manifest["recipe"]), target=spec, backend=backend, workdir=folder)
    runner = backend.runner(state, ctx)
    worst = max(
        float(np.max(np.abs(np.asarray(runner.run(x), dtype=np.float32) - np.load(folder / y))))
        for x, y in zip(inputs, golden["outputs"], strict=True)
    )
    ok = worst <= golden["atol"]
    status = ("passed" if ok else "failed") if runner.mode == "runtime" else "proxy"
    return {
        "status": status,
        "within_tolerance": ok,
        "max_abs_error": worst,
        "atol": golden["atol"],
        "samples": len(inputs),
        "checked_with": runner.mode,
        "reason": runner.reason,
    }


def list_targets() -> list[TargetSpec]:
    from edgekit.targets import available_targets

    return [load_target(str(path)) for path in available_targets().values()]


def list_recipes() -> dict[str, str]:
    """Return bundled recipe names with their descriptions."""
    from edgekit.recipe import available_recipes

    return {name: read_recipe_file(str(path)).get("description", "") for name, path in available_recipes().items()}
