"""What the CLI and Python pipelines call: resolve, build, verify, inspect, run and bundle artifacts; doctor."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.backends.base import Problem
from edgekit.compat import untested_versions
from edgekit.errors import ConfigError, EdgekitError, ExitStatus, InputError, MissingDependencyError, OutputError
from edgekit.pipeline import BuildContext, BuildRequest, BuildState, Plan, Reporter, check_order, run_pipeline
from edgekit.recipe import PruneMethod, Recipe, build_recipe, parse_overrides, parse_table, read_recipe_file
from edgekit.targets import TargetSpec, load_target

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from edgekit.artifacts import OpenArtifact
    from edgekit.benchmark import BenchResult
    from edgekit.environment import Diagnosis
    from edgekit.manifest import Manifest
    from edgekit.verification import VerifyResult


@dataclass(frozen=True, slots=True)
class BuildResult:
    path: Path
    manifest: Manifest


def resolve(
    target: str,
    recipe: str | None = None,
    overrides: tuple[str, ...] = (),
    input_shape: tuple[int, ...] = (),
    *,
    given: dict[str, Any] | None = None,
) -> Plan:
    """Resolve and check target, recipe and backend options before anything heavy is imported.

    Precedence: `--set` > recipe file > target defaults > dataclass defaults. Every problem found is
    reported at once, in one ConfigError (exit 3), or MissingDependencyError (exit 4) when all of them
    are missing packages.
    """
    from edgekit.backends import get_backend

    spec = load_target(target)
    table = read_recipe_file(recipe or spec.default_recipe)
    extra = parse_overrides(list(overrides))
    if input_shape:
        extra.setdefault("input", {})["shape"] = list(input_shape)
    resolved = build_recipe(spec.defaults, table, extra, given or {})
    backend = get_backend(spec.backend)
    problems: list[Problem] = []
    options: Any = None
    try:
        options = parse_table(backend.Options, spec.options, "options", what="option")
    except ConfigError as exc:
        problems.append(Problem(key="options", message=f"target {spec.name}: {exc.message}", hint=exc.hint))
    problems += _scheme_problems(spec, resolved, backend.schemes)
    problems += _prune_problems(spec, resolved, backend.stores_sparse_weights)
    if options is not None:
        problems += backend.check(resolved, options)
    raise_problems(problems)
    return Plan(target=spec, recipe=resolved, backend=backend, options=options)


def raise_problems(problems: list[Problem]) -> None:
    """Raise one error for every problem: configuration first (exit 3), else missing packages (exit 4)."""
    if not problems:
        return
    config = [p for p in problems if p.status is ExitStatus.CONFIG]
    ordered = config + [p for p in problems if p.status is not ExitStatus.CONFIG]
    first, *rest = ordered
    message = first.message + (f" (and {len(rest)} more: {'; '.join(p.line() for p in rest)})" if rest else "")
    error = ConfigError if config else MissingDependencyError
    raise error(message, hint=first.hint)


def _scheme_problems(spec: TargetSpec, recipe: Recipe, backend_schemes: tuple[Any, ...]) -> list[Problem]:
    scheme = recipe.quantize.scheme
    offered = [s for s in spec.schemes if s in backend_schemes]
    if scheme in offered:
        return []
    return [
        Problem(
            key="quantize.scheme",
            message=f"target '{spec.name}' does not support scheme '{scheme.value}'",
            hint=f"use one of: {', '.join(s.value for s in offered)}",
        )
    ]


def _prune_problems(spec: TargetSpec, recipe: Recipe, stores_sparse: bool) -> list[Problem]:
    from edgekit.backends.base import missing_modules

    prune = recipe.prune
    if prune.ratio <= 0:
        return []
    if prune.method is not PruneMethod.STRUCTURED and not stores_sparse:
        return [
            Problem(
                key="prune.method",
                message=f'prune.method = "{prune.method.value}" would not shrink the {spec.name} artifact: its runtime '
                "stores zeroed weights densely, so the file keeps its size and speed",
                hint='use prune.method = "structured" (whole channels removed)',
            )
        ]
    return missing_modules(("torch", "torch_pruning"), "prune", "pruning")


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
    factory_args: dict[str, Any] | None = None,
    strip_prefix: str | None = None,
    metrics: tuple[str, ...] = (),
    allow_accuracy_failure: bool = False,
    repair: bool = True,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Prune, quantize and export `model` for `target`, verify the artifact, and package it.

    Raises an EdgekitError subclass for anything the user can fix; AccuracyGateError when the
    artifact misses its gate (after writing it, marked failed, if allow_accuracy_failure). When a
    build fails after it started, an older artifact of the same name is moved to `<name>.previous`,
    so that no pipeline takes it for this build's.
    """
    from edgekit.atomic_folder import identity
    from edgekit.stages import build_stages
    from edgekit.stages.package import artifact_dir, set_aside

    given: dict[str, Any] = {}
    if factory_args is not None:
        given.setdefault("model", {})["factory_args"] = factory_args
    if strip_prefix:
        given.setdefault("model", {})["strip_prefix"] = strip_prefix
    if metrics:
        given["gate"] = {"custom_metrics": list(metrics)}
    if not repair:
        given["repair"] = {"enabled": False}
    plan = resolve(target, recipe, overrides, input_shape, given=given)
    stages = build_stages()
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
    try:
        request.out_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=".edgekit-work-", dir=request.out_dir))
    except OSError as exc:
        raise output_error(exc, request.out_dir) or exc from None
    ctx = BuildContext(
        plan=plan,
        workdir=workdir,
        request=request,
        reporter=reporter or Reporter(),
        allow_accuracy_failure=allow_accuracy_failure,
    )
    previous = identity(artifact_dir(ctx))  # the artifact a failed build moves aside, and only that one
    try:
        state = run_pipeline(stages, BuildState(warnings=tuple(untested_versions(plan.backend.versions()))), ctx)
    except BaseException as exc:
        judged = getattr(exc, "status", None) in (ExitStatus.ACCURACY_FAILED, ExitStatus.INCONCLUSIVE)
        kept_failed = judged and allow_accuracy_failure  # the new artifact, marked, is in place
        error = output_error(exc, request.out_dir)
        try:
            aside = None if kept_failed else set_aside(artifact_dir(ctx), previous)
        except OSError:  # the folder that cannot be written cannot take the old artifact aside either
            aside = None
        raised = error or exc
        if aside is not None and isinstance(raised, EdgekitError):
            raised.message += f"; the previous artifact of this name was moved to {aside}"
        if kept_failed and isinstance(exc, EdgekitError) and (artifact_dir(ctx) / "manifest.json").is_file():
            exc.artifact = artifact_dir(ctx)  # so that callers can read what it measured
        if error is not None:
            raise error from exc
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if state.manifest is None or state.path is None:
        from edgekit.errors import InternalError

        raise InternalError("the pipeline ended without packaging an artifact")
    return BuildResult(path=state.path, manifest=state.manifest)


def output_error(exc: BaseException, out_dir: Path) -> OutputError | None:
    """Return an OutputError (exit 9) when `exc`, or an error it wraps, is a failed write: a full disk or a
    read-only file system anywhere, or a permission refused inside the output folder."""
    import errno

    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, OSError) and seen.errno is not None:
            where = Path(seen.filename) if seen.filename else out_dir
            inside = where.resolve().is_relative_to(out_dir.resolve())
            if seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or (
                seen.errno in (errno.EACCES, errno.EPERM) and inside
            ):
                return OutputError(
                    f"cannot write '{where}': {seen.strerror or os.strerror(seen.errno)}",
                    hint="free some space, or choose a writable folder with --out",
                )
        seen = seen.__cause__ or seen.__context__
    return None


def inspect(artifact: str | Path) -> tuple[Manifest, list[str]]:
    """Read an artifact's manifest and check every file's sha256 against it."""
    from edgekit.manifest import check_files, read_manifest

    folder = Path(artifact)
    manifest = read_manifest(folder)
    return manifest, check_files(folder, manifest)


def verify(
    artifact: str | Path,
    *,
    data: str | Path | None = None,
    model: str | None = None,
    on: str | None = None,
    cpu: str | None = None,
) -> VerifyResult:
    """Check an artifact from its folder alone: files, golden re-run in its runtime, the gate it recorded.

    With `data`, also re-measure the artifact against float outputs re-computed from the source model
    (the manifest's, or `model`). See `edgekit.verification`. With `on` ("aarch64", emulated with
    `cpu`, or "ssh://user@host[:port]"), also run it on the target's CPU and compare with the host's
    outputs (`edgekit.verify_remote`).
    """
    from edgekit.verification import verify_artifact

    folder, data_path = Path(artifact), Path(data) if data is not None else None
    if on is None and cpu is None:
        return verify_artifact(folder, data=data_path, model=model)
    from edgekit.executors import get_executor
    from edgekit.verify_remote import verify_on

    return verify_on(folder, get_executor(on or "host", cpu=cpu), data=data_path, model=model)


def open_artifact(artifact: str | Path) -> OpenArtifact:
    """Check an artifact's files against its manifest and open it in its runtime, ready to `.run()` many times.

    Raises InputError (exit 5) when a file changed, MissingDependencyError (exit 4) when nothing here
    can run it. `.warnings` says when the installed runtime differs from the one that built it.
    """
    from edgekit.artifacts import open_artifact as open_folder

    return open_folder(Path(artifact))


def run(artifact: str | Path, inputs: Mapping[str, np.ndarray] | str | Path) -> dict[str, np.ndarray]:
    """Run an artifact in its runtime (or the labelled Core ML proxy) on named inputs; return named outputs.

    `inputs` holds one array per input name (or `inputs` for a one-input model), samples along the
    first axis, or is an .npz file of them; a missing, extra or mis-shaped array raises InputError.
    """
    return open_artifact(artifact).run(inputs)


def bundle(artifact: str | Path, out: str | Path | None = None) -> Path:
    """Pack an artifact folder into a deterministic .tar.gz (default `<folder>.tar.gz`) and return its path.

    The files are checked against the manifest first (InputError names a changed one). See
    `edgekit.tarball` for what makes the bytes reproducible.
    """
    from edgekit.tarball import bundle_artifact

    return bundle_artifact(Path(artifact), Path(out) if out is not None else None)


def bench(
    artifact: str | Path, *, runs: int = 100, warmup: int = 10, profile: bool = False, top: int = 10
) -> BenchResult:
    """Time an artifact in its runtime (warm-up, median, p90), measure its peak memory, compare it with float.

    With `profile`, also rank its operators by time with the runtime's own profiler (ONNX Runtime
    profiling, ExecuTorch ETDump). The float comparison comes from the manifest (the float reference
    is not kept in the folder). Raises MissingDependencyError (exit 4) when this host has no runtime
    for the artifact (Core ML off macOS), InputError (exit 5) when a file differs from the manifest.
    See `edgekit.benchmark` for how each figure is measured.
    """
    from edgekit.benchmark import bench_artifact

    return bench_artifact(Path(artifact), runs=runs, warmup=warmup, profile=profile, top=top)


def doctor() -> Diagnosis:
    """Return the installed packages against the tested set and what each bundled target lacks (no heavy import)."""
    from edgekit.environment import diagnose

    return diagnose()


def list_targets() -> list[TargetSpec]:
    from edgekit.targets import available_targets

    return [load_target(str(path)) for path in available_targets().values()]


def list_recipes() -> dict[str, str]:
    """Return bundled recipe names with their descriptions."""
    from edgekit.recipe import available_recipes

    return {name: read_recipe_file(str(path)).get("description", "") for name, path in available_recipes().items()}
