"""The token cache: compressed visual tokens of many videos in safetensors files.

Depends only on json and numpy, and on torch only where torch tensors are written or asked for
(never on models, decoders or the method): reading headers, the index and the small per-frame
tensors as numpy arrays needs no torch, so anything that reads a cache needs nothing else.

Layout of a cache directory::

    <cache>/
      cache.json                     manifest {"kind": "aot-token-cache", "format_version": 2,
                                     "created_at"}; created atomically once; a writer raises an
                                     older cache's version (atomic replace, ``upgraded_at``)
      shards/<part>-<seq>-<uuid8>.safetensors
                                     many videos per file, in segments appended one per commit
                                     (:mod:`.format`); the video stored under key ``v{k}`` of a
                                     segment (k numbers the videos in that segment) has tensors
                                     ``v{k}.tokens``, ``v{k}.frame``, …; each segment's
                                     ``__metadata__`` holds ``aot_format``, ``aot_kind``
                                     ("shard"), ``aot_created_at`` and ``aot_videos``:
                                     JSON {"v0": {"id": ..., "meta": {...}}, ...}
      index/<part>.jsonl             one JSON line per committed video:
                                     {"id", "status": "ok", "shard": "shards/<file>", "key": "v3",
                                     "offset" (where its segment starts), "num_tokens", "sha256",
                                     "config_fingerprint", "meta", "committed_at"}; and one per
                                     failure:
                                     {"id", "status" (not "ok"), "error", "path", "sha256",
                                     "config_fingerprint", "meta", "committed_at"}
      failures.jsonl                 the failure rows again, as one log shared by all writers
                                     (for people and grep; readers use the index)

Each writer owns one ``part`` (e.g. one per rank): it locks ``index/<part>.jsonl`` (``flock``),
describes itself in ``index/.<part>.owner`` and appends only there, so concurrent writers never
touch each other's files; a second writer on a part in use is refused (:class:`PartInUseError`,
naming the holder). Readers merge all parts.

Commit protocol (per commit, so per video): the buffered videos become one segment. The writer
appends it to its current shard (at the next multiple of 8 bytes after the committed end) and
fsyncs the file, or, when there is none or it has reached the shard size, writes a new shard under
a temporary name (``.<shard>.<uuid8>.aot-tmp``) in ``shards/``, fsyncs it, renames it to its final
name and fsyncs the directory; only then are the segment's rows appended to the index part in one
write, and fsynced. Bytes are never changed once a row names them. A video is in the cache iff an
ok row names it and that row's shard file exists. Readers never list ``shards/`` and read only
the byte ranges rows name, so temporary files, shards whose rows were never written (a crash
between rename and append) and bytes appended but never committed are invisible; the next writer
of the same part removes all three (it cuts its last shard back to the committed end and goes on
appending to it). A torn last index line is skipped (a writer reopening the part first ends it
with a newline). When an id has several ok rows (stored again), the latest by ``committed_at``
wins (ties: part name, then line order). ``aot compact`` (:mod:`.compact`) rewrites what is read
into full shards and drops the rest.

A single-video output (:func:`write_single`) is one safetensors file in the same format
(``aot_kind`` "single", key ``v0``); :class:`TokenCache` reads it as a one-video cache, and also
reads a lone shard file.

Reading checks everything it trusts (:mod:`.reader`, README "Cache format"): bounded sizes and
nesting of all JSON, field types, tensor entries, standard tensor dtypes and shapes; regular files
only and no symbolic link followed inside the cache (:mod:`.fs`); tensors read with ``pread``,
never memory-mapped. Errors are :class:`CacheError` with a one-line message that starts with the
path; loading never runs code (safetensors only, no pickle).
"""
from .atomic import atomic_write_bytes
from .errors import CacheError, UnknownTensorError, UnknownVideoError
from .format import FORMAT_VERSION, SINGLE_FORMAT_VERSION
from .reader import CachedVideo, TokenCache
from .writer import CacheWriter, PartInUseError, write_single

__all__ = [
    "CacheWriter", "write_single", "TokenCache", "CachedVideo", "CacheError", "UnknownVideoError",
    "UnknownTensorError", "PartInUseError", "FORMAT_VERSION", "SINGLE_FORMAT_VERSION", "atomic_write_bytes",
]
