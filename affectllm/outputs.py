"""Output safety: the one policy every command that writes a file follows.

Before any work a command calls :func:`check_output` on each output path, so a run never ends by destroying
something: an output that is also an input of the same run, a path that exists but is not a regular file
(a folder, a device such as ``/dev/full`` or ``/dev/stdout``, a FIFO), a path under a regular file, or a
place that cannot be written is refused with an :class:`~affectllm.errors.InputError` that names the path
and says how to proceed. Whole files (JSON results) are then written with :func:`atomic_write_text`, so a
crash or a full disk leaves either the old file or the new one, never half of either.
The resumable JSONL writer (:class:`affectllm.batch.ResumableJSONL`) follows the same checks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from affectllm.errors import InputError

PathLike = str | Path


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): checked by stat below
        return False


def os_problem(exc: OSError) -> str:
    """A short reason for an OS error, in the words a user acts on (disk full, read-only, permission)."""
    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "is a folder",
        errno.ENOTDIR: "a parent of the path is not a folder",
        errno.ELOOP: "too many levels of symbolic links",
        errno.ENAMETOOLONG: "the file name is too long",
        errno.EDQUOT: "disk quota exceeded",
    }
    return reasons.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def check_output(
    path: PathLike,
    inputs: Iterable[PathLike | None] = (),
    option: str = "output",
) -> Path:
    """Refuse an output path that a run would misuse; return it as a ``Path``.

    ``inputs`` are the files the same run reads (``None`` entries are ignored); ``option`` names the flag in
    messages (``--out``). Refused, with :class:`InputError` naming the path: an output that is one of the
    inputs (compared by inode, then by resolved path; no ``--overwrite`` lifts this), that exists and is
    not a regular file (folder, device, FIFO, socket, a dangling or looping symlink), whose parent is a
    regular file, or whose folder (or nearest existing ancestor) is not writable. Creates nothing.
    What happens to an existing regular file is the caller's decision: a JSON result is replaced
    (:func:`atomic_write_text`), a resumable JSONL is resumed or, with ``overwrite``, restarted.
    """
    out = Path(path).expanduser()
    if str(path) in ("", "-"):
        raise InputError(path, f"{option} must be a file path")
    for source in inputs:
        if source is None:
            continue
        if _same_file(out, Path(source).expanduser()):
            raise InputError(
                out,
                f"{option} is also an input of this run ({source}); writing it would destroy the input — "
                "choose another path",
            )
    try:
        info = out.stat()
    except FileNotFoundError:
        info = None
        if out.is_symlink():
            raise InputError(
                out, f"{option} is a dangling symbolic link; remove it or choose another path"
            ) from None
    except NotADirectoryError:
        info = None  # a parent is a file: reported below, naming that parent
    except OSError as exc:
        raise InputError(out, f"cannot use as {option}: {os_problem(exc)}") from None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise InputError(
                out, f"{option} exists and is {_kind(info.st_mode)}, not a regular file; choose a file path"
            )
        if not os.access(out, os.W_OK):
            raise InputError(out, f"cannot write {option}: permission denied or read-only")
        return out
    # A new file: the nearest existing ancestor must be a writable folder (missing ones are created later).
    parent = out.parent
    parent_info = None
    while parent_info is None:
        try:
            parent_info = parent.stat()
        except (FileNotFoundError, NotADirectoryError):
            if parent == parent.parent:
                raise InputError(out, f"cannot create {option}: no existing folder above it") from None
            parent = parent.parent
        except OSError as exc:
            raise InputError(out, f"cannot use as {option}: {os_problem(exc)} ({parent})") from None
    if not stat.S_ISDIR(parent_info.st_mode):
        raise InputError(out, f"cannot create {option}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(out, f"cannot create {option}: folder {parent} is not writable")
    return out


def ensure_parent(path: PathLike) -> None:
    """Create the output's missing parent folders, as an :class:`InputError` naming the path on failure."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the folder {out.parent}: {os_problem(exc)}") from None


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A crash, a full disk or a read-only file system leaves the previous file untouched; the error is an
    :class:`InputError` naming ``path``. A symlinked output is written through to its target.
    """
    out = Path(path)
    target = out.resolve() if out.is_symlink() else out
    ensure_parent(target)
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            # Keep an existing file's permissions rather than mkstemp's private 0600.
            os.chmod(tmp_name, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise InputError(out, f"cannot write: {os_problem(exc)}") from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
