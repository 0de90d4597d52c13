"""Pack an artifact folder into a deterministic `.tar.gz`: the same folder always gives the same bytes.

What makes it deterministic: entries sorted by path, every entry's mtime set to the build's
SOURCE_DATE_EPOCH (recorded in the manifest's `reproducibility.source_date_epoch` when the build ran
with it set, else 0, 1970-01-01), uid and gid 0 with no user or group names, modes 0755 for folders
and 0644 for files, PAX format, and a gzip header without a timestamp or file name (and a fixed
compression level). The bytes also depend on zlib: the same zlib gives the same stream.

What varies between two builds of the same inputs stays out: measured.json (build time, host
latency, timings) and report.html, which shows them. So two builds of the same model, data, recipe
and toolchain give byte-identical bundles, not only two bundles of one folder.

The files are checked against the manifest first: a changed, missing or unlisted file stops the
bundle (InputError, exit 5, naming it). Symbolic links are refused: a bundle holds files only.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from edgekit.errors import InputError
from edgekit.manifest import MANIFEST, OUTSIDE_REPRODUCIBLE, Manifest, check_files, read_manifest

FILE_MODE = 0o644
FOLDER_MODE = 0o755
COMPRESS_LEVEL = 9


def bundle_artifact(folder: Path, out: Path | None = None) -> Path:
    """Write `folder` (an artifact, manifest inside) to `out` (default `<folder>.tar.gz` beside it); return it.

    The archive holds one top folder named after the artifact folder, written atomically (a
    `.partial` file, then a rename).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    changed = check_files(folder, manifest)
    if changed:
        raise InputError(
            f"artifact files do not match the manifest, so it is not bundled: {'; '.join(changed)}",
            hint="rebuild the artifact, or restore the file",
        )
    root = folder.resolve()
    out = Path(out) if out is not None else root.parent / f"{root.name}.tar.gz"
    if out.resolve().is_relative_to(root):
        raise InputError(
            f"the bundle '{out}' would be written inside the artifact folder", hint="choose --out elsewhere"
        )
    entries = _entries(root)
    mtime = source_date(manifest)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with partial.open("wb") as raw:
            # filename="" keeps the name out of the gzip header; mtime=0 means "no timestamp".
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=0) as packed:
                with tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    tar.addfile(_info(root.name, None, mtime))
                    for relative in entries:
                        path = root / relative
                        info = _info(f"{root.name}/{relative}", path, mtime)
                        if path.is_dir():
                            tar.addfile(info)
                        else:
                            with path.open("rb") as data:
                                tar.addfile(info, data)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def source_date(manifest: Manifest) -> int:
    """Return the SOURCE_DATE_EPOCH the build recorded, in whole seconds since 1970 (0 when it had none)."""
    epoch = manifest.reproducibility.get("source_date_epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else 0


def _entries(root: Path) -> list[str]:
    """Return every folder and file under `root`, as sorted POSIX paths relative to it; refuse links."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if relative in OUTSIDE_REPRODUCIBLE:
            continue
        if path.is_symlink():
            raise InputError(f"artifact entry '{relative}' is a symbolic link; a bundle holds files only")
        if not (path.is_dir() or path.is_file()):
            raise InputError(f"artifact entry '{relative}' is not a file or a folder")
        found.append(relative)
    if MANIFEST not in found:
        raise InputError(f"'{root}' has no {MANIFEST}")
    return sorted(found)


def _info(name: str, path: Path | None, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path is None or path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, FOLDER_MODE
    else:
        info.type, info.mode, info.size = tarfile.REGTYPE, FILE_MODE, path.stat().st_size
    return info
