"""`edgekit bundle DIR`: a deterministic .tar.gz of an artifact folder, manifest inside, checked first."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands.output import Console, JsonCommand, call, envelope


@click.command(cls=JsonCommand)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), help="the .tar.gz to write [default: ARTIFACT.tar.gz]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def bundle(artifact: Path, out: Path | None, as_json: bool, traceback: bool) -> None:
    """Pack ARTIFACT (a folder) into a deterministic .tar.gz with its manifest inside.

    Every file is checked against the manifest first (exit 5 names a changed file). Bundling the
    same folder twice gives the same bytes: sorted entries, the build's SOURCE_DATE_EPOCH (else 0) on
    every entry, no owner names, fixed modes, no timestamp or name in the gzip header. measured.json and
    report.html (what varies between builds) stay out, so two builds of the same inputs bundle alike.
    """
    from edgekit import api
    from edgekit.hashing import sha256_of

    console = Console(as_json=as_json)
    path = call(
        lambda: api.bundle(artifact, out), console, traceback=traceback, details=lambda _: {"artifact_dir": artifact}
    )
    size, digest = path.stat().st_size, sha256_of(path)
    if as_json:
        console.emit(envelope(0, artifact_dir=artifact, bundle=str(path), bytes=size, sha256=digest))
    else:
        console.result(f"{path}  {size} bytes  sha256 {digest}")
