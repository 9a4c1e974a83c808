"""Compaction: rewrite a cache directory's readable videos into full shards and drop the bytes no
reader uses (``aot compact``), and the storage report of live and reclaimable bytes
(``aot inspect``).

What is reclaimable: videos stored again later (superseded rows), shards no row names (a writer
killed between writing a shard and its index rows), bytes appended to a shard but never committed,
temporary files, and failure rows of videos cached or failed again since.

How a compaction runs (every step durable before the next; a SIGKILL anywhere leaves a cache that
reads every video bit-identically, and running ``compact`` again finishes or redoes the job):

1. Lock: ``index/.compact.lock`` (one compaction at a time), then every index part, as writers
   lock them (``flock``). A part held by a live writer stops the compaction at once
   (:class:`~.writer.PartInUseError` naming it); while compaction holds the parts, a writer is
   refused the same way, naming ``aot compact``. Parts that appear later (a new rank) are left
   alone.
2. Sweep what a killed compaction or writer left (temporary files; shards of parts that no longer
   have an index file and that no row names).
3. Plan from the index read again under the locks (:func:`plan_compaction`): per id the row every
   reader reads, its latest failure when that came later, and the rows naming missing shards that
   readers report; every other row is superseded. A part with index lines that are not rows, or
   with a video that cannot be read, is left as it is.
4. Write the new part's shards (``compact-<uuid8>-<seq>-<uuid8>.safetensors``, one segment each,
   temporary name, fsync, rename): the live videos in commit order, byte for byte, about
   ``shard_size`` each. A shard that is already full and holds only live bytes is hard-linked
   under the new name instead of copied.
5. Write the new index part (temporary file, fsync, rename): the kept rows with the same
   ``committed_at`` (so the merge order is unchanged) and the new ``shard``/``key``/``offset``.
   From here readers see every video twice, in identical copies.
6. Remove the old index parts, then the old parts' shards.

A reader that opened the cache before step 6 keeps reading: files it has open stay readable, and
a video whose shard is gone is looked up again in the index (:class:`~.reader.TokenCache` reads
it once more); at worst it gets a one-line CacheError, never other tokens (shard names are never
reused and their bytes never change).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from .atomic import commit_pieces, fsync_directory, is_temp_name, remove_quietly
from .errors import CacheError, describe_os_error
from .format import FileHeader, TensorSource, aligned, encode_segment, tensor_name, utc_now, video_key
from .fs import open_regular, pread_exact
from .index import Row
from .layout import INDEX, INDEX_SUFFIX, SHARDS, read_manifest, shard_name, shard_part, shard_row_path
from .reader import TokenCache
from .writer import PartInUseError, describe_owner, owner_path, read_owner

COMPACT_PART_PREFIX = "compact-"
LOCK_NAME = ".compact.lock"
#: A shard at least this share of ``shard_size``, holding only live bytes, is linked, not copied.
KEEP_SHARE = 0.5
_OPEN_SOURCES = 64
DEFAULT_SHARD_SIZE = 1 << 30


@dataclass
class Storage:
    """Where a cache directory's shard bytes go. ``shard_files``/``shard_bytes``: regular files in
    ``shards/`` (temporary files included); ``live_bytes``: the bytes of the videos readers read
    (a segment whose videos are all read counts whole, else each read video's tensors and its
    share of the header); ``reclaimable_bytes``: the rest, which :func:`compact` frees;
    ``live_videos``; ``superseded_rows``: ok and failure rows no reader uses; ``unnamed_files``:
    files in ``shards/`` that no row names (orphans and temporary files)."""

    shard_files: int = 0
    shard_bytes: int = 0
    live_bytes: int = 0
    reclaimable_bytes: int = 0
    live_videos: int = 0
    superseded_rows: int = 0
    unnamed_files: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        """``"12 shard file(s), 1.2 GB: 1.0 GB live (300 videos), 200.0 MB reclaimable, 5
        superseded row(s)"``."""
        return (f"{self.shard_files} shard file(s), {human_bytes(self.shard_bytes)}: "
                f"{human_bytes(self.live_bytes)} live "
                f"({self.live_videos} videos), {human_bytes(self.reclaimable_bytes)} reclaimable, "
                f"{self.superseded_rows} superseded row(s)")


def human_bytes(n: int) -> str:
    """``n`` bytes in kB, MB or GB (decimal), one decimal."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass
class _Live:
    """A video to copy: its row and the segment header it is read from."""

    row: Row
    header: FileHeader

    @property
    def names(self) -> List[str]:
        return self.header.names_of(self.row.key)

    @property
    def nbytes(self) -> int:
        return sum(self.header.tensors[tensor_name(self.row.key, n)].end
                   - self.header.tensors[tensor_name(self.row.key, n)].start for n in self.names)


@dataclass
class CompactionPlan:
    """What :func:`compact` would do, read-only. ``storage``: the report before; ``parts``: the
    index parts to rewrite; ``left``: parts left as they are, with the reason; ``rows``: the rows
    of ``parts`` to keep, in commit order; ``live``: ``id(row)`` → the video to copy for each kept
    ok row whose video reads; ``files``: the shard files of ``parts`` (all removed at the end);
    ``linked``: files of ``files`` taken over whole (full, and only live bytes); ``reclaimable``:
    bytes of ``files`` that are not live; ``superseded``: rows of ``parts`` dropped;
    ``shard_size``: the size new shards are filled to."""

    directory: Path
    storage: Storage
    shard_size: int
    parts: List[str] = field(default_factory=list)
    left: Dict[str, str] = field(default_factory=dict)
    rows: List[Row] = field(default_factory=list)
    live: Dict[int, _Live] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)
    linked: List[str] = field(default_factory=list)
    reclaimable: int = 0
    superseded: int = 0

    @property
    def live_bytes(self) -> int:
        return sum(v.nbytes for v in self.live.values())

    def worth_it(self) -> bool:
        """Whether compacting frees anything: bytes or rows no reader uses in the parts it
        rewrites, or more shard files than their live bytes need."""
        if not self.parts:
            return False
        needed = -(-self.live_bytes // self.shard_size)
        return self.reclaimable > 0 or self.superseded > 0 or len(self.files) > needed


# -- storage and planning ------------------------------------------------------------------------

def _shard_files(directory: Path) -> Dict[str, int]:
    """Regular files in ``shards/`` and their sizes."""
    sizes: Dict[str, int] = {}
    try:
        names = os.listdir(directory / SHARDS)
    except FileNotFoundError:
        return sizes
    for name in names:
        try:
            st = os.lstat(directory / SHARDS / name)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[name] = st.st_size
    return sizes


def _segment_share(header: FileHeader, keys: Set[str]) -> int:
    """Live bytes of a segment whose videos ``keys`` are read: all of it when every video is."""
    total = set(header.videos) | set(header.bad)
    if keys >= total:
        return header.end - header.offset
    data = sum(e.end - e.start for k in keys for e in (header.tensors[tensor_name(k, n)] for n in header.names_of(k)))
    return data + (header.data_start - header.offset) * len(keys) // max(1, len(total))


def plan_compaction(cache: TokenCache, shard_size: int = DEFAULT_SHARD_SIZE,
                    parts: Optional[Set[str]] = None) -> CompactionPlan:
    """The plan of a compaction of the cache directory ``cache`` (opened on it) into shards of
    about ``shard_size`` bytes, and its storage report. ``parts``: the index parts it may rewrite
    (default: all that exist; :func:`compact` passes those it holds). Reads segment headers, never
    tensor data. CacheError for a cache that is not a directory."""
    if not cache.is_directory:
        raise CacheError(f"{cache.path}: a single-video file has nothing to compact; give a cache directory")
    directory = cache.path
    merged = cache.merged_index()
    files = _shard_files(directory)
    storage = Storage(shard_files=len(files), shard_bytes=sum(files.values()))
    kept = merged.kept()
    storage.superseded_rows = len(merged.rows) - len(kept)
    plan = CompactionPlan(directory=directory, storage=storage, shard_size=shard_size)
    by_segment: "OrderedDict[Tuple[str, int], List[Row]]" = OrderedDict()  # what readers read
    for row in merged.ok.values():
        by_segment.setdefault(row.segment, []).append(row)
    bad: Dict[str, str] = {}  # part -> why it is left as it is
    live_bytes: Dict[str, int] = {}
    readable: Dict[int, _Live] = {}
    whole: Dict[str, List[Tuple[int, int]]] = {}  # file -> (offset, end) of its segments read whole
    for (name, offset), rows in by_segment.items():
        try:
            header = cache.segment(name, offset).header
        except CacheError as exc:
            for row in rows:
                bad.setdefault(row.part, f"video {row.id!r} cannot be read ({' '.join(str(exc).split())[:160]})")
            continue
        keys = set()
        for row in rows:
            if row.key in header.videos and header.videos[row.key]["id"] == row.id:
                readable[id(row)] = _Live(row, header)
                keys.add(row.key)
            else:
                bad.setdefault(row.part, f"video {row.id!r} cannot be read")
        live_bytes[name] = live_bytes.get(name, 0) + _segment_share(header, keys)
        if keys >= set(header.videos) | set(header.bad):
            whole.setdefault(name, []).append((offset, header.end))
    full = {name for name, spans in whole.items() if _covers(sorted(spans), files.get(name, -1))}
    for name in full:  # every byte of the file is live (the padding between segments too)
        live_bytes[name] = files[name]
    storage.live_videos = len(readable)
    storage.live_bytes = sum(live_bytes.values())
    storage.reclaimable_bytes = storage.shard_bytes - storage.live_bytes
    named = {row.shard for row in merged.rows if row.ok}
    storage.unnamed_files = sum(1 for n in files if n not in named)
    # which parts to rewrite: not those with lines that are not rows, or a video that does not read
    present = set(part_names(directory))
    allowed = present if parts is None else present & set(parts)
    for part, lines in cache.skipped_by_part.items():
        bad.setdefault(part, f"{len(lines)} index line(s) that are not rows")
    plan.left = {p: why for p, why in sorted(bad.items()) if p in allowed}
    plan.parts = sorted(allowed - set(plan.left))
    rewrite = set(plan.parts)
    plan.rows = [r for r in kept if r.part in rewrite]
    plan.superseded = sum(1 for r in merged.rows if r.part in rewrite) - len(plan.rows)
    plan.live = {id(r): readable[id(r)] for r in plan.rows if id(r) in readable}
    plan.files = sorted(n for n in files if shard_part(n) in rewrite)
    plan.reclaimable = sum(files[n] - live_bytes.get(n, 0) for n in plan.files)
    for name in plan.files:  # full files holding only live bytes are linked, not copied
        rows = [r for r in plan.rows if r.ok and r.shard == name]
        if name in full and files[name] >= KEEP_SHARE * shard_size and all(id(r) in plan.live for r in rows):
            plan.linked.append(name)
    return plan


def _covers(spans: List[Tuple[int, int]], size: int) -> bool:
    """Whether segments ``(offset, end)`` (sorted) follow each other from byte 0 to ``size``."""
    at = 0
    for offset, end in spans:
        if offset != aligned(at):
            return False
        at = end
    return bool(spans) and at == size


def cache_storage(cache: TokenCache) -> Storage:
    """The storage report of the cache directory ``cache`` (see :class:`Storage`)."""
    return plan_compaction(cache).storage


def part_names(directory: Path) -> List[str]:
    try:
        names = os.listdir(directory / INDEX)
    except FileNotFoundError:
        return []
    return sorted(n[: -len(INDEX_SUFFIX)] for n in names
                  if n.endswith(INDEX_SUFFIX) and not n.startswith(".")
                  and stat.S_ISREG(os.lstat(directory / INDEX / n).st_mode))




# -- compaction -----------------------------------------------------------------------------------

@dataclass
class CompactionReport:
    """What :func:`compact` did: ``before``/``after`` storage reports, ``videos`` copied or linked,
    ``shards_written``, ``shards_linked``, ``files_removed``, ``rows_dropped``, ``parts``
    rewritten, ``left`` (part → why it was left as it is) and ``done`` (False: nothing to gain,
    nothing changed)."""

    before: Storage
    after: Storage
    videos: int = 0
    shards_written: int = 0
    shards_linked: int = 0
    files_removed: int = 0
    rows_dropped: int = 0
    parts: List[str] = field(default_factory=list)
    left: Dict[str, str] = field(default_factory=dict)
    done: bool = True

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["before"], data["after"] = self.before.to_dict(), self.after.to_dict()
        return data


Step = Callable[[str], None]


def compact(directory, shard_size: int = DEFAULT_SHARD_SIZE, *, dry_run: bool = False,
            on_step: Optional[Step] = None) -> CompactionReport:
    """Compact the cache directory ``directory`` into shards of about ``shard_size`` bytes (see
    the module docstring for the steps and what each guarantees). ``dry_run``: plan, report, change
    nothing (no lock is taken). ``on_step(name)`` is called after each durable step ("locked",
    "swept", "shard <n>", "index", "part <name>", "removed <file>"), for tests that stop the process
    there. Raises :class:`~.writer.PartInUseError` (a CacheError) when a writer holds a part or
    another compaction runs, CacheError (one line) for a directory that is not a cache or cannot
    be written; nothing is changed then."""
    directory = Path(directory)
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of bytes, got {shard_size!r}")
    step = on_step or (lambda name: None)
    if not directory.is_dir():
        raise CacheError(f"{directory}: not a cache directory (aot compact rewrites cache directories; "
                         "a .safetensors file holds one video)")
    read_manifest(directory)
    if dry_run:
        plan = plan_compaction(TokenCache(directory), shard_size)
        return _dry_report(plan)
    locks = _Locks(directory)
    try:
        locks.take()
        step("locked")
        _sweep(directory, set(locks.parts))
        step("swept")
        cache = TokenCache(directory)
        plan = plan_compaction(cache, shard_size, set(locks.parts))
        if not plan.worth_it():  # nothing done: every count stays 0
            return CompactionReport(before=plan.storage, after=plan.storage, left=dict(plan.left), done=False)
        try:
            report = _rewrite(plan, step)
        finally:
            cache.close()
        report.after = cache_storage(TokenCache(directory))
        return report
    except OSError as exc:
        raise CacheError(f"{directory}: cannot compact: {describe_os_error(exc)}") from exc
    finally:
        locks.release()


def _dry_report(plan: CompactionPlan) -> CompactionReport:
    return CompactionReport(before=plan.storage, after=plan.storage, videos=len(plan.live),
                            parts=list(plan.parts), left=dict(plan.left), rows_dropped=plan.superseded,
                            shards_linked=len(plan.linked), files_removed=len(plan.files))


class _Locks:
    """The compaction lock and every index part's lock, held for the whole compaction; owner files
    name ``aot compact``, so writers refused meanwhile say who holds their part."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.parts: Dict[str, int] = {}
        self.fd = -1

    def take(self) -> None:
        index = self.directory / INDEX
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            self.fd = os.open(index / LOCK_NAME, flags, 0o644)
        except OSError as exc:
            raise CacheError(f"{index / LOCK_NAME}: cannot open the compaction lock: "
                             f"{describe_os_error(exc)}") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now(), "command": "aot compact"}
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_json(self.fd)
            raise PartInUseError(f"{self.directory}: another aot compact is running on this cache "
                                 f"({describe_owner(owner)}); wait for it to finish", owner) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(me).encode("utf-8"), 0)
        for part in part_names(self.directory):
            try:
                fd = os.open(index / f"{part}{INDEX_SUFFIX}", os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # gone meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                owner = read_owner(self.directory, part)
                raise PartInUseError(f"{index / (part + INDEX_SUFFIX)}: part {part!r} is in use by a writer "
                                     f"({describe_owner(owner)}); aot compact needs every part of the cache: "
                                     "run it once the writers have finished", owner) from None
            self.parts[part] = fd
            commit_pieces(owner_path(self.directory, part), [json.dumps(me).encode("utf-8")])

    def release(self) -> None:
        for part, fd in self.parts.items():
            remove_quietly(owner_path(self.directory, part))
            os.close(fd)
        self.parts = {}
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


def _read_json(fd: int) -> Optional[dict]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sweep(directory: Path, locked: Set[str]) -> None:
    """Remove what a killed compaction (or a writer of a part it removed) left: temporary files of
    parts held here, of compaction parts and of parts without an index file; shards of parts
    without an index file (a compaction's new shards written before its index, or an old part's
    shards after its index was removed). A shard that some index line mentions is kept."""
    present = set(part_names(directory))
    shards = directory / SHARDS
    try:
        names = os.listdir(shards)
    except FileNotFoundError:
        names = []
    doomed = []
    for name in names:
        part = shard_part(name)
        if part is None:
            continue
        if part not in present and (directory / INDEX / f"{part}{INDEX_SUFFIX}").exists():
            continue  # a part that appeared since the listing: its writer's
        if is_temp_name(name) and (part in locked or part not in present):
            doomed.append(name)
        elif not is_temp_name(name) and part not in present:
            doomed.append(name)
    if doomed:
        mentioned = _mentioned(directory, doomed)
        for name in doomed:
            if name not in mentioned:
                remove_quietly(shards / name)
        fsync_directory(shards)
    for name in os.listdir(directory / INDEX):
        if is_temp_name(name) and name.startswith("." + COMPACT_PART_PREFIX):
            remove_quietly(directory / INDEX / name)


def _mentioned(directory: Path, names: List[str]) -> Set[str]:
    """Which of ``names`` some index part's bytes mention (rows, or lines that are not rows)."""
    found: Set[str] = set()
    wanted = [(n, n.encode("utf-8")) for n in names]
    for part in part_names(directory):
        try:
            fd = open_regular(directory, [INDEX, f"{part}{INDEX_SUFFIX}"])
        except CacheError:
            continue
        try:
            text = bytes(pread_exact(fd, os.fstat(fd).st_size, 0, directory / INDEX, "index part", allow_short=True))
        finally:
            os.close(fd)
        found.update(n for n, raw in wanted if raw in text)
    return found


class _Sources:
    """Source shard files opened for reading while a compaction copies from them (a few at a time)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.open: "OrderedDict[str, int]" = OrderedDict()

    def read(self, name: str, start: int, length: int) -> bytearray:
        fd = self.open.pop(name, None)
        if fd is None:
            fd = open_regular(self.directory, [SHARDS, name])
        self.open[name] = fd
        while len(self.open) > _OPEN_SOURCES:
            os.close(self.open.popitem(last=False)[1])
        return pread_exact(fd, length, start, self.directory / SHARDS / name, "tensor data")

    def close(self) -> None:
        while self.open:
            os.close(self.open.popitem()[1])


def _rewrite(plan: CompactionPlan, step: Step) -> CompactionReport:
    """Steps 4-6 of the module docstring."""
    directory = plan.directory
    shards_dir, index_dir = directory / SHARDS, directory / INDEX
    part = _new_part(directory)
    report = CompactionReport(before=plan.storage, after=plan.storage, parts=list(plan.parts), left=dict(plan.left),
                              rows_dropped=plan.superseded)
    new_rows: Dict[int, dict] = {}  # id(row) -> the row as rewritten
    seq = 0
    linked = set(plan.linked)
    for name in plan.linked:  # 4a. full, all-live files: a second name, same bytes
        target = shard_name(part, seq)
        try:
            os.link(shards_dir / name, shards_dir / target)
        except OSError:
            linked.discard(name)  # no hard links here: copied below
            continue
        fsync_directory(shards_dir)
        seq += 1
        report.shards_linked += 1
        for row in plan.rows:
            if row.ok and row.shard == name and id(row) in plan.live:
                new_rows[id(row)] = {**row.data(), "shard": shard_row_path(target)}
        step(f"shard {seq}")
    sources = _Sources(directory)
    try:  # 4b. everything else, copied into new shards of about shard_size
        group: List[_Live] = []
        size = 0
        pending = [plan.live[id(r)] for r in plan.rows if id(r) in plan.live and r.shard not in linked]
        for k, live in enumerate(pending):
            group.append(live)
            size += live.nbytes + len(json.dumps(live.header.videos[live.row.key]["meta"]))
            if size >= plan.shard_size or k == len(pending) - 1:
                target = shard_name(part, seq)
                commit_pieces(shards_dir / target, _segment(group, sources))
                for j, member in enumerate(group):
                    new_rows[id(member.row)] = {**member.row.data(), "shard": shard_row_path(target),
                                                "key": video_key(j), "offset": 0}
                seq += 1
                report.shards_written += 1
                report.videos += len(group)
                group, size = [], 0
                step(f"shard {seq}")
    finally:
        sources.close()
    report.videos += sum(1 for r in plan.rows if r.ok and r.shard in linked and id(r) in plan.live)
    # 5. the new index part, whole, under its final name
    lines = [json.dumps(new_rows[id(r)], ensure_ascii=False).encode("utf-8") if id(r) in new_rows else r.raw
             for r in plan.rows]
    if lines:
        commit_pieces(index_dir / f"{part}{INDEX_SUFFIX}", [b"".join(line + b"\n" for line in lines)])
        step("index")
    # 6. the old parts, then their shards
    for old in plan.parts:
        remove_quietly(index_dir / f"{old}{INDEX_SUFFIX}")
        fsync_directory(index_dir)
        step(f"part {old}")
    for name in plan.files:
        remove_quietly(shards_dir / name)
        report.files_removed += 1
        step(f"removed {name}")
    fsync_directory(shards_dir)
    return report


def _segment(group: List[_Live], sources: _Sources):
    """The pieces of one new shard holding ``group``'s videos as ``v0, v1, …``, their tensors
    read from the source shards as they are written."""
    listing: Dict[str, dict] = {}
    tensors: List[TensorSource] = []
    for j, live in enumerate(group):
        key, header = video_key(j), live.header
        listing[key] = header.videos[live.row.key]
        for name in live.names:
            entry = header.tensors[tensor_name(live.row.key, name)]
            start, length = header.data_start + entry.start, entry.end - entry.start
            tensors.append(TensorSource(tensor_name(key, name), entry.dtype, entry.shape, length,
                                        lambda s=live.row.shard, a=start, n=length: sources.read(s, a, n)))
    return encode_segment(listing, tensors, "shard")


def _new_part(directory: Path) -> str:
    while True:
        part = f"{COMPACT_PART_PREFIX}{uuid.uuid4().hex[:8]}"
        if not (directory / INDEX / f"{part}{INDEX_SUFFIX}").exists():
            return part
