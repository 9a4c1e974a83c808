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
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import safejson
from .format import MAX_META_BYTES, SEGMENT_ALIGN
from .fs import pread_exact
from .layout import shard_file_name

MAX_ROW_BYTES = MAX_META_BYTES + (1 << 20)  # one row: its meta plus a few short fields
MAX_INDEX_BYTES = 2 << 30  # all parts of one cache together (default of TokenCache(max_index_bytes))
MAX_INDEX_LINES = 4_000_000  # lines of all parts together (blank ones included)
MAX_SKIPPED_LINES = 100_000  # lines that are not rows; a real cache has a handful (torn appends)
_CHUNK = 8 << 20
_KEY_RE = re.compile(r"^v[0-9]{1,9}$")
MAX_OFFSET = 1 << 60


class Row:
    """One checked index row: ``id``, ``status``, ``committed_at``, and for ok rows ``shard``
    (the file name inside ``shards/``), ``key`` and ``offset`` (where the video's segment starts
    in the shard; 0 when the row has none, as rows of format 1 do). ``part`` and ``line``: the
    index part and line (from 0) it was read from. :meth:`data` gives the whole row as a dict."""

    __slots__ = ("id", "status", "committed_at", "shard", "key", "offset", "part", "line", "_raw", "_data")

    def __init__(self, data: Dict[str, Any], raw: Optional[bytes] = None, shard: Optional[str] = None,
                 part: str = "", line: int = 0) -> None:
        self.id: str = data["id"]
        self.status: str = data["status"]
        self.committed_at: str = data.get("committed_at", "")
        self.shard = shard
        self.key: Optional[str] = data.get("key")
        offset = data.get("offset", 0)
        self.offset: int = offset if isinstance(offset, int) and not isinstance(offset, bool) else 0
        self.part = part
        self.line = line
        self._raw = raw
        self._data = None if raw is not None else data

    @property
    def segment(self) -> Tuple[Optional[str], int]:
        """``(shard file name, offset)``: the segment holding an ok row's video."""
        return self.shard, self.offset

    @property
    def raw(self) -> bytes:
        """The row as stored (one JSON line without its newline)."""
        if self._raw is not None:
            return self._raw
        return json.dumps(self._data, ensure_ascii=False).encode("utf-8")

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
    ``shards/<name>.safetensors``, whose ``key`` is not ``v<number>`` or whose ``offset`` (when
    present) is not a non-negative multiple of 8. These are the fields the
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
        offset = data.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET \
                or offset % SEGMENT_ALIGN:
            raise ValueError(f"'offset' is not a multiple of {SEGMENT_ALIGN} in 0..{MAX_OFFSET}")
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
              max_skipped: int = MAX_SKIPPED_LINES,
              part: str = "") -> Tuple[List[Tuple[int, Row]], List[Tuple[int, str]], int]:
    """The rows of one open index part as (line number, :class:`Row`), (line number, reason) of
    each line skipped (blank lines are neither), and the number of lines. Stops early, after
    ``max_lines`` lines or ``max_skipped`` skipped ones (the caller refuses such an index).
    ``part``: the part's name, recorded in each row."""
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
            row = parse_row(line)
        except ValueError as exc:
            skipped.append((number, " ".join(str(exc).split())[:160]))
            continue
        row.part, row.line = part, number
        rows.append((number, row))
    return rows, skipped, number + 1


@dataclass
class MergedIndex:
    """What the rows of a cache say, merged as every reader merges them (README "Cache format").

    Rows are taken in commit order (``committed_at``, then part name, then line). Per id, the last
    ok row whose shard is usable wins (``ok``); a failure row counts as the id's latest attempt,
    and ``failed`` holds the ids whose latest attempt failed (an id can be in both: cached, then
    failed). ``missing``: per id, the ok rows after its last usable one that name a shard that is
    not there (reported, never read)."""

    rows: List[Row]
    ok: Dict[str, Row] = field(default_factory=dict)
    failed: Dict[str, Row] = field(default_factory=dict)
    missing: Dict[str, List[Row]] = field(default_factory=dict)

    @property
    def missing_shards(self) -> List[str]:
        return sorted({f"shards/{row.shard}" for rows in self.missing.values() for row in rows})

    def kept(self) -> List[Row]:
        """The rows that carry everything a reader uses, in commit order: each id's winning ok
        row, its latest failure when that came after, and the rows naming missing shards that
        are still reported. Every other row is superseded."""
        keep = {id(row) for row in self.ok.values()} | {id(row) for row in self.failed.values()}
        keep |= {id(row) for rows in self.missing.values() for row in rows}
        return [row for row in self.rows if id(row) in keep]


def merge_rows(rows: List[Row], usable: Callable[[str], str]) -> MergedIndex:
    """Merge ``rows`` (already in commit order) as described in :class:`MergedIndex`.
    ``usable(shard)``: "ok", "missing" or "refused" (a link or special file: never read, not
    reported missing)."""
    merged = MergedIndex(rows=rows)
    failed: Dict[str, Row] = {}
    latest_failed: Dict[str, bool] = {}
    for row in rows:
        if row.ok:
            state = usable(row.shard)
            if state != "ok":
                if state == "missing":
                    merged.missing.setdefault(row.id, []).append(row)
                continue
            merged.missing.pop(row.id, None)
            merged.ok.pop(row.id, None)
            merged.ok[row.id] = row
            latest_failed[row.id] = False
        else:
            failed.pop(row.id, None)
            failed[row.id] = row
            latest_failed[row.id] = True
    merged.failed = {vid: row for vid, row in failed.items() if latest_failed[vid]}
    return merged
