"""What a run can skip, decided before any model or worker starts: which videos are already in
the output with the same content hash and configuration fingerprint. A rerun whose every video
is cached that way and unchanged ends here (the CLI imports neither torch nor PyAV for it).

A rerun never replaces videos cached with other settings by itself: when any video of the run is
cached with another configuration fingerprint, :func:`plan_resume` raises
:class:`ConfigurationChanged` (one line: how many, which settings differ, and the two ways on,
``--overwrite`` or another ``-o``) before anything runs, whatever engine runs the videos. A video
whose file changed (same id, another content hash) with the same settings is not such a case: its
file is what the id names, so it is computed again and its new entry replaces the old one (the old
bytes become reclaimable by ``aot compact``).

Also the run's counts (:class:`Summary`), which the progress output reports."""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..cache.errors import CacheError
from ..cache.layout import MANIFEST, allowed_in_new_cache
from ..cache.reader import TokenCache
from ..video.digest import file_sha256 as hash_file  # noqa: F401  (the pipeline's name for it)
from .inputs import VideoInput

Event = Dict[str, object]


class ConfigurationChanged(CacheError):
    """Videos of this run are in the output already, cached with other settings; nothing ran.
    ``ids``: those videos; ``differences``: the settings that differ, in flag terms."""

    def __init__(self, message: str, ids: Sequence[str], differences: Sequence[str]) -> None:
        super().__init__(message)
        self.ids = list(ids)
        self.differences = list(differences)


@dataclass
class Summary:
    """Counts of one run. ``bytes``: bytes of the shards (or file) written; ``tower_calls``:
    ``adapter.encode`` calls (fewer than ``done`` when short videos share calls);
    ``model_loaded``: whether the run needed the model at all; ``ignored``: files of directory
    inputs that were not videos by extension (a few names, and ``ignored_count`` in all)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    model_loaded: bool = False
    ignored: List[str] = field(default_factory=list)
    ignored_count: int = 0
    tokens: int = 0
    bytes: int = 0
    frames: int = 0
    tower_calls: int = 0
    seconds: float = 0.0
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    failures: List[dict] = field(default_factory=list)

    def stage(self, name: str, seconds: float) -> None:
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + seconds

    def to_dict(self) -> dict:
        rate = self.seconds if self.seconds > 0 else None
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "tokens": self.tokens,
                "bytes": self.bytes, "frames": self.frames, "tower_calls": self.tower_calls,
                "seconds": round(self.seconds, 3),
                "videos_per_s": round(self.done / rate, 3) if rate else None,
                "frames_per_s": round(self.frames / rate, 2) if rate else None,
                "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
                "model_loaded": self.model_loaded, "ignored": self.ignored_count,
                "failures": self.failures}


def existing_cache(output: Path) -> Optional[TokenCache]:
    """The cache already at ``output`` (None when there is none yet, also while another rank is
    creating it: a directory holding only what a new cache starts with, without its manifest).
    CacheError (one line) for anything that cannot be read as a cache, whatever the reader
    raised."""
    if not output.exists():
        return None
    try:
        return TokenCache(output)
    except CacheError as exc:
        if output.is_dir() and not os.path.lexists(output / MANIFEST) \
                and all(allowed_in_new_cache(name) for name in os.listdir(output)):
            return None
        if output.is_file():  # a one-video output that cannot be read: say how to replace it
            raise CacheError(f"{exc}; --overwrite replaces it") from None
        raise
    except Exception as exc:  # a reader bug or a hostile file must not become a traceback
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CacheError(f"{output}: cannot read the existing cache ({type(exc).__name__}: {text})") from None


def cached_row(existing: Optional[TokenCache], video_id: str, fingerprint: str) -> Optional[dict]:
    """The index row of ``video_id`` when its latest attempt succeeded with configuration
    ``fingerprint`` and its shard can be read (None otherwise: failures, and videos in a missing,
    truncated or damaged shard, are computed again)."""
    if existing is None:
        return None
    row = existing.lookup(video_id)
    if row is None or row.get("status") != "ok" or row.get("config_fingerprint") != fingerprint:
        return None
    try:
        existing[video_id]  # its shard opens and holds what the row names: a damaged shard is recomputed
    except CacheError:
        return None
    return row


def cached_size(row: dict) -> Optional[int]:
    """The source file's size in bytes recorded in a cached row (None when absent or invalid)."""
    meta = row.get("meta")
    video = meta.get("video") if isinstance(meta, dict) else None
    size = video.get("size_bytes") if isinstance(video, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def unchanged(item: VideoInput, sha: str, size: Optional[int]) -> bool:
    """Whether the file still has content ``sha`` (hashed here, in this process; a file whose
    size differs from the cached one, or that is not a regular file, is not hashed)."""
    try:
        st = os.stat(item.path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
        return False
    try:
        return hash_file(str(item.path)) == sha
    except OSError:
        return False


@dataclass
class ResumePlan:
    """``known[i]``: the content hash item ``i`` is cached under with this fingerprint (the
    decode workers skip a file that still hashes to it), None when it must be computed;
    ``todo``: indices to compute; ``skipped``: indices already cached and unchanged (hashed
    here); ``check_seconds``: time spent hashing for that check; ``settings``: the run's
    settings (:func:`~.changes.run_settings`) it was planned with, if given."""

    known: List[Optional[str]]
    todo: List[int]
    skipped: List[int]
    check_seconds: float = 0.0
    settings: Optional[Dict] = None  # the run's settings it was made with (to name differences again)
    notes: List[str] = field(default_factory=list)  # one line each, for the user (see other_models)


def report_skipped(plan: ResumePlan, items: Sequence[VideoInput], summary: Summary,
                   emit: Callable[[Event], None]) -> None:
    """Count the videos ``plan`` settled as cached (``items``: the list it was made for) into
    ``summary`` with the time its check took, and emit a "skipped" event for each."""
    if plan.check_seconds:
        summary.stage("resume_check", plan.check_seconds)
    for i in plan.skipped:
        summary.skipped += 1
        emit({"id": items[i].video_id, "path": str(items[i].path), "status": "skipped"})


def plan_resume(items: Sequence[VideoInput], output: Path, fingerprint: str, overwrite: bool = False, *,
                settings: Optional[Dict] = None) -> ResumePlan:
    """What of ``items`` the output at ``output`` already holds with configuration
    ``fingerprint``. When every item is cached that way (a rerun), the files are hashed here and
    the unchanged ones are settled as skipped; otherwise nothing is hashed here (the decode
    workers compare each file's hash with ``known``). ``overwrite``: ignore the output's content
    (every video is computed again and replaces its entry).

    Raises :class:`ConfigurationChanged` when, without ``overwrite``, any item is cached with
    another fingerprint; ``settings``: this run's :func:`~.changes.run_settings`, to name the
    settings that differ (without it the message says only that they do). Raises CacheError (one
    line) when the existing output cannot be read."""
    existing = None if overwrite else existing_cache(output)
    notes: List[str] = []
    try:
        stale = _cached_elsewise(existing, items, fingerprint)
        if stale:
            raise _changed(stale, len(items), output, settings)
        rows = [cached_row(existing, item.video_id, fingerprint) for item in items]
        if existing is not None and settings is not None and any(row is None for row in rows):
            note = other_models(existing, items, settings, fingerprint, output)  # only when videos are added
            if note is not None:
                notes.append(note)
    finally:
        if existing is not None:
            existing.close()
    known = [row.get("sha256") if row is not None and isinstance(row.get("sha256"), str) else None for row in rows]
    if not items or any(sha is None for sha in known):
        return ResumePlan(known=known, todo=list(range(len(items))), skipped=[], settings=settings, notes=notes)
    todo, skipped = [], []
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        if unchanged(item, known[i], cached_size(rows[i])):
            skipped.append(i)
        else:
            known[i] = None
            todo.append(i)
    return ResumePlan(known=known, todo=todo, skipped=skipped, check_seconds=time.perf_counter() - t0,
                      settings=settings)


def other_models(existing: TokenCache, items: Sequence[VideoInput], settings: Dict, fingerprint: str,
                 output: Path) -> Optional[str]:
    """A one-line note when the cache at ``output`` holds videos (other than ``items``) made with
    another model or revision than this run's ``settings`` (:func:`~.changes.run_settings`): the
    run adds its videos beside them, which is allowed, but readers that batch videos of two models
    refuse (different token widths or LLM families). None when every cached video is this model's.

    Rows stay unparsed where they can (a row's JSON with its meta is ~5 KB, ~35 us to parse): the
    ids of ``items`` are skipped, and so is every row whose bytes hold this run's configuration
    ``fingerprint`` (same configuration, same model); only the others are parsed."""
    from .changes import cached_settings

    mine = (settings.get(("model", "model")), settings.get(("model", "revision")))
    asked = {item.video_id for item in items}
    same = f'"{fingerprint}"'.encode()  # the row's config_fingerprint, as a JSON string
    others: Dict[str, int] = {}
    for index_row in existing.merged_index().ok.values():
        if index_row.id in asked or same in index_row.raw:
            continue
        cached = cached_settings(index_row.data().get("meta"))
        if cached is None:
            continue
        theirs = (cached.get(("model", "model")), cached.get(("model", "revision")))
        if theirs != mine:
            name = str(theirs[0]) + (f"@{theirs[1]}" if theirs[1] else "")
            others[name] = others.get(name, 0) + 1
    if not others:
        return None
    count = sum(others.values())
    names = ", ".join(sorted(others)[:3]) + (" ..." if len(others) > 3 else "")
    return (f"note: {output} also holds {count} video(s) made with another model ({names}); this run adds "
            f"{mine[0]}'s beside them, and readers that batch both refuse (use another -o to keep them apart)")


def _cached_elsewise(existing: Optional[TokenCache], items: Sequence[VideoInput], fingerprint: str) -> List[dict]:
    """The rows of ``items`` cached with a configuration fingerprint other than ``fingerprint``."""
    if existing is None:
        return []
    stale = []
    for item in items:
        row = existing.lookup(item.video_id)
        if row is not None and row.get("status") == "ok" and row.get("config_fingerprint") != fingerprint:
            stale.append(row)
    return stale


def _changed(stale: List[dict], total: int, output: Path, settings: Optional[Dict]) -> ConfigurationChanged:
    """The one-line refusal of a run whose settings differ from those ``stale`` were cached with."""
    from .changes import cached_settings, differences, summarize

    if settings is None:
        what = "other settings (their configuration fingerprint differs)"
        found: List[str] = []
    else:
        found = [d for row in stale for d in differences(cached_settings(row.get("meta")), settings)]
        what = f"other settings: {summarize([found])}"
    count = f"{len(stale)} of the {total} videos" if total > 1 else "the video"
    verb = "is" if len(stale) == 1 else "are"
    message = (f"{output}: {count} {verb} cached with {what}; nothing was run. Rerun with --overwrite to replace "
               "them, or write to another -o")
    return ConfigurationChanged(message, [str(row.get("id")) for row in stale], list(dict.fromkeys(found)))
