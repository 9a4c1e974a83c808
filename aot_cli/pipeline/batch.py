"""Many videos into one cache: resume, per-video failures, decode prefetch, per-rank parts."""
from __future__ import annotations

import json
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..cache import CacheError, CacheWriter, TokenCache, write_single
from ..video import VideoDecodeError, decode_video, file_sha256
from .inputs import VideoInput
from .ranks import RankInfo
from .run import RunConfig, compress_frames, config_fingerprint, resolve_method


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    tokens: int = 0
    bytes: int = 0
    frames: int = 0
    seconds: float = 0.0
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    failures: List[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "tokens": self.tokens,
                "bytes": self.bytes, "frames": self.frames, "seconds": round(self.seconds, 3),
                "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
                "failures": self.failures}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _existing(output: Path) -> Optional[TokenCache]:
    if not output.exists():
        return None
    try:
        return TokenCache(output)
    except CacheError:
        if output.is_dir() and not any(output.iterdir()):
            return None
        raise


def run_batch(items: List[VideoInput], output: Path, cfg: RunConfig, *, adapter=None,
              rank: RankInfo = RankInfo(0, 1, "single"), overwrite: bool = False, single_file: bool = False,
              prefetch: int = 2, on_event: Optional[Callable[[dict], None]] = None) -> Summary:
    """Compress ``items`` into ``output`` (a cache directory, or one ``.safetensors`` file when
    ``single_file``). Videos already cached with the same content hash and configuration
    fingerprint are skipped unless ``overwrite``. ``on_event`` receives one dict per finished
    video (status ok / skipped / failed)."""
    from ..models import load_model

    t_start = time.perf_counter()
    summary = Summary()
    emit = on_event or (lambda e: None)
    adapter = adapter or load_model(cfg.model)
    method = resolve_method(cfg, adapter.profile)
    fingerprint = config_fingerprint(cfg, method, adapter.describe())
    existing = _existing(output)

    def stage(name: str, dt: float) -> None:
        summary.stage_seconds[name] = summary.stage_seconds.get(name, 0.0) + dt

    def fail(item: VideoInput, status: str, exc: BaseException, sha: Optional[str]) -> None:
        msg = _one_line(exc)
        if not msg.startswith(str(item.path)):
            msg = f"{item.path}: {msg}"
        summary.failed += 1
        summary.failures.append({"id": item.video_id, "path": str(item.path), "status": status, "error": msg})
        if writer is not None:
            writer.add_failure(item.video_id, item.path, status, msg,
                               meta={"sha256": sha, "config_fingerprint": fingerprint, "extra": item.extra})
        emit({"id": item.video_id, "path": str(item.path), "status": status, "error": msg})

    # Which items need work (resume).
    todo: List[tuple] = []
    for item in items:
        try:
            sha = file_sha256(item.path)
        except OSError as e:
            todo.append((item, None, e))
            continue
        row = existing.lookup(item.video_id) if existing is not None and not overwrite else None
        if row is not None and row.get("sha256") == sha and row.get("config_fingerprint") == fingerprint:
            summary.skipped += 1
            emit({"id": item.video_id, "path": str(item.path), "status": "skipped"})
            continue
        todo.append((item, sha, None))

    writer = None
    if not single_file and todo:
        part = f"{rank.part}-{uuid.uuid4().hex[:8]}"
        writer = CacheWriter(output, shard_size=cfg.storage.shard_size, part=part, flush_interval=60.0)

    def decode(item: VideoInput):
        t0 = time.perf_counter()
        d = decode_video(item.path, cfg.decode, default_frames=adapter.profile.default_frames)
        return d, time.perf_counter() - t0

    try:
        with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
            futures: Dict[int, Future] = {}

            def submit(i: int) -> None:
                if i < len(todo) and todo[i][2] is None and i not in futures:
                    futures[i] = pool.submit(decode, todo[i][0])

            for i in range(prefetch + 1):
                submit(i)
            for i, (item, sha, err) in enumerate(todo):
                for j in range(i + 1, i + prefetch + 1):
                    submit(j)
                if err is not None:
                    fail(item, "unreadable", err, None)
                    continue
                try:
                    decoded, t_dec = futures.pop(i).result()
                except VideoDecodeError as e:
                    fail(item, "decode_error", e, sha)
                    continue
                except Exception as e:  # a decoder crash on one file must not stop the batch
                    fail(item, "decode_error", e, sha)
                    continue
                stage("decode", t_dec)
                try:
                    res = compress_frames(item.video_id, decoded, adapter, cfg, extra_meta=item.extra or None)
                except (RuntimeError, ValueError) as e:
                    fail(item, "compress_error", e, sha)
                    continue
                for k, v in res.timings.items():
                    stage(k, v)
                res.meta["timings_s"]["decode"] = round(t_dec, 4)
                res.meta["config_fingerprint"] = fingerprint
                t0 = time.perf_counter()
                if single_file:
                    write_single(output, item.video_id, res.tensors, res.meta)
                    nbytes = output.stat().st_size
                else:
                    writer.add(item.video_id, res.tensors, res.meta)
                    nbytes = sum(t.numel() * t.element_size() for t in res.tensors.values())
                stage("write", time.perf_counter() - t0)
                summary.done += 1
                summary.tokens += int(res.meta["counts"]["achieved"])
                summary.frames += int(res.meta["counts"]["frames"])
                summary.bytes += nbytes
                emit({"id": item.video_id, "path": str(item.path), "status": "ok",
                      "tokens": res.meta["counts"]["achieved"], "planned": res.meta["counts"]["planned"],
                      "frames": res.meta["counts"]["frames"], "ratio": round(res.meta["counts"]["ratio"], 5),
                      "uncompressed": res.meta["counts"]["uncompressed_tokens"],
                      "output": str(output)})
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = time.perf_counter() - t_start
    return summary
