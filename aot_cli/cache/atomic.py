"""Durable file writes: whole files replaced atomically, and appends that either land whole or are
rolled back. Temporary files carry ``.aot-tmp`` in their name so readers (and git) ignore them."""
from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path
from typing import Iterable, Union

from .errors import CacheError, describe_os_error

TMP_MARK = ".aot-tmp"
_CHUNK = 1 << 26  # 64 MiB per os.write call

Buffer = Union[bytes, bytearray, memoryview]


def temp_name(final_name: str) -> str:
    """A hidden temporary name next to ``final_name``: ``.<final_name>.<uuid8>.aot-tmp``."""
    return f".{final_name}.{uuid.uuid4().hex[:8]}{TMP_MARK}"


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_name`."""
    return name.startswith(".") and name.endswith(TMP_MARK)


def write_all(fd: int, data: Buffer) -> None:
    """Write every byte of ``data`` to ``fd`` (looping over short writes, 64 MiB at a time)."""
    view = memoryview(data).cast("B")
    while len(view):
        written = os.write(fd, view[:_CHUNK])
        view = view[written:]


def write_file(fd: int, pieces: Iterable[Buffer]) -> None:
    """Write ``pieces`` in order to ``fd``, then fsync it."""
    for piece in pieces:
        write_all(fd, piece)
    os.fsync(fd)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file inside ``directory`` durable (no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if possible; cleanup after a failure must not mask the failure itself."""
    try:
        os.unlink(path)
    except OSError:
        pass


def write_temp(directory: Path, final_name: str, pieces: Iterable[Buffer]) -> Path:
    """Write ``pieces`` to a new temporary file in ``directory`` (fsynced) and return its path.
    On failure the temporary file is removed and the :class:`OSError` propagates."""
    tmp = directory / temp_name(final_name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_file(fd, pieces)
    except BaseException:
        os.close(fd)
        remove_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def commit_pieces(path: Path, pieces: Iterable[Buffer]) -> None:
    """Write ``pieces`` to ``path`` atomically: temporary file in the same directory, fsync,
    ``os.replace``, fsync of the directory. Raises :class:`OSError`; no temporary file is left."""
    tmp = write_temp(path.parent, path.name, pieces)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: Union[str, Path], data: Buffer) -> Path:
    """Replace ``path`` with ``data`` atomically (readers see the old file or the new one, never a
    part). Returns ``path``. Raises :class:`CacheError` naming the path and cause (ENOSPC, EACCES…)."""
    path = Path(path)
    try:
        commit_pieces(path, [data])
    except OSError as exc:
        raise CacheError(f"{path}: cannot write: {describe_os_error(exc)}") from exc
    return path


def create_once(path: Path, data: Buffer) -> bool:
    """Create ``path`` holding ``data`` unless it already exists (never clobbers, also against
    another process doing the same). True when this call created it. Raises :class:`OSError`."""
    tmp = write_temp(path.parent, path.name, [data])
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    except OSError:
        # file systems without hard links: fall back to an exclusive create of the final name
        created = _create_exclusive(path, data)
    finally:
        remove_quietly(tmp)
    if created:
        fsync_directory(path.parent)
    return created


def _create_exclusive(path: Path, data: Buffer) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        write_file(fd, [data])
    finally:
        os.close(fd)
    return True


def append_durably(fd: int, data: bytes) -> None:
    """Append ``data`` to the ``O_APPEND`` file ``fd`` in one write and fsync it. On failure the
    file is cut back to its previous length (so no torn line stays behind) and the
    :class:`OSError` propagates. The caller must be the file's only writer (see the part lock)."""
    before = os.fstat(fd).st_size
    try:
        write_all(fd, data)
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, before)
        except OSError:
            pass
        raise


def append_shared(path: Path, data: bytes) -> None:
    """Append ``data`` to a log file that several writers share (``O_APPEND``: each write lands
    whole at the end on a local file system), then fsync. Never through a symbolic link, never to
    a FIFO or device (OSError ELOOP / EINVAL). Raises :class:`OSError`."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
