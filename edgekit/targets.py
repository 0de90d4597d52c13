"""Targets are data: one TOML file per device, naming the backend that serves it and its options."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, did_you_mean
from edgekit.recipe import Scheme, data_dir

_KEYS = ("name", "description", "backend", "default_recipe", "schemes", "device", "options", "defaults")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """One deployment target: a device and the runtime that runs the artifact on it."""

    name: str
    description: str
    backend: str
    default_recipe: str
    schemes: tuple[Scheme, ...]
    device: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest as given
    options: dict[str, Any] = field(default_factory=dict)  # checked by the backend
    defaults: dict[str, Any] = field(default_factory=dict)  # recipe-shaped defaults for this target
    path: Path | None = None


def available_targets() -> dict[str, Path]:
    """Return the bundled targets by name."""
    return {p.stem: p for p in sorted(data_dir("targets").glob("*.toml"))}


def load_target(name_or_path: str) -> TargetSpec:
    """Load a bundled target by name, or a target TOML by path."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        known = available_targets()
        if name_or_path not in known:
            raise ConfigError(
                f"unknown target '{name_or_path}'",
                hint=did_you_mean(name_or_path, list(known)) or f"known targets: {', '.join(known)}",
            )
        path = known[name_or_path]
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"target {path} is not valid TOML: {exc}") from exc
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"unknown key '{key}' in target {path.name}", hint=did_you_mean(key, _KEYS))
    for key in ("backend", "default_recipe", "schemes"):
        if key not in table:
            raise ConfigError(f"target {path.name} lacks the key '{key}'")
    schemes = []
    for value in table["schemes"]:
        try:
            schemes.append(Scheme(value))
        except ValueError:
            raise ConfigError(f"target {path.name} lists unknown scheme '{value}'") from None
    return TargetSpec(
        name=table.get("name", path.stem),
        description=table.get("description", ""),
        backend=table["backend"],
        default_recipe=table["default_recipe"],
        schemes=tuple(schemes),
        device=table.get("device", {}),
        options=table.get("options", {}),
        defaults=table.get("defaults", {}),
        path=path,
    )
