"""Write the small nested tables of a recipe as TOML (the standard library only reads TOML)."""

from __future__ import annotations

import json
from typing import Any


def dumps(table: dict[str, Any], prefix: str = "") -> str:
    """Return `table` as TOML text: plain keys first, then one [section] per nested table."""
    lines = [f"{key} = {_value(value)}" for key, value in table.items() if not isinstance(value, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines.append(f"\n[{name}]")
            lines.append(dumps(value, prefix=f"{name}.").rstrip("\n"))
    return "\n".join(line for line in lines if line != "") + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return (
            repr(value)
            if value == value and abs(value) != float("inf")
            else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
        )
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
