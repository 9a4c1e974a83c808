"""Exceptions of the token cache. Every message is one line that starts with the path involved."""
from __future__ import annotations

import errno


class CacheError(Exception):
    """A cache file or directory cannot be read or written; the message names the path and the cause."""


class _MissingKey(CacheError, KeyError):
    """A :class:`CacheError` that is also a :class:`KeyError`, printed without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownVideoError(_MissingKey):
    """``cache[video_id]`` for an id the cache does not hold (a KeyError too)."""


class UnknownTensorError(_MissingKey):
    """``video[name]`` for a tensor the video does not have (a KeyError too)."""


def describe_os_error(exc: OSError) -> str:
    """``"No space left on device (ENOSPC)"`` for an :class:`OSError`: the cause, on one line."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text
