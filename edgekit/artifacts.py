"""Open a built artifact from its folder alone and run it on named inputs, in its runtime.

Like `edgekit verify`, nothing here needs the target file or the build: the backend, its options and
the io contract come from the manifest, and the files must match their recorded sha256 before
anything runs. Core ML artifacts run in Core ML on macOS and in the labelled host-side stand-in
(`runner.mode == "proxy"`) elsewhere. Inputs follow the rules of `--data`: one array per input name,
or `inputs` for a one-input model, each with its samples along the first axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import DynamicDim, IoContract, Runner, RunnerUnavailable, TensorSpec
from edgekit.errors import ExitStatus, InputError, MissingDependencyError
from edgekit.manifest import IoRecord, Manifest

RESERVED = ("labels", "label_names", "preprocessing")  # keys of a --data .npz that are not inputs


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenArtifact:
    """An artifact ready to run: its manifest, the runner its backend opened, and warnings for the caller."""

    folder: Path
    manifest: Manifest
    runner: Runner
    warnings: tuple[str, ...] = ()

    @property
    def io(self) -> IoContract:
        return IoContract(inputs=self.manifest.io.inputs, outputs=self.manifest.io.outputs)

    def run(self, inputs: Mapping[str, Any] | str | Path) -> dict[str, np.ndarray]:
        """Run every sample of `inputs` (named arrays, or an .npz file) and return every output by name.

        Each sample runs at batch 1, as on the device; a stateful model runs closed loop over the
        samples in order, from the state inputs' first sample when given, else from zeros.
        """
        from edgekit.stages.verify import run_artifact

        given = read_inputs(Path(inputs)) if isinstance(inputs, str | Path) else dict(inputs)
        source = f"'{Path(inputs).name}'" if isinstance(inputs, str | Path) else "the inputs"
        feeds = check_inputs(given, self.manifest.io, source)
        _, outputs = run_artifact(self.runner, self.io, feeds, dict(self.manifest.io.state))
        return {name: np.asarray(outputs[name]) for name in self.io.output_names}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckedArtifact:
    """An artifact folder whose files match its manifest, with the backend that runs it, ready to open."""

    manifest: Manifest
    backend: Any
    options: Any
    recipe: Any
    io: IoContract
    path: Path  # the artifact file itself (model.onnx, model.pte, model.mlpackage)


def check_artifact(folder: Path) -> CheckedArtifact:
    """Read `folder`'s manifest, check every file's sha256, and resolve its backend, options and recipe.

    Raises InputError (exit 5) when a file changed, MissingDependencyError (exit 4) when the runtime
    is not installed. `open_artifact` and `verify_artifact` both start here.
    """
    from edgekit.api import raise_problems
    from edgekit.backends import get_backend
    from edgekit.manifest import check_files, read_manifest
    from edgekit.recipe import build_recipe, parse_table

    manifest = read_manifest(folder)
    changed = check_files(folder, manifest)
    if changed:
        raise InputError(f"artifact files do not match the manifest: {'; '.join(changed)}", hint="rebuild the artifact")
    backend = get_backend(manifest.target.backend)
    options: Any = parse_table(backend.Options, manifest.runtime.get("options", {}), "runtime.options", what="option")
    recipe = build_recipe(manifest.recipe)
    raise_problems([p for p in backend.check(recipe, options) if p.status is ExitStatus.MISSING_DEPENDENCY])
    io = IoContract(inputs=manifest.io.inputs, outputs=manifest.io.outputs)
    return CheckedArtifact(
        manifest=manifest, backend=backend, options=options, recipe=recipe, io=io, path=folder / manifest.artifact.file
    )


def open_artifact(folder: Path) -> OpenArtifact:
    """Check `folder`'s files against its manifest and open the artifact in its backend.

    Raises InputError (exit 5) when a file changed, MissingDependencyError (exit 4) when the runtime
    is not installed or nothing on this host can run the artifact.
    """
    checked = check_artifact(folder)
    manifest, backend = checked.manifest, checked.backend
    try:
        runner = backend.open(checked.path, checked.io, checked.options)
    except RunnerUnavailable as exc:
        raise MissingDependencyError(
            f"nothing on this host can run {manifest.artifact.file}: {exc.reason}", hint="run it on the target device"
        ) from None
    return OpenArtifact(
        folder=folder, manifest=manifest, runner=runner, warnings=tuple(toolchain_drift(manifest, backend.versions()))
    )


def toolchain_drift(manifest: Manifest, installed: Mapping[str, str]) -> list[str]:
    """Return a warning for each package of the backend whose installed version differs from the build's."""
    return [
        f"{name} {installed[name]} is installed but the artifact was built with {version}: outputs may differ"
        for name, version in manifest.toolchain.items()
        if name in installed and installed[name] != version
    ]


def read_inputs(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz file (no pickle); raise InputError when it is not one."""
    if not path.is_file():
        raise InputError(f"input file '{path}' does not exist", hint="save the inputs with numpy.savez(path, ...)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise InputError(f"'{path.name}' is not a readable .npz file ({type(exc).__name__}: {exc})") from None


def check_inputs(given: Mapping[str, Any], io: IoRecord, source: str = "the inputs") -> dict[str, np.ndarray]:
    """Return the arrays to feed, cast to the contract's dtypes; raise InputError naming what does not fit.

    The rules of `--data`: one array per input name (state inputs optional), or `inputs` for a
    one-input model (other arrays are then left alone); `labels`, `label_names` and `preprocessing` are
    ignored; any other array is an error. Shapes must match the contract except on dynamic axes and
    the batch axis, where any number of samples may come.
    """
    specs = {t.name: t for t in io.inputs}
    names = list(specs)
    arrays = dict(given)
    if len(names) == 1 and "inputs" in arrays and names[0] not in arrays:
        arrays = {names[0]: arrays["inputs"]}
    optional = set(io.state.values())
    missing = [n for n in names if n not in arrays and n not in optional]
    if missing:
        found = ", ".join(arrays) or "nothing"
        example = "inputs=x" if len(names) == 1 else ", ".join(f"{n}=..." for n in names)
        raise InputError(
            f"{source}: no array for input '{missing[0]}' (found: {found})", hint=f"numpy.savez(path, {example})"
        )
    extra = [k for k in arrays if k not in specs and k not in RESERVED]
    if extra:
        raise InputError(
            f"{source}: arrays that are not model inputs: {', '.join(extra)} (inputs: {', '.join(names)})",
            hint="name each array after a model input",
        )
    feeds = {name: _fit(name, np.asarray(arrays[name]), specs[name], source) for name in names if name in arrays}
    counts = {n: len(a) for n, a in feeds.items() if n not in optional}
    if len(set(counts.values())) > 1:
        raise InputError(f"{source}: inputs hold different numbers of samples: {counts}")
    return feeds


def _fit(name: str, array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    """Return `array` as `spec` takes it, or raise InputError naming the input."""
    want = _shape_text(spec.shape, spec.dynamic)
    if array.ndim != len(spec.shape):
        hint = "add the batch axis: x[None]" if array.ndim == len(spec.shape) - 1 else None
        raise InputError(
            f"{source}: input '{name}' has shape {tuple(array.shape)}, but the artifact takes {want} (N samples)",
            hint=hint,
        )
    ranges = {d.axis: (d.min, d.max) for d in spec.dynamic}
    for axis, size in enumerate(array.shape[1:], start=1):
        low, high = ranges.get(axis, (spec.shape[axis], spec.shape[axis]))
        if not low <= size <= high:
            raise InputError(
                f"{source}: input '{name}' has shape {tuple(array.shape)}, but the artifact takes {want} (N samples)"
            )
    if len(array) == 0:
        raise InputError(f"{source}: input '{name}' holds no samples")
    dtype = np.dtype(spec.dtype)
    if array.dtype == dtype:
        return array
    same_kind = (np.issubdtype(array.dtype, np.floating) and np.issubdtype(dtype, np.floating)) or (
        np.issubdtype(array.dtype, np.integer) and np.issubdtype(dtype, np.integer)
    )
    if not same_kind:
        raise InputError(f"{source}: input '{name}' has dtype {array.dtype}, but the artifact takes {spec.dtype}")
    return array.astype(dtype)  # float64 for float32, int32 token ids for int64, say: same values


def _shape_text(shape: tuple[int, ...], dynamic: tuple[DynamicDim, ...]) -> str:
    ranges = {d.axis: f"{d.min}..{d.max}" for d in dynamic}
    return "(" + ", ".join("N" if a == 0 else ranges.get(a, str(n)) for a, n in enumerate(shape)) + ")"
