"""Finding the cached entry of a video that an evaluation names by its file path.

Benchmarks (lmms-eval tasks, JSON question files) name a video by a path on the evaluation
machine, which rarely equals the id it got when the cache was made (``aot compress`` ids are the
path as given, the path inside a directory input, or the content sha256 with ``--id hash``). The
rule, first match wins (docs/consumers.md "Which cached video a path means"):

1. ``id``: the reference itself (also normalised: ``./a/b.mp4`` -> ``a/b.mp4``) is a cached id;
2. ``path``: the reference, resolved to an absolute path, is the resolved ``meta["video"]["path"]``
   or ``meta["video"]["given_path"]`` of exactly one cached video (relative paths recorded by
   older caches are resolved against the current directory);
3. ``name``: a trailing part of the reference (``videos/abc.mp4``, then ``abc.mp4``) names
   exactly one cached id (:meth:`TokenCache.find`), and when the file exists its size equals the
   recorded ``meta["video"]["size_bytes"]`` (a same-named file of another dataset is no match);
4. ``sha256``: the file's content hash equals the recorded ``sha256`` of a cached video.

Only index rows are read (they carry each video's meta); no shard is opened and nothing is
decoded. The file is hashed only when rules 1-3 fail.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from aot_cli.cache import TokenCache

RULES = ("id", "path", "name", "sha256")


@dataclass(frozen=True)
class Match:
    """A reference resolved to the cached id ``video_id`` by ``rule`` (one of :data:`RULES`)."""

    video_id: str
    rule: str


def normalise_reference(reference: str) -> str:
    """``reference`` with ``.``/``..`` segments folded and ``./`` dropped, ``/``-separated."""
    text = os.path.normpath(reference).replace(os.sep, "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def content_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, lowercase hex (the ``sha256`` the pipeline records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolved(path: Any) -> Optional[str]:
    if not isinstance(path, str) or not path:
        return None
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return None


def _size(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


class VideoLookup:
    """The lookup rule over one opened cache. Build it again (or call :meth:`refresh`) after
    videos are added to the cache."""

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache
        self.refresh()

    def refresh(self) -> None:
        """(Re)build the path and hash tables from the cache's index rows."""
        by_path: Dict[str, List[str]] = {}
        by_sha: Dict[str, List[str]] = {}
        self._sizes: Dict[str, Optional[int]] = {}
        for row in self.cache.entries():
            vid = row["id"]
            meta = row.get("meta") if isinstance(row.get("meta"), Mapping) else {}
            video = meta.get("video") if isinstance(meta.get("video"), Mapping) else {}
            for key in ("path", "given_path"):
                resolved = _resolved(video.get(key))
                if resolved is not None and vid not in by_path.setdefault(resolved, []):
                    by_path[resolved].append(vid)
            sha = row.get("sha256")
            if isinstance(sha, str):
                by_sha.setdefault(sha, []).append(vid)
            size = video.get("size_bytes")
            self._sizes[vid] = size if isinstance(size, int) else None
        self._by_path = by_path
        self._by_sha = by_sha

    def find(self, reference: str) -> Optional[Match]:
        """The cached video that ``reference`` (a path as a benchmark gives it) names, or None."""
        for candidate in dict.fromkeys((reference, normalise_reference(reference))):
            if candidate in self.cache:
                return Match(candidate, "id")
        path = Path(reference).expanduser()
        resolved = _resolved(reference)
        if resolved is not None and len(self._by_path.get(resolved, [])) == 1:
            return Match(self._by_path[resolved][0], "path")
        size = _size(path)
        parts = [p for p in normalise_reference(reference).split("/") if p and p != ".."]
        for start in range(len(parts)):
            vid = self.cache.find("/".join(parts[start:]))
            if vid is not None:
                recorded = self._sizes.get(vid)
                if size is None or recorded is None or recorded == size:
                    return Match(vid, "name")
        if size is not None:
            try:
                matches = self._by_sha.get(content_sha256(path), [])
            except OSError:
                matches = []
            if matches:
                return Match(matches[-1], "sha256")
        return None
