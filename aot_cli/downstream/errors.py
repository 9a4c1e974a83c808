"""Exceptions of the downstream consumers (datasets, LLaVA splicing, ``aot ask``)."""
from __future__ import annotations


class DownstreamError(ValueError):
    """A cache cannot be fed to a consumer (wrong model family, width, placeholder, checkpoint…).
    The message is one line that names the cache file (or checkpoint) and the cause."""
