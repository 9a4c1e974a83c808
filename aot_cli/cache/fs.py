"""Opening files inside a cache: regular files only, no symbolic link followed, bounded reads.

Policy (README "Cache format"): the cache directory the caller names may itself be a symbolic link
(it is opened once, following it), but nothing inside it is followed: every path component below
the cache directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, so a
symbolic link swapped in at any moment is refused, never followed outside the cache. Files must be
regular files: FIFOs, devices and sockets are refused before anything is read (opened with
``O_NONBLOCK``, so opening a FIFO cannot block, then checked with ``fstat``).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import List, Sequence

from .errors import CacheError, describe_os_error

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_CHUNK = 1 << 24


class NotRegularError(CacheError):
    """A path inside a cache is a symbolic link, a FIFO, a device or another non-regular file."""


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO, not a regular file")."""
    if stat.S_ISLNK(mode):
        return "a symbolic link (links inside a cache are not followed)"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISDIR(mode):
        return "a directory, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"


def _special(parent_fd: int, name: str) -> str:
    """What ``name`` is when it is a link or a special file (else "")."""
    try:
        mode = os.lstat(name, dir_fd=parent_fd).st_mode
    except OSError:
        return ""
    return "" if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else describe_mode(mode)


class _Missing(CacheError, FileNotFoundError):
    """A path inside the cache does not exist (a CacheError and a FileNotFoundError)."""


def _error(path: Path, exc: OSError, special: str = "", missing: str = "no such file") -> CacheError:
    if special:
        return NotRegularError(f"{path}: {special}")
    if exc.errno == errno.ENOENT:
        return _Missing(f"{path}: {missing}")
    return CacheError(f"{path}: {describe_os_error(exc)}")


def open_dir(root: Path, parts: Sequence[str] = ()) -> int:
    """A descriptor of the directory ``root/parts…``: ``root`` is followed if it is a link, each of
    ``parts`` must be a real directory. Raises :class:`NotRegularError` for a link or special file,
    a CacheError that is also a FileNotFoundError when missing, CacheError for other failures."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise _error(root, exc, missing="no such directory") from None
    for part in parts:
        try:
            child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            special = _special(fd, part).replace("regular file", "directory")
            os.close(fd)
            raise _error(root / part, exc, special, missing="no such directory") from None
        os.close(fd)
        fd = child
    return fd


def open_regular(root: Path, parts: Sequence[str]) -> int:
    """A read-only descriptor of the regular file ``root/parts[0]/…/parts[-1]``, opened without
    following any link below ``root`` and without blocking (see the module docstring). Raises
    :class:`NotRegularError` for a link, FIFO or other special file; a :class:`CacheError` that is
    also a FileNotFoundError when it does not exist; CacheError for other failures."""
    *dirs, name = parts
    parent = open_dir(root, dirs)
    path = root.joinpath(*parts)
    try:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _error(path, exc, _special(parent, name)) from None
    finally:
        os.close(parent)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularError(f"{path}: {describe_mode(mode)}")
    return fd


def open_regular_path(path: Path) -> int:
    """:func:`open_regular` for a file the caller names directly: the path may be a link (it is
    followed), but what it leads to must be a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _error(path, exc, missing="no such file or directory") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularError(f"{path}: {describe_mode(mode)}")
    return fd


def read_bounded(fd: int, path: object, what: str, max_bytes: int) -> bytes:
    """All of the regular file ``fd`` (from offset 0), at most ``max_bytes`` bytes: a larger file
    raises :class:`CacheError` naming ``path`` and the limit before anything is read."""
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise CacheError(f"{path}: {what} is {size} bytes, more than the {max_bytes} bytes a reader accepts")
    return pread_exact(fd, size, 0, path, what, allow_short=True)


def pread_exact(fd: int, length: int, offset: int, path: object, what: str, allow_short: bool = False) -> bytearray:
    """``length`` bytes at ``offset`` into a new (writable) bytearray, with plain reads: no memory
    map, so a file cut short by another process gives a short read here, never SIGBUS. A short
    read raises :class:`CacheError` ("truncated or changed while being read") unless
    ``allow_short`` (then the bytes that exist are returned)."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    try:
        while got < length:
            n = os.preadv(fd, [view[got:got + _READ_CHUNK]], offset + got)
            if n == 0:
                break
            got += n
    except OSError as exc:
        raise CacheError(f"{path}: cannot read {what}: {describe_os_error(exc)}") from None
    finally:
        view.release()
    if got < length:
        if not allow_short:
            try:
                size = f"holds {os.fstat(fd).st_size} bytes"
            except OSError:
                size = "ends early"
            raise CacheError(f"{path}: cannot read {what}: the file {size}, the header places it at bytes "
                             f"{offset}-{offset + length}; it was truncated or changed while being read")
        del buffer[got:]
    return buffer


def list_names(root: Path, parts: Sequence[str]) -> List[str]:
    """Names in the directory ``root/parts…`` (which must be a real directory, see
    :func:`open_dir`); [] when it does not exist."""
    try:
        fd = open_dir(root, parts)
    except FileNotFoundError:
        return []
    try:
        return sorted(os.listdir(fd))
    except OSError as exc:
        raise CacheError(f"{root.joinpath(*parts)}: cannot list: {describe_os_error(exc)}") from None
    finally:
        os.close(fd)
