"""What `edgekit doctor` reports: installed packages against the tested set, and what each target needs.

Nothing heavy is imported: versions come from package metadata (`importlib.metadata`), and whether
a module can be imported from `importlib.util.find_spec` through each backend's own `check()` (the
problems it reports as missing dependencies), so a broken torch cannot crash the diagnosis.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Any, Literal

from edgekit.compat import TESTED
from edgekit.errors import EdgekitError, ExitStatus

# The import name of each distribution in the tested set, where it differs.
MODULES = {"torch-pruning": "torch_pruning"}
# Optional features that no target needs: a missing one is reported, but does not fail the check.
FEATURES = {"pruning": (("torch", "torch_pruning"), "prune"), "images": (("PIL",), "images")}


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageCheck:
    """One distribution of the tested set: what is installed, what was tested, and whether it imports."""

    name: str
    installed: str | None  # None: not installed
    tested: str
    importable: bool
    status: Literal["ok", "untested", "missing", "broken"]  # broken: metadata present but no importable module


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedCheck:
    """A bundled target (or an optional feature): whether what it needs is importable, and how to get it."""

    name: str
    backend: str  # the backend name, or "feature"
    ready: bool
    missing: tuple[str, ...] = ()  # module names, or the configuration problem
    extra: str = ""  # the pip extra that installs it: pip install 'edgekit-deploy[extra]'
    hint: str = ""  # the pip command that installs what is missing
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """Everything `edgekit doctor` found. `exit_status` is 4 when a target lacks a package, else 0."""

    python: str
    platform: str
    edgekit: str
    packages: tuple[PackageCheck, ...]
    targets: tuple[NeedCheck, ...]
    features: tuple[NeedCheck, ...]

    @property
    def warnings(self) -> list[str]:
        return [
            f"{p.name} {p.installed} is installed but edgekit was tested with {p.tested}"
            for p in self.packages
            if p.status == "untested"
        ] + [
            f"{p.name} {p.installed} is installed but cannot be imported" for p in self.packages if p.status == "broken"
        ]

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.OK if all(t.ready for t in self.targets) else ExitStatus.MISSING_DEPENDENCY


def diagnose() -> Diagnosis:
    """Check the installed toolchain and every bundled target without importing any runtime."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("edgekit-deploy")
    except PackageNotFoundError:
        own = "not installed (running from source)"
    return Diagnosis(
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        edgekit=own,
        packages=tuple(_package(name, tested) for name, tested in TESTED.items()),
        targets=tuple(_targets()),
        features=tuple(_feature(name, modules, extra) for name, (modules, extra) in FEATURES.items()),
    )


def _package(name: str, tested: str) -> PackageCheck:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed: str | None = version(name)
    except PackageNotFoundError:
        installed = None
    importable = _importable(MODULES.get(name, name))
    if installed is None:
        status: Literal["ok", "untested", "missing", "broken"] = "missing"
    elif not importable:
        status = "broken"
    else:
        status = "ok" if installed == tested else "untested"
    return PackageCheck(name=name, installed=installed, tested=tested, importable=importable, status=status)


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _targets() -> list[NeedCheck]:
    """Return one row per bundled target: the missing-dependency problems its backend's check() reports."""
    from edgekit.api import list_targets
    from edgekit.backends import get_backend
    from edgekit.recipe import build_recipe, parse_table, read_recipe_file

    rows = []
    for spec in list_targets():
        try:
            backend = get_backend(spec.backend)
            options: Any = parse_table(backend.Options, spec.options, "options", what="option")
            recipe = build_recipe(spec.defaults, read_recipe_file(spec.default_recipe))
            problems = [p for p in backend.check(recipe, options) if p.status is ExitStatus.MISSING_DEPENDENCY]
        except EdgekitError as exc:  # a broken target file: say so, and let the other rows stand
            rows.append(NeedCheck(name=spec.name, backend=spec.backend, ready=False, missing=(exc.message,)))
            continue
        missing = tuple(p.key.removeprefix("dependency:") for p in problems)
        note = ""
        if spec.backend == "coreml" and sys.platform != "darwin":
            note = "no Core ML runtime off macOS: accuracy is checked by the host-side proxy"
        rows.append(
            NeedCheck(
                name=spec.name,
                backend=spec.backend,
                ready=not missing,
                missing=missing,
                extra=backend.extra,
                hint=(problems[0].hint or "") if problems else "",
                note=note,
            )
        )
    return rows


def _feature(name: str, modules: tuple[str, ...], extra: str) -> NeedCheck:
    missing = tuple(m for m in modules if not _importable(m))
    hint = f"pip install 'edgekit-deploy[{extra}]'" if missing else ""
    return NeedCheck(name=name, backend="feature", ready=not missing, missing=missing, extra=extra, hint=hint)
