"""Writing the cache: :class:`CacheWriter` (a cache directory, many videos per shard) and
:func:`write_single` (one video, one file). Commit protocol in the package docstring."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from . import safejson
from .atomic import (append_durably, append_shared, commit_pieces, fsync_directory, is_temp_name,
                     remove_quietly, write_all)
from .errors import CacheError, describe_os_error
from .format import (HEADER_BUDGET, MAX_META_BYTES, TensorEntry, VideoRecord, aligned, check_standard_tensors,
                     dtype_code, encode, read_header, utc_now, video_key)
from .fs import open_dir, open_regular, pread_exact, read_bounded
from .index import MAX_INDEX_BYTES, MAX_ROW_BYTES, read_part
from .layout import (FAILURES, INDEX, INDEX_SUFFIX, MANIFEST, SHARDS, allowed_in_new_cache,
                     check_part, ensure_manifest, failure_row, ok_row, read_manifest, shard_name,
                     shard_part, shard_row_path, shard_seq, upgrade_manifest)

if TYPE_CHECKING:
    import torch

PathLike = Union[str, Path]
_OWNER_BYTES = 4096


class PartInUseError(CacheError):
    """Another live writer holds the lock of this index part. ``owner``: what that writer wrote
    about itself (``pid``, ``host``, ``started_at``), or None when it could not be read."""

    def __init__(self, message: str, owner: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.owner = owner


def owner_path(directory: Path, part: str) -> Path:
    """Where the writer holding part ``part`` describes itself: ``index/.<part>.owner``."""
    return directory / INDEX / f".{part}.owner"


def read_owner(directory: Path, part: str) -> Optional[Dict[str, Any]]:
    """The description the writer holding ``part`` left (pid, host, started_at), or None."""
    try:
        fd = open_regular(directory, [INDEX, owner_path(directory, part).name])
    except CacheError:
        return None
    try:
        owner = safejson.loads(read_bounded(fd, directory, "owner file", _OWNER_BYTES))
    except (CacheError, ValueError):
        return None
    finally:
        os.close(fd)
    return owner if isinstance(owner, dict) else None


def describe_owner(owner: Optional[Dict[str, Any]]) -> str:
    """``"pid 123 on host-a, started 2026-…Z"`` (or "owner unknown"), after the command when the
    owner names one (``"aot compact, pid 123 …"``)."""
    if not owner:
        return "owner unknown"
    pid, host, since = owner.get("pid"), owner.get("host"), owner.get("started_at")
    command = f"{str(owner['command'])[:40]}, " if isinstance(owner.get("command"), str) else ""
    return f"{command}pid {pid!r} on {str(host)[:64]!r}, started {str(since)[:40]}"


def make_record(where: Path, video_id: str, tensors: Mapping[str, "torch.Tensor"],
                meta: Mapping[str, Any]) -> VideoRecord:
    """Check one video's input and bring its tensors to contiguous CPU tensors (no copy when they
    already are). CacheError (naming ``where`` and the video) for bad input, including anything the
    reader would refuse: a standard tensor (``tokens``, ``frame``, ``segments``…) of the wrong dtype
    or shape, and meta larger than 16 MiB, nested more than 62 levels, or holding integers of more
    than 40 digits."""
    import torch

    if not isinstance(video_id, str) or not video_id:
        raise CacheError(f"{where}: video id must be a non-empty string, got {video_id!r}")
    if not isinstance(tensors, Mapping) or not tensors:
        raise CacheError(f"{where}: video {video_id!r}: tensors must be a non-empty dict")
    ready: Dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise CacheError(f"{where}: video {video_id!r}: tensor name {name!r} is not a non-empty string")
        if not isinstance(t, torch.Tensor):
            raise CacheError(f"{where}: video {video_id!r}: {name!r} is a {type(t).__name__}, "
                             "not a torch.Tensor")
        try:
            dtype_code(t.dtype)
        except ValueError as exc:
            raise CacheError(f"{where}: video {video_id!r}: tensor {name!r}: {exc}") from None
        ready[name] = t.detach().to("cpu").contiguous()
    problem = check_standard_tensors({n: TensorEntry(dtype_code(t.dtype), tuple(t.shape), 0, 0)
                                      for n, t in ready.items()})
    if problem:
        raise CacheError(f"{where}: video {video_id!r}: {problem}")
    if not isinstance(meta, Mapping):
        raise CacheError(f"{where}: video {video_id!r}: meta must be a dict, got {type(meta).__name__}")
    meta_json = _meta_json(where, video_id, dict(meta))
    return VideoRecord(video_id=video_id, tensors=ready, meta_json=meta_json,
                       meta=safejson.loads(meta_json))


def _meta_json(where: Path, video_id: object, meta: Dict[str, Any], levels_above: int = 2,
               limit: int = MAX_META_BYTES) -> str:
    """``meta`` as compact JSON, checked to read back within the reader's limits once it sits
    ``levels_above`` levels deep in a file (2 in a shard header's video table, 1 in an index row)."""
    try:
        text = json.dumps(meta, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise CacheError(f"{where}: video {video_id!r}: meta is nested too deeply to store") from None
    except (TypeError, ValueError) as exc:
        raise CacheError(f"{where}: video {video_id!r}: meta is not JSON-serialisable ({exc})") from None
    if len(text.encode("utf-8")) > limit:
        raise CacheError(f"{where}: video {video_id!r}: meta is {len(text.encode('utf-8'))} bytes as JSON, "
                         f"more than the {limit} a cache holds per video")
    try:
        safejson.loads(text, max_depth=safejson.MAX_DEPTH - levels_above)
    except ValueError as exc:
        raise CacheError(f"{where}: video {video_id!r}: meta cannot be stored: it {exc}") from None
    return text


def _tokens_shape(record: VideoRecord) -> Optional["torch.Size"]:
    tokens = record.tensors.get("tokens")
    return tokens.shape if tokens is not None else None


def write_single(path: PathLike, video_id: str, tensors: Mapping[str, "torch.Tensor"],
                 meta: Mapping[str, Any]) -> Path:
    """Write one video to one safetensors file, atomically (parent directories are created).
    Tensor names and ``__metadata__`` follow the shard format (``v0.tokens``…, ``aot_format``,
    ``aot_videos``), so ``TokenCache(path)`` reads it as a one-video cache. Returns ``path``."""
    path = Path(path)
    record = make_record(path, video_id, tensors, meta)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        commit_pieces(path, encode([record], kind="single"))
    except OSError as exc:
        raise CacheError(f"{path}: cannot write: {describe_os_error(exc)}") from exc
    return path


class CacheWriter:
    """Writes videos into a cache directory, ``shard_size`` bytes per shard.

    Each commit (:meth:`flush`) appends one segment to the writer's current shard, until the shard
    reaches ``shard_size``; the next commit starts a new shard file. A writer that reopens its part
    goes on appending to the part's last shard (cut back first to its committed end: bytes a
    killed writer appended without committing them are dropped). So shards grow to about
    ``shard_size`` however often videos are committed.

    ``part`` names this writer's index file (``index/<part>.jsonl``) and prefixes its shards. A
    writer holds an exclusive lock on its part (``flock`` on the index file, released when the
    writer closes or its process dies, even by SIGKILL) and describes itself in
    ``index/.<part>.owner``; a second writer on a part in use gets :class:`PartInUseError` (a
    CacheError) naming the holder, so two writers never duplicate work on one part. Writers of
    different parts run concurrently. Reusing a part later (resume) appends to it; opening a part
    also sweeps what a killed writer of that part left: temporary files, and shards that no line
    of the part's index names (a kill between a shard's rename and its index append). Shards of
    other parts are never touched. ``flush_interval`` (seconds): also commit once this long has
    passed since the first buffered video (checked on each ``add``/``add_failure``). Not
    thread-safe: call it from one thread. Use as a context manager, or call :meth:`close`.

    Nothing inside the cache directory may be a symbolic link or a special file: the manifest,
    ``shards/``, ``index/`` and the part's index file are checked (CacheError)."""

    def __init__(self, directory: PathLike, shard_size: int = 1 << 30, part: str = "r0",
                 flush_interval: Optional[float] = None) -> None:
        if not isinstance(shard_size, int) or shard_size <= 0:
            raise ValueError(f"shard_size must be a positive number of bytes, got {shard_size!r}")
        if flush_interval is not None and not flush_interval > 0:
            raise ValueError(f"flush_interval must be positive seconds or None, got {flush_interval!r}")
        self.directory = Path(directory)
        self.part = check_part(part)
        self.shard_size = shard_size
        self.flush_interval = flush_interval
        self._shards_dir = self.directory / SHARDS
        self._index_path = self.directory / INDEX / f"{part}{INDEX_SUFFIX}"
        self._pending: Dict[str, VideoRecord] = {}
        self._pending_bytes = 0
        self._pending_header = 0
        self._first_pending_at: Optional[float] = None
        self._last_commit = ""
        self._stats = {"shards": 0, "segments": 0, "videos": 0, "failures": 0, "bytes": 0}
        self._current: Optional[str] = None  # the shard this writer appends to
        self._current_size = 0  # its committed size in bytes
        self.swept: List[str] = []  # orphan shards of this part removed when it was opened
        self._index_fd = -1
        self._made_directory = False  # this writer created the directory itself
        self._made_manifest = False  # this writer created the cache (its manifest)
        self._prepare_directory()
        self._index_fd = self._open_index_part()
        try:
            self._seq = self._clean_leftovers()
        except BaseException:
            self._release()
            raise

    # -- setup ------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        """Create the directory layout and manifest, or check an existing cache's manifest."""
        d = self.directory
        if d.exists() and not d.is_dir():
            raise CacheError(f"{d}: exists and is not a directory")
        try:
            try:
                d.mkdir(parents=True)
                self._made_directory = True
            except FileExistsError:
                pass
            if os.path.lexists(d / MANIFEST):
                upgrade_manifest(d, read_manifest(d))
            else:
                foreign = sorted(n for n in os.listdir(d) if not allowed_in_new_cache(n))
                if foreign:
                    raise CacheError(f"{d}: not an aot cache directory (no {MANIFEST}) and not empty "
                                     f"(holds {foreign[0]!r}); choose a new or empty directory")
                ensure_manifest(d)
                self._made_manifest = True
            for sub in (SHARDS, INDEX):
                try:
                    os.mkdir(d / sub)
                except FileExistsError:
                    pass
                os.close(open_dir(d, [sub]))  # a real directory, not a link
        except OSError as exc:
            raise CacheError(f"{d}: cannot create cache directory: {describe_os_error(exc)}") from exc

    def _open_index_part(self) -> int:
        """Open this part's index file for appending (never through a link) and lock it (released
        when the process ends, also on SIGKILL); record who holds it. Ends a torn last line left by
        a crash. PartInUseError when another live writer holds the part."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self._index_path, flags, 0o644)
        except OSError as exc:
            cause = "a symbolic link (links inside a cache are not followed)" if os.path.islink(self._index_path) \
                else describe_os_error(exc)
            raise CacheError(f"{self._index_path}: cannot open index: {cause}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CacheError(f"{self._index_path}: cannot open index: not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            owner = read_owner(self.directory, self.part)
            raise PartInUseError(f"{self._index_path}: part {self.part!r} is in use by another writer "
                                 f"({describe_owner(owner)}); wait for it to finish, or give each "
                                 "concurrent writer its own part", owner) from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                append_durably(fd, b"\n")
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now()}
            commit_pieces(owner_path(self.directory, self.part), [json.dumps(owner).encode("utf-8")])
        except OSError as exc:
            os.close(fd)
            raise CacheError(f"{self._index_path}: cannot prepare index: {describe_os_error(exc)}") from exc
        return fd

    def _clean_leftovers(self) -> int:
        """Remove what a dead writer of this part left (only it can have, and we hold its lock
        now): temporary shard files, orphan shards (named by no line of the part's index: the
        writer died between renaming the shard and appending its rows) and bytes appended to the
        part's last shard but never committed (cut off; appending goes on there). Returns the next
        shard's sequence number."""
        names: List[str] = []
        for name in os.listdir(self._shards_dir):
            if shard_part(name) != self.part:
                continue
            if is_temp_name(name):
                remove_quietly(self._shards_dir / name)
                continue
            names.append(name)
        rows, text = self._part_rows()
        for name in self._orphans(names, rows, text):
            remove_quietly(self._shards_dir / name)
            self.swept.append(name)
        if self.swept:
            fsync_directory(self._shards_dir)
        self._resume_last_shard(rows, text)
        return max((shard_seq(n) for n in names), default=-1) + 1

    def _part_rows(self) -> Tuple[Optional[list], bytes]:
        """This part's rows and its raw bytes; (None, b"") when the index cannot be read whole."""
        size = os.fstat(self._index_fd).st_size
        if size > MAX_INDEX_BYTES:
            return None, b""
        rows, _, _ = read_part(self._index_fd, self._index_path)
        text = bytes(pread_exact(self._index_fd, size, 0, self._index_path, "index part", allow_short=True))
        return [row for _, row in rows], text

    def _orphans(self, names: List[str], rows: Optional[list], text: bytes) -> List[str]:
        """Which of ``names`` (this part's shard files) no line of this part's index mentions:
        not an ok row, not even a damaged line. Nothing when the index cannot be read whole."""
        if not names or rows is None:
            return []
        named: Set[str] = {row.shard for row in rows if row.ok}
        return [n for n in names if n not in named and n.encode("utf-8") not in text
                and stat.S_ISREG(os.lstat(self._shards_dir / n).st_mode)]

    def _resume_last_shard(self, rows: Optional[list], text: bytes) -> None:
        """Go on appending to this part's last shard (the highest sequence number its ok rows
        name) when it is below the shard size: cut off what follows its last committed segment.
        Left alone (a new shard is started) when anything about it is uncertain: a damaged index
        line naming it, a segment that does not read, a file that is not what the rows say."""
        named = {row.shard for row in rows or () if row.ok}
        if not named:
            return
        last = max(named, key=lambda n: (shard_seq(n), n))
        if shard_part(last) != self.part:
            return
        ends = [row.offset for row in rows if row.ok and row.shard == last]
        mentions = text.count(last.encode("utf-8"))
        if mentions != sum(1 for row in rows if row.ok and row.shard == last):
            return  # a line that is not a row mentions it: keep every byte
        try:
            fd = os.open(self._shards_dir / last, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            end = read_header(fd, self._shards_dir / last, max(ends)).end
            if end >= self.shard_size:
                return
            if os.fstat(fd).st_size > end:
                os.ftruncate(fd, end)
                os.fsync(fd)
        except (CacheError, OSError):
            return
        finally:
            os.close(fd)
        self._current, self._current_size = last, end

    # -- public API ---------------------------------------------------------------------------
    def add(self, video_id: str, tensors: Mapping[str, "torch.Tensor"], meta: Mapping[str, Any]) -> None:
        """Buffer one video (the tensors are kept by reference: do not modify them afterwards).
        A video id added again before the buffer is committed replaces the buffered one; one added
        again later is stored again and the newer row wins on read. Commits a shard once the
        buffered bytes would fill the current shard to ``shard_size`` (or the segment's header
        would grow too large for safetensors) or ``flush_interval`` has passed."""
        self._check_open()
        record = make_record(self.directory, video_id, tensors, meta)
        previous = self._pending.pop(video_id, None)
        if previous is not None:
            self._pending_bytes -= previous.nbytes
            self._pending_header -= previous.header_bytes
        self._pending[video_id] = record
        self._pending_bytes += record.nbytes
        self._pending_header += record.header_bytes
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
        if (self._open_size() + self._pending_bytes >= self.shard_size or self._pending_header >= HEADER_BUDGET
                or self._interval_passed()):
            self.flush()

    def add_failure(self, video_id: str, path: PathLike, status: str, error: Union[str, BaseException],
                    meta: Optional[Mapping[str, Any]] = None) -> None:
        """Record a video that could not be processed: a row in the index (``status`` is not
        ``"ok"``, e.g. ``"decode_error"``) and a line in ``failures.jsonl``. Written at once."""
        self._check_open()
        if not isinstance(status, str) or not status or status == "ok":
            raise ValueError(f"failure status must be a non-empty string other than 'ok', got {status!r}")
        meta = dict(meta or {})
        message = " ".join(str(error).split()) or type(error).__name__
        _meta_json(self.directory, video_id, meta, levels_above=1, limit=MAX_ROW_BYTES // 2)
        row = failure_row(str(video_id), str(path), status, message, meta, self._commit_time())
        line = (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        self._append_index(line)
        try:
            append_shared(self.directory / FAILURES, line)
        except OSError as exc:
            raise CacheError(f"{self.directory / FAILURES}: cannot append: {describe_os_error(exc)}") from exc
        self._stats["failures"] += 1
        if self._interval_passed():
            self.flush()

    def flush(self) -> None:
        """Commit the buffered videos as one segment now: append it to the current shard and fsync
        (or write a new shard under a temporary name, fsync, rename, fsync the directory), then
        append its rows to the index part and fsync. On failure (disk full, no permission) raise
        CacheError; committed data stays valid, nothing half-written stays behind (a new shard is
        removed, an appended segment cut off again), and the videos stay buffered (a later flush
        retries them)."""
        self._check_open()
        if not self._pending:
            return
        records = list(self._pending.values())
        appending = self._open_size() > 0
        if appending:
            name, offset = self._current, aligned(self._current_size)
            end = self._append_segment(name, records)
        else:
            name, offset = shard_name(self.part, self._seq), 0
            end = self._write_shard(self._shards_dir / name, records)
        committed_at = self._commit_time()
        rows = [ok_row(r.video_id, shard_row_path(name), video_key(k), _tokens_shape(r), r.meta,
                       committed_at, offset=offset) for k, r in enumerate(records)]
        try:
            self._append_index("".join(json.dumps(row, ensure_ascii=False) + "\n"
                                       for row in rows).encode("utf-8"))
        except CacheError:
            if appending:
                self._cut_back(name)
            else:
                remove_quietly(self._shards_dir / name)
            raise
        if not appending:
            self._seq += 1
            self._stats["shards"] += 1
        self._stats["bytes"] += end - (self._current_size if appending else 0)
        self._current, self._current_size = name, end
        self._stats["segments"] += 1
        self._stats["videos"] += len(records)
        self._pending.clear()
        self._pending_bytes = 0
        self._pending_header = 0
        self._first_pending_at = None

    def close(self) -> None:
        """Commit what is buffered and release the part. Idempotent."""
        if self._index_fd < 0:
            return
        try:
            self.flush()
        finally:
            self._release()

    def abandon(self) -> bool:
        """Release the part without committing (what is buffered is dropped) and, when this writer
        created the cache and it is still empty (no shard, no index row, no other part: nothing
        any writer committed), remove what it created, so a run that stops before any work leaves
        nothing behind. Returns whether the cache was removed. Idempotent."""
        self._pending.clear()
        self._pending_bytes = self._pending_header = 0
        self._first_pending_at = None
        self._release()
        if not self._made_manifest or any(self._stats[k] for k in ("shards", "videos", "failures")):
            return False
        d = self.directory
        try:
            if sorted(os.listdir(d)) != sorted([MANIFEST, INDEX, SHARDS]) or os.listdir(d / SHARDS) \
                    or os.listdir(d / INDEX) != [self._index_path.name] or os.path.getsize(self._index_path):
                return False
            os.unlink(self._index_path)
            os.rmdir(d / INDEX)  # fails, and keeps the cache, if another writer added a part meanwhile
            os.rmdir(d / SHARDS)
            os.unlink(d / MANIFEST)
            if self._made_directory:
                os.rmdir(d)
        except OSError:
            return False
        self._made_manifest = False
        return True

    @property
    def stats(self) -> Dict[str, int]:
        """``shards`` (files started), ``segments`` (commits of videos), ``videos``, ``failures``
        and ``bytes`` (shard bytes) committed by this writer, plus ``buffered_videos`` and
        ``buffered_bytes`` not yet committed."""
        return {**self._stats, "buffered_videos": len(self._pending),
                "buffered_bytes": self._pending_bytes}

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        """On a clean exit, close (commit + release). When an exception is on its way out, still try
        to commit the finished videos; if that fails too, the original exception carries a note."""
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except CacheError as second:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"while closing the cache writer: {second}")

    def __del__(self) -> None:
        if getattr(self, "_index_fd", -1) >= 0:
            self._release()

    # -- internals ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._index_fd < 0:
            raise CacheError(f"{self.directory}: cache writer for part {self.part!r} is closed")

    def _release(self) -> None:
        fd, self._index_fd = self._index_fd, -1
        if fd < 0:
            return
        remove_quietly(owner_path(self.directory, self.part))  # still ours: we hold the lock
        os.close(fd)

    def _interval_passed(self) -> bool:
        return (self.flush_interval is not None and self._first_pending_at is not None
                and time.monotonic() - self._first_pending_at >= self.flush_interval)

    def _commit_time(self) -> str:
        """Now as ISO-8601 UTC, never earlier than this writer's previous commit (a clock stepping
        back must not reorder rows)."""
        self._last_commit = max(utc_now(), self._last_commit)
        return self._last_commit

    def _open_size(self) -> int:
        """Committed bytes of the shard the next commit appends to (0: it starts a new one)."""
        return self._current_size if self._current is not None and self._current_size < self.shard_size else 0

    def _write_shard(self, final: Path, records: List[VideoRecord]) -> int:
        """Write ``records`` to ``final`` atomically; its size in bytes. CacheError on I/O failure."""
        try:
            commit_pieces(final, encode(records, kind="shard"))
            return final.stat().st_size
        except OSError as exc:
            raise CacheError(f"{self._shards_dir}: cannot write shard {final.name}: "
                             f"{describe_os_error(exc)}") from exc

    def _append_segment(self, name: str, records: List[VideoRecord]) -> int:
        """Append ``records`` as one segment to shard ``name`` (zero bytes first, up to the next
        multiple of 8) and fsync; the shard's new size. On failure the shard is cut back to its
        committed size and CacheError raised."""
        path = self._shards_dir / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise CacheError(f"{self._shards_dir}: cannot append to shard {name}: {describe_os_error(exc)}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_size < self._current_size:
                raise CacheError(f"{path}: changed by another process while this writer held its part")
            os.ftruncate(fd, self._current_size)
            os.lseek(fd, self._current_size, os.SEEK_SET)
            write_all(fd, bytes(aligned(self._current_size) - self._current_size))
            for piece in encode(records, kind="shard"):
                write_all(fd, piece)
            os.fsync(fd)
            return os.lseek(fd, 0, os.SEEK_CUR)
        except OSError as exc:
            try:
                os.ftruncate(fd, self._current_size)
            except OSError:
                pass
            raise CacheError(f"{self._shards_dir}: cannot append to shard {name}: "
                             f"{describe_os_error(exc)}") from exc
        finally:
            os.close(fd)

    def _cut_back(self, name: str) -> None:
        """Drop what was appended to shard ``name`` after its committed size (a commit that failed)."""
        try:
            fd = os.open(self._shards_dir / name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return
        try:
            os.ftruncate(fd, self._current_size)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _append_index(self, data: bytes) -> None:
        try:
            append_durably(self._index_fd, data)
        except OSError as exc:
            raise CacheError(f"{self._index_path}: cannot append index rows: "
                             f"{describe_os_error(exc)}") from exc
