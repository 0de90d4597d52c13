"""The artifact's manifest: a versioned JSON record of what the artifact is and how it was checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.hashing import sha256_of

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = ("schema_version", "name", "target", "artifact", "toolchain", "recipe", "io", "runtime", "accuracy", "files")


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def file_hashes(folder: Path) -> dict[str, str]:
    """Hash every top-level entry and golden file except the manifest itself."""
    hashes: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name == MANIFEST:
            continue
        if entry.is_dir() and entry.suffix != ".mlpackage":
            for file in sorted(p for p in entry.rglob("*") if p.is_file()):
                hashes[str(file.relative_to(folder))] = sha256_of(file)
        else:
            hashes[entry.name] = sha256_of(entry)
    return hashes


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": file_hashes(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=_plain) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check an artifact folder's manifest; raise InputError when it is not one."""
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(f"'{folder}' is not an edgekit artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}")
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise InputError(
            f"{path} has schema version {manifest['schema_version']}; this edgekit reads up to {SCHEMA_VERSION}",
            hint="upgrade edgekit",
        )
    return manifest


def check_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Return a line for every file whose sha256 differs from the manifest's, or that is missing."""
    problems = []
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif sha256_of(path) != expected:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def _plain(value: Any) -> Any:
    """Make mapping proxies, paths, numpy scalars and tuples JSON-ready."""
    if hasattr(value, "items"):
        return dict(value.items())
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
