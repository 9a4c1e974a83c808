"""Names inside a cache directory, the manifest, and the index rows (see the package docstring)."""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional, Sequence

from . import safejson
from .atomic import create_once, is_temp_name
from .errors import CacheError
from .format import FORMAT_VERSION, check_version, parse_version, utc_now
from .fs import open_regular, read_bounded

MANIFEST = "cache.json"
SHARDS = "shards"
INDEX = "index"
FAILURES = "failures.jsonl"
SHARD_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".jsonl"
MANIFEST_KIND = "aot-token-cache"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is about 100 bytes
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SHARD_RE = re.compile(r"^(.+)-(\d{5,})-[0-9a-f]{8}\.safetensors$")


def check_part(part: str) -> str:
    """Validate a writer's part name (letters, digits, '_' and '-', at most 64 characters)."""
    if not isinstance(part, str) or not _PART_RE.match(part):
        raise ValueError(f"invalid part name {part!r}: use 1-64 letters, digits, '_' or '-', "
                         "starting with a letter or digit")
    return part


def shard_name(part: str, seq: int) -> str:
    """A new shard's file name: ``<part>-<seq, 5+ digits>-<uuid8>.safetensors``."""
    return f"{part}-{seq:05d}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}"


def shard_part(name: str) -> Optional[str]:
    """The part that wrote shard file ``name`` (or the temporary file of one), else None."""
    if is_temp_name(name):
        name = name[1:].rsplit(".", 2)[0]
    match = _SHARD_RE.match(name)
    return match.group(1) if match else None


def shard_seq(name: str) -> int:
    """The sequence number in a shard file name (-1 when ``name`` is not one)."""
    match = _SHARD_RE.match(name)
    return int(match.group(2)) if match else -1


def shard_row_path(shard_name: str) -> str:
    """How an index row refers to a shard: ``shards/<name>``."""
    return f"{SHARDS}/{shard_name}"


def shard_file_name(ref: object) -> Optional[str]:
    """The file name an index row's ``shard`` field names inside ``shards/``, or None when the
    field is not of the form ``shards/<name>.safetensors`` (rows can never point outside the
    cache, nor at hidden or temporary files)."""
    if not isinstance(ref, str) or "\x00" in ref:
        return None
    parts = PurePosixPath(ref).parts
    if len(parts) != 2 or parts[0] != SHARDS or parts[1].startswith(".") \
            or not parts[1].endswith(SHARD_SUFFIX):
        return None
    return parts[1]


def resolve_shard(directory: Path, ref: object) -> Optional[Path]:
    """The shard file an index row's ``shard`` field names (see :func:`shard_file_name`)."""
    name = shard_file_name(ref)
    return None if name is None else directory / SHARDS / name


def meta_field(meta: Dict[str, Any], name: str) -> Any:
    """``meta[name]``, else ``meta["video"][name]`` (where the pipeline keeps the video's info),
    else None. Used for the ``sha256`` and ``config_fingerprint`` columns of index rows."""
    if name in meta:
        return meta[name]
    video = meta.get("video")
    return video.get(name) if isinstance(video, dict) else None


def ok_row(video_id: str, shard: str, key: str, tokens_shape: Optional[Sequence[int]],
           meta: Dict[str, Any], committed_at: str, offset: int = 0) -> Dict[str, Any]:
    """The index row of a cached video (``num_tokens`` is the first dimension of ``tokens``;
    ``offset``: where its segment starts in the shard)."""
    return {"id": video_id, "status": "ok", "shard": shard, "key": key, "offset": int(offset),
            "num_tokens": int(tokens_shape[0]) if tokens_shape else None,
            "sha256": meta_field(meta, "sha256"),
            "config_fingerprint": meta_field(meta, "config_fingerprint"),
            "meta": meta, "committed_at": committed_at}


def failure_row(video_id: str, path: str, status: str, error: str, meta: Dict[str, Any],
                committed_at: str) -> Dict[str, Any]:
    """The index row of a video that could not be processed (``status`` is not "ok")."""
    return {"id": video_id, "status": status, "error": error, "path": path,
            "sha256": meta_field(meta, "sha256"),
            "config_fingerprint": meta_field(meta, "config_fingerprint"),
            "meta": meta, "committed_at": committed_at}


def read_manifest(directory: Path) -> Dict[str, Any]:
    """Read and check ``cache.json`` (a regular file of at most :data:`MAX_MANIFEST_BYTES`, not a
    link); CacheError when missing, damaged, foreign or too new."""
    path = directory / MANIFEST
    try:
        fd = open_regular(directory, [MANIFEST])
    except FileNotFoundError:
        raise CacheError(f"{directory}: not an aot cache directory (no {MANIFEST})") from None
    try:
        raw = read_bounded(fd, path, "the cache manifest", MAX_MANIFEST_BYTES)
    finally:
        os.close(fd)
    manifest = safejson.load_or_fail(raw, path, "unreadable cache manifest: it")
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise CacheError(f"{path}: not an aot cache manifest (kind is not '{MANIFEST_KIND}')")
    version = parse_version(manifest.get("format_version"))
    if version is None:
        raise CacheError(f"{path}: damaged cache manifest (format_version is missing or not a positive "
                         "integer)")
    check_version(path, version)
    return manifest


def ensure_manifest(directory: Path) -> Dict[str, Any]:
    """Create ``cache.json`` once (atomically, never overwriting one that exists, even when another
    process races to create it) and return the manifest in force. Raises OSError on I/O failure."""
    manifest = {"kind": MANIFEST_KIND, "format_version": FORMAT_VERSION, "created_at": utc_now()}
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    if create_once(directory / MANIFEST, data):
        return manifest
    return read_manifest(directory)


def upgrade_manifest(directory: Path, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """Raise an older cache's ``cache.json`` to :data:`FORMAT_VERSION` (atomically replaced;
    ``created_at`` kept, ``upgraded_at`` added), so that readers too old for what a writer is
    about to add refuse the cache in one line instead of misreading it. Returns the manifest in
    force. Raises OSError on I/O failure."""
    version = parse_version(manifest.get("format_version"))
    if version is not None and version >= FORMAT_VERSION:
        return manifest
    from .atomic import commit_pieces

    upgraded = {**manifest, "format_version": FORMAT_VERSION, "upgraded_at": utc_now()}
    commit_pieces(directory / MANIFEST, [(json.dumps(upgraded, indent=2) + "\n").encode("utf-8")])
    return upgraded


def allowed_in_new_cache(name: str) -> bool:
    """Entries a directory may already hold when a writer adopts it as a new cache (what a writer
    racing it may have made)."""
    return name in (MANIFEST, SHARDS, INDEX, FAILURES) or name.startswith("." + MANIFEST)
