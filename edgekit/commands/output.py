"""What every command shares: where edgekit's own lines go, the one JSON object of a `--json` exit, exit statuses.

With `--json`, every exit of build, verify, inspect, run and bundle prints exactly one JSON object on
stdout: `status` ("ok" or "error"; verify keeps its verdict there: passed, proxy, skipped, failed,
inconclusive), `exit_status`, `ok`, `artifact_dir` (the artifact folder when there is one),
`warnings`, the command's own fields, and on error `message` and `hint`. Usage errors included. A failed
build also holds `metrics`, `gate` and `accuracy_status`: the kept artifact's (--allow-accuracy-failure,
with `artifact`), else what the build measured before it stopped (empty when nothing was measured).
"""

from __future__ import annotations

import json
import sys
import traceback as tb
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click

from edgekit.errors import EdgekitError, ExitStatus, first_line

T = TypeVar("T")


@dataclass(slots=True)
class Console:
    """edgekit's own output: lines for people on `err`, results on `out` (None: click's stream when written).

    While a build's third-party output goes to a log file, `err` and `out` are copies of the
    terminal's streams, so edgekit's lines still reach it; `log` is that file, named on failure.
    """

    as_json: bool = False
    err: TextIO | None = None
    out: TextIO | None = None
    log: Path | None = None

    def say(self, message: str, **style: Any) -> None:
        """Write one line for a person (stderr)."""
        click.secho(message, file=self.err, err=True, **style)

    def result(self, text: str) -> None:
        """Write the command's result (stdout)."""
        click.echo(text, file=self.out)

    def emit(self, body: dict[str, Any]) -> None:
        """Write the one JSON object of this exit (stdout)."""
        self.result(json.dumps(body, indent=2, default=str))


def envelope(
    exit_status: int,
    *,
    artifact_dir: str | Path | None = None,
    warnings: Sequence[str] = (),
    message: str | None = None,
    hint: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Return the JSON object of one exit: status, exit status, artifact folder, fields, warnings, error."""
    ok = int(exit_status) == 0
    body: dict[str, Any] = {"status": "ok" if ok else "error"}
    body |= fields
    body |= {
        "exit_status": int(exit_status),
        "ok": ok,
        "artifact_dir": None if artifact_dir is None else str(artifact_dir),
        "warnings": [*fields.get("warnings", ()), *(w for w in warnings if w not in fields.get("warnings", ()))],
    }
    if not ok:
        body |= {"message": message, "hint": hint}
    return body


def call(
    action: Callable[[], T],
    console: Console,
    *,
    traceback: bool = False,
    details: Callable[[EdgekitError], dict[str, Any]] | None = None,
) -> T:
    """Run `action`; turn an error into one line (and a hint) on stderr, the JSON object, and its exit status.

    `details` adds fields to the JSON object of an edgekit error (the artifact a failed build kept, say).
    """
    try:
        return action()
    except EdgekitError as exc:
        if traceback:  # the chain, then the same documented exit status
            console.say(tb.format_exc())
        console.say(f"error: {exc.message}", fg="red")
        if exc.hint:
            console.say(f"hint: {exc.hint}")
        fail(console, exc.status, exc.message, exc.hint, **(details(exc) if details else {}))
    except KeyboardInterrupt:
        console.say("interrupted; no artifact written")
        fail(console, ExitStatus.INTERRUPTED, "interrupted")
    except Exception as exc:  # a bug: one line unless asked for the chain
        if traceback:
            console.say(tb.format_exc())
        console.say(f"internal error: {first_line(exc)}", fg="red")
        console.say("this is a bug in edgekit; re-run with --traceback and report it")
        fail(
            console, ExitStatus.INTERNAL, f"internal error: {first_line(exc)}", "re-run with --traceback and report it"
        )


def fail(console: Console, status: int, message: str, hint: str | None = None, **fields: Any) -> NoReturn:
    """Point to the log of third-party output, print the JSON object when asked, and exit with `status`."""
    if console.log is not None and console.log.is_file() and console.log.stat().st_size:
        console.say(f"edgekit: what converters and runtimes printed is in {console.log}")
        fields.setdefault("log", str(console.log))
    if console.as_json:
        console.emit(envelope(status, message=message, hint=hint, **fields))
    sys.exit(status)


class JsonCommand(click.Command):
    """A command whose usage errors (exit 2) also print the JSON object when `--json` is on the command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if wants_json:
                body = envelope(exc.exit_code, message=exc.format_message(), hint=f"see edgekit {self.name} --help")
                click.echo(json.dumps(body, indent=2))
            raise
