"""Valid aot caches built for tests, ways to damage them, and a reader loop that allows only
CacheError (used by the hostile-input and fuzz tests of the cache reader)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from aot_cli.cache import CacheError, CacheWriter, TokenCache, write_single

FRAMES = 8
TOKENS = 40


def video_tensors(seed: int, frames: int = FRAMES, tokens: int = TOKENS, dim: int = 16) -> Dict[str, torch.Tensor]:
    """The tensors the pipeline stores for one video (standard names, dtypes and shapes)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "tokens": torch.randn(tokens, dim, generator=g).to(torch.bfloat16),
        "frame": torch.sort(torch.randint(0, frames, (tokens,), generator=g)).values.to(torch.int32),
        "index": torch.randint(0, 25, (tokens,), generator=g, dtype=torch.int32),
        "kind": torch.randint(0, 3, (tokens,), generator=g, dtype=torch.uint8),
        "frame_indices": torch.arange(frames, dtype=torch.int64) * 3,
        "timestamps": torch.arange(frames, dtype=torch.float64) / 10,
        "anchors_per_frame": torch.randint(0, 5, (frames,), generator=g, dtype=torch.int32),
        "cells_per_frame": torch.randint(0, 5, (frames,), generator=g, dtype=torch.int32),
        "kept_per_frame": torch.randint(0, 5, (frames,), generator=g, dtype=torch.int32),
        "merged_per_frame": torch.randint(0, 5, (frames,), generator=g, dtype=torch.int32),
        "segments": torch.tensor([[0, frames // 2], [frames // 2, frames - frames // 2]], dtype=torch.int32),
        "anchor_mask": (torch.rand(frames, 81, generator=g) < 0.1).to(torch.uint8),
        "cell_mask": (torch.rand(frames, 25, generator=g) < 0.2).to(torch.uint8),
    }


def video_meta(seed: int, frames: int = FRAMES) -> dict:
    return {"video": {"path": f"/nowhere/clip{seed}.mp4", "sha256": f"{seed:064x}"},
            "model": {"model": "tiny/model"}, "config": {"method": {"method": "aot"}},
            "counts": {"frames": frames, "tower_grid": [9, 9], "grid": [5, 5], "planned": TOKENS,
                       "achieved": TOKENS, "uncompressed_tokens": frames * 25, "ratio": TOKENS / (frames * 25),
                       "requested_ratio": 0.2},
            "config_fingerprint": "fp", "sha256": f"{seed:064x}"}


def single_file(path: Path, video_id: str = "clips/a.mp4", seed: int = 0) -> Path:
    return write_single(path, video_id, video_tensors(seed), video_meta(seed))


def cache_dir(path: Path, count: int = 3, failures: int = 1) -> Path:
    """A cache directory: ``count`` videos in two shards of one part, ``failures`` failure rows."""
    with CacheWriter(path, shard_size=1) as writer:
        for k in range(count):
            writer.add(f"clips/c{k}.mp4", video_tensors(k), video_meta(k))
        for k in range(failures):
            writer.add_failure(f"broken/b{k}.mp4", f"/nowhere/b{k}.mp4", "decode_error", "not a video")
    return path


# -- editing files -------------------------------------------------------------------------------

def split_file(path: Path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return data[8:8 + n], data[8 + n:]


def put_header(path: Path, raw: bytes) -> None:
    """Replace the JSON header of the safetensors file ``path`` (its tensor data stays)."""
    _, rest = split_file(path)
    raw = raw + b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + rest)


def edit_header(path: Path, edit: Callable[[dict], Optional[str]]) -> None:
    """Apply ``edit`` to the parsed header; when it returns a string, that string is written as the
    raw header instead (for JSON Python's encoder refuses to write, e.g. deep nesting)."""
    header = json.loads(split_file(path)[0])
    raw = edit(header)
    put_header(path, (raw if raw is not None else json.dumps(header)).encode("utf-8"))


def edit_videos(path: Path, edit: Callable[[dict], Optional[str]]) -> None:
    """Apply ``edit`` to the parsed ``aot_videos`` table (or write the string it returns)."""
    def on_header(header: dict) -> None:
        table = json.loads(header["__metadata__"]["aot_videos"])
        raw = edit(table)
        header["__metadata__"]["aot_videos"] = raw if raw is not None else json.dumps(table)
    edit_header(path, on_header)


def nested(depth: int = 20_000, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "0" + "}" * depth


def index_part(cache: Path, part: str = "r0") -> Path:
    return cache / "index" / f"{part}.jsonl"


def shards_of(cache: Path) -> List[Path]:
    return sorted(p for p in (cache / "shards").iterdir() if not p.name.startswith("."))


# -- reading everything ---------------------------------------------------------------------------

@dataclass
class Outcome:
    """What reading a cache gave: ``error`` (CacheError when opening it), readable ``ids``,
    ``bad`` (id → CacheError message), ``problems`` (TokenCache.problems())."""

    error: Optional[str] = None
    ids: List[str] = field(default_factory=list)
    bad: Dict[str, str] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)

    @property
    def messages(self) -> List[str]:
        return ([self.error] if self.error else []) + list(self.bad.values()) + self.problems


def read_everything(path: Path) -> Outcome:
    """Open ``path`` with TokenCache and use every part of the reading API. Only CacheError may be
    raised by the reader (anything else propagates and fails the test)."""
    out = Outcome()
    try:
        cache = TokenCache(path)
    except CacheError as exc:
        out.error = str(exc)
        return out
    for vid in cache:
        try:
            video = cache[vid]
            assert isinstance(video.meta, dict)
            for name in video.names:
                video[name]
                if video.dtype_name(name) not in ("float8_e4m3fn", "float8_e5m2"):
                    video.array(name)
            video.shapes
            out.ids.append(vid)
        except CacheError as exc:
            out.bad[vid] = str(exc)
        cache.lookup(vid)
    cache.entries()
    cache.failures()
    out.problems = cache.problems()
    assert len(cache) == len(cache.ids()) == len(out.ids) + len(out.bad)
    return out


def one_line_each(messages: List[str], start: Optional[str] = None) -> None:
    for message in messages:
        assert "\n" not in message and "\r" not in message and message.strip(), repr(message)
        if start is not None:
            assert message.startswith(start), (message, start)


def make_fifo(path: Path) -> Path:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)
    return path
