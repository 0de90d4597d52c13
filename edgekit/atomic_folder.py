"""Put a finished folder in place atomically, and let concurrent builds of one name share an output folder.

- Each build stages its artifact in a folder of its own, `<name>.partial-<pid>-<random>`, so two builds never
  write into, or delete, each other's staging folder. Staging folders of processes that died (SIGKILL) are
  removed by the next build of the same name.
- `replace_folder` swaps the staging folder with the finished one in one step (Linux `renameat2` with
  RENAME_EXCHANGE), so a reader sees the old artifact or the new one, never neither and never a mix. Where
  the kernel or file system cannot exchange, it falls back to two renames; the gap between them is then
  visible to readers, but not to other edgekit builds, which wait on the lock.
- `output_lock` is an advisory lock (`flock`) on the output folder itself, so it leaves no lock file
  behind; every step that moves a finished artifact (replace, set aside) holds it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

AT_FDCWD = -100
RENAME_EXCHANGE = 1 << 1
PARTIAL = ".partial-"


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `folder` (a directory) while the block runs."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def staging_folder(final: Path) -> Path:
    """Create and return an empty staging folder for `final` that no other process uses."""
    remove_stale_staging(final)
    staging = final.with_name(f"{final.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    return staging


def remove_stale_staging(final: Path) -> None:
    """Remove staging folders of `final` left by processes that are no longer running."""
    if not final.parent.is_dir():
        return
    for path in final.parent.glob(f"{final.name}{PARTIAL}*"):
        pid = path.name[len(final.name) + len(PARTIAL) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def replace_folder(staging: Path, final: Path) -> bool:
    """Move `staging` to `final`, replacing an older folder there; return True when it was one atomic step.

    The caller holds `output_lock(final.parent)`. The older folder is deleted afterwards.
    """
    if not final.exists():
        staging.rename(final)
        return True
    if exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the older folder
        return True
    old = staging.with_name(staging.name + ".old")
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return False


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); return False where that is not available."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):  # not on this kernel or file system
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def identity(folder: Path) -> tuple[int, int] | None:
    """Return (device, inode) of `folder`, or None when it does not exist: which artifact is there now."""
    try:
        found = folder.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _renameat2() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
