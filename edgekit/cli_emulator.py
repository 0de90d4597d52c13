"""`edgekit emulator setup|status aarch64`: the emulated userland that `verify --on aarch64` runs in.

Thin, like cli.py: parse, call `edgekit.executors.userland`, map errors to exit statuses (4 when the
host lacks root or the apt packages). Imports nothing heavy.
"""

from __future__ import annotations

import json
import sys
import time

import click

ARCHES = click.Choice(["aarch64"])


@click.group()
def emulator() -> None:
    """Set up and inspect the emulated aarch64 userland used by `verify --on aarch64`.

    Setup needs root and the apt packages qemu-user-static, binfmt-support, debootstrap and
    g++-aarch64-linux-gnu; it caches a Debian bookworm arm64 userland with ONNX Runtime and an
    ExecuTorch runner under $XDG_CACHE_HOME/edgekit/aarch64 (~0.6 GB).
    """


@emulator.command()
@click.argument("arch", type=ARCHES)
@click.option("--traceback", is_flag=True, help="show the full error chain")
def setup(arch: str, traceback: bool) -> None:
    """Build the ARCH userland once (idempotent: a second run only checks it)."""
    from edgekit.cli import _run
    from edgekit.executors import userland

    started = time.monotonic()
    found = _run(traceback, lambda: userland.setup(say=lambda line: click.echo(f"  {line}", err=True)))
    click.echo(f"{arch} userland ready in {found.path} ({time.monotonic() - started:.0f} s)")


@emulator.command()
@click.argument("arch", type=ARCHES)
@click.option("--json", "as_json", is_flag=True)
def status(arch: str, as_json: bool) -> None:
    """Show whether the ARCH userland is set up, its versions, and what this host lacks to run it.

    Exits 0 when `verify --on aarch64` can run, 4 when it cannot.
    """
    from edgekit.errors import ExitStatus
    from edgekit.executors import userland

    found = userland.status()
    if as_json:
        table = {"path": str(found.path), "ready": found.ready, "steps": found.steps, "missing": list(found.missing)}
        click.echo(json.dumps(table, indent=2))
    else:
        click.echo(f"{arch} userland: {'ready' if found.ready else 'not set up'} ({found.path})")
        for name, facts in found.steps.items():
            click.echo(f"  {name:<11} " + ", ".join(f"{k} {v}" for k, v in facts.items()))
        if found.missing:
            click.echo(f"  this host lacks: {', '.join(found.missing)}")
        if not found.ready:
            click.echo("  run `edgekit emulator setup aarch64` (as root)")
    if not found.ready or found.missing:
        sys.exit(ExitStatus.MISSING_DEPENDENCY)
