"""Reading index parts (``index/<part>.jsonl``): bounded, streaming, one checked row per line.

A part is read up to the size it had when it was opened (a writer appending meanwhile cannot make
the read endless), in chunks, so memory stays bounded by :data:`MAX_ROW_BYTES` per line whatever
the file holds. A line that is not a well-formed row is skipped with a one-line reason; the rows
kept hold their raw JSON bytes and the few fields the reader merges on, and are parsed again only
when a caller asks for the whole row.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import safejson
from .format import MAX_META_BYTES
from .fs import pread_exact
from .layout import shard_file_name

MAX_ROW_BYTES = MAX_META_BYTES + (1 << 20)  # one row: its meta plus a few short fields
MAX_INDEX_BYTES = 2 << 30  # all parts of one cache together (default of TokenCache(max_index_bytes))
MAX_INDEX_LINES = 4_000_000  # lines of all parts together (blank ones included)
MAX_SKIPPED_LINES = 100_000  # lines that are not rows; a real cache has a handful (torn appends)
_CHUNK = 8 << 20
_KEY_RE = re.compile(r"^v[0-9]{1,9}$")


class Row:
    """One checked index row: ``id``, ``status``, ``committed_at``, and for ok rows ``shard``
    (the file name inside ``shards/``) and ``key``. :meth:`data` gives the whole row as a dict."""

    __slots__ = ("id", "status", "committed_at", "shard", "key", "_raw", "_data")

    def __init__(self, data: Dict[str, Any], raw: Optional[bytes] = None, shard: Optional[str] = None) -> None:
        self.id: str = data["id"]
        self.status: str = data["status"]
        self.committed_at: str = data.get("committed_at", "")
        self.shard = shard
        self.key: Optional[str] = data.get("key")
        self._raw = raw
        self._data = None if raw is not None else data

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def data(self) -> Dict[str, Any]:
        """The whole row (a new dict for rows read from an index part)."""
        if self._data is not None:
            return self._data
        return json.loads(self._raw)  # checked when it was read: parses within the limits


def parse_row(line: bytes) -> Row:
    """The row on one index line; ValueError (one line, the reason) when it is not a well-formed
    row: not JSON within the limits of :mod:`.safejson`, not an object, ``id``/``status``/
    ``committed_at`` not non-empty strings, or an ok row whose ``shard`` is not
    ``shards/<name>.safetensors`` or whose ``key`` is not ``v<number>``. These are the fields the
    reader relies on; the others (``sha256``, ``meta``…) are handed to callers as stored, and
    callers check what they use (resuming compares ``sha256`` only when it is a string)."""
    if len(line) > MAX_ROW_BYTES:
        raise ValueError(f"longer than {MAX_ROW_BYTES} bytes")
    data = safejson.loads(line)
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    for name in ("id", "status", "committed_at"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"'{name}' is missing or not a non-empty string")
    shard = None
    if data["status"] == "ok":
        shard = shard_file_name(data.get("shard"))
        if shard is None:
            raise ValueError("'shard' is not of the form shards/<name>.safetensors")
        if not isinstance(data.get("key"), str) or not _KEY_RE.match(data["key"]):
            raise ValueError("'key' is not of the form v<number>")
    return Row(data, raw=bytes(line), shard=shard)


def iter_lines(fd: int, size: int, path: Path, max_line: int = MAX_ROW_BYTES) -> Iterator[Tuple[int, Optional[bytes]]]:
    """(line number from 0, line bytes) for each line of the first ``size`` bytes of ``fd``; the
    bytes are None for a line longer than ``max_line`` (skipped without being held in memory). The
    last line may lack its newline (a torn append)."""
    number = 0
    pending: List[bytes] = []
    pending_len = 0
    too_long = False
    offset = 0
    while offset < size:
        chunk = bytes(pread_exact(fd, min(_CHUNK, size - offset), offset, path, "index part", allow_short=True))
        if not chunk:
            break
        offset += len(chunk)
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not too_long:
                if pending_len + len(piece) > max_line:
                    too_long, pending, pending_len = True, [], 0
                else:
                    pending.append(piece)
                    pending_len += len(piece)
            if end < 0:
                break
            yield number, (None if too_long else b"".join(pending))
            number, pending, pending_len, too_long = number + 1, [], 0, False
            start = end + 1
    if pending_len or too_long:
        yield number, (None if too_long else b"".join(pending))


def read_part(fd: int, path: Path, max_lines: int = MAX_INDEX_LINES,
              max_skipped: int = MAX_SKIPPED_LINES) -> Tuple[List[Tuple[int, Row]], List[Tuple[int, str]], int]:
    """The rows of one open index part as (line number, :class:`Row`), (line number, reason) of
    each line skipped (blank lines are neither), and the number of lines. Stops early, after
    ``max_lines`` lines or ``max_skipped`` skipped ones (the caller refuses such an index)."""
    rows: List[Tuple[int, Row]] = []
    skipped: List[Tuple[int, str]] = []
    number = -1
    for number, line in iter_lines(fd, os.fstat(fd).st_size, path):
        if number >= max_lines or len(skipped) > max_skipped:
            break
        if line is None:
            skipped.append((number, f"longer than {MAX_ROW_BYTES} bytes"))
            continue
        if not line.strip():
            continue
        try:
            rows.append((number, parse_row(line)))
        except ValueError as exc:
            skipped.append((number, " ".join(str(exc).split())[:160]))
    return rows, skipped, number + 1
