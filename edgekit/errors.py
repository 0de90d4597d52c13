"""Exit statuses and the two error families: user errors (with a hint) and internal bugs."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


class ExitStatus(enum.IntEnum):
    """Documented exit statuses of the `edgekit` command (also listed in README.md)."""

    OK = 0
    INTERNAL = 1  # a bug in edgekit: please report it with --traceback
    USAGE = 2  # bad command line (click's own usage errors use 2 as well)
    CONFIG = 3  # unknown target, recipe or key; invalid option value
    MISSING_DEPENDENCY = 4  # the backend's runtime is not installed
    BAD_INPUT = 5  # model or data file missing, corrupt, unsafe or inconsistent
    EXPORT_FAILED = 6  # conversion / quantization / lowering failed for this model
    ACCURACY_FAILED = 7  # the artifact ran but missed the accuracy gate
    INCONCLUSIVE = 8  # too few evaluation samples to judge the gate
    OUTPUT = 9  # the output folder cannot be written: permissions, read-only, disk full
    INTERRUPTED = 130


class EdgekitError(Exception):
    """A problem the user can fix: a one-line message, a hint, and an exit status."""

    status: ExitStatus = ExitStatus.INTERNAL
    artifact: Path | None = None  # the artifact folder a failed build kept (--allow-accuracy-failure)
    measured: Mapping[str, Any] | None = None  # what a failed build had measured (accuracy facts, warnings)

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(EdgekitError):
    status = ExitStatus.USAGE


class ConfigError(EdgekitError):
    status = ExitStatus.CONFIG


class MissingDependencyError(EdgekitError):
    status = ExitStatus.MISSING_DEPENDENCY


class InputError(EdgekitError):
    """The model or data given cannot be used as it is."""

    status = ExitStatus.BAD_INPUT


class ExportError(EdgekitError):
    """The model could not be quantized, converted or lowered for the target."""

    status = ExitStatus.EXPORT_FAILED


class OutputError(EdgekitError):
    """The artifact cannot be written: the output folder is not writable, or the disk is full."""

    status = ExitStatus.OUTPUT


class AccuracyGateError(EdgekitError):
    status = ExitStatus.ACCURACY_FAILED


class InconclusiveError(EdgekitError):
    """The evaluation set is too small for the gate to mean anything."""

    status = ExitStatus.INCONCLUSIVE


class InternalError(Exception):
    """A bug in edgekit, not in the user's input."""

    status = ExitStatus.INTERNAL


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """Return a 'did you mean ...?' hint for the closest choice, or None."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else None


def first_line(exc: BaseException, limit: int = 300) -> str:
    """Return "ExceptionType: first line of its message", cut to `limit` characters, for one-line errors."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:limit].rstrip(": ")
