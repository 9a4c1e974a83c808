"""Bounded JSON for everything aot reads from files it did not write itself (caches, config files,
manifests): nesting is checked before parsing, and only finite numbers of bounded length are
accepted.

Python's ``json`` recurses once per nesting level, so a document nested thousands of levels deep
(``[[[[…]]]]``) raises RecursionError in the middle of a read. :func:`nesting_exceeds` measures
the depth first, in one linear pass that never recurses (strings and their escapes are skipped
exactly as a JSON parser does, so the depth is exact for valid JSON and for any valid prefix of
invalid JSON, which is all the parser ever reaches). Accepted documents (RFC 8259) are further
restricted to:

- at most :data:`MAX_DEPTH` nested arrays/objects (the cache's own metadata is about 5 deep; callers
  may ask for less);
- no ``NaN``/``Infinity``/``-Infinity`` (not JSON, but Python's parser accepts them) and no number
  that overflows to infinity (``1e400``);
- integers of at most :data:`MAX_INT_DIGITS` digits.
"""
from __future__ import annotations

import json
import math
from typing import Any, Union

import numpy as np

MAX_DEPTH = 64
MAX_INT_DIGITS = 40
_CHUNK = 1 << 20
_QUOTE, _BACKSLASH = 0x22, 0x5C
_OPENERS, _CLOSERS = (0x5B, 0x7B), (0x5D, 0x7D)


class JSONLimitError(ValueError):
    """A document outside the limits above (too deep, non-finite or too long a number)."""


def nesting_exceeds(data: Union[bytes, bytearray, memoryview], limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text ``data`` (UTF-8) nests arrays/objects more than ``limit`` deep.

    Brackets inside strings do not count; a quote preceded by an odd run of backslashes is
    escaped. Linear time, memory bounded by a 1 MiB chunk, no recursion."""
    if isinstance(data, (bytes, bytearray)) and data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot nest deeper than the number of brackets it opens
    data = memoryview(data).cast("B")
    if _count_openers(data) <= limit:
        return False
    depth = 0
    in_string = False
    carry = 0  # the run of backslashes that ended the previous chunks
    for start in range(0, len(data), _CHUNK):
        chunk = np.frombuffer(data[start:start + _CHUNK], dtype=np.uint8)
        n = len(chunk)
        # the last position at or before i that is not a backslash (-1: none in this chunk)
        last_plain = np.maximum.accumulate(np.where(chunk == _BACKSLASH, -1, np.arange(n)))
        quotes = np.flatnonzero(chunk == _QUOTE)
        before = np.where(quotes > 0, last_plain[np.maximum(quotes - 1, 0)], -1)
        run = np.where(before >= 0, quotes - 1 - before, quotes + carry)  # backslashes before each quote
        # Inside a string an odd run escapes the quote. Outside one a backslash is already invalid
        # JSON, where the parser stops, so what is counted after it does not matter.
        real = quotes[run % 2 == 0]
        opening = (chunk == _OPENERS[0]) | (chunk == _OPENERS[1])
        brackets = np.flatnonzero(opening | (chunk == _CLOSERS[0]) | (chunk == _CLOSERS[1]))
        if len(brackets):
            outside = (np.searchsorted(real, brackets) % 2 == 1) == in_string
            steps = np.where(opening[brackets[outside]], 1, -1)
            if len(steps):
                levels = depth + np.cumsum(steps)
                if int(levels.max()) > limit:
                    return True
                depth = int(levels[-1])
        in_string = in_string != (len(real) % 2 == 1)
        tail = int(last_plain[-1])
        carry = n - 1 - tail if tail >= 0 else carry + n
    return False


def _count_openers(data: memoryview) -> int:
    raw = data.tobytes() if len(data) <= _CHUNK else None
    if raw is not None:
        return raw.count(b"[") + raw.count(b"{")
    total = 0
    for start in range(0, len(data), _CHUNK):
        piece = data[start:start + _CHUNK].tobytes()
        total += piece.count(b"[") + piece.count(b"{")
    return total


def _reject_constant(name: str) -> Any:
    raise JSONLimitError(f"holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"holds the number {text[:20]}, which overflows")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"holds an integer of {len(text.lstrip('-'))} digits "
                             f"(at most {MAX_INT_DIGITS})")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)


def loads(data: Union[bytes, bytearray, memoryview, str], max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document within the limits above. Raises :class:`ValueError` (one line:
    :class:`JSONLimitError` for a limit, else the parser's or UTF-8 decoder's error)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if nesting_exceeds(raw, max_depth):
        raise JSONLimitError(f"nests arrays/objects more than {max_depth} levels deep")
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    try:
        return _DECODER.decode(text)
    except RecursionError:  # not reachable after the depth check; kept as a last guard
        raise JSONLimitError("nests arrays/objects too deeply") from None
