"""One video through the pipeline's public pieces, one stage at a time, each stage timed on its
own (with a device synchronisation around it on CUDA):

decode (:func:`aot_cli.video.decode_video`) -> preprocess (``adapter.preprocess``) -> tower
(``adapter.features``: the plain SDPA pass, no scores) -> scored tower (``adapter.encode``: the
same pass with the two score layers captured) -> method (:func:`aot_cli.core.compress`) -> write
(:func:`aot_cli.pipeline.run.build_result` + :func:`aot_cli.cache.write_single`).

"scores" is the scored pass minus the plain pass on the same pixels. The same tower output is
also stored with the method off (every token the model would get) to size the cache against.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

import torch

from ..cache import write_single
from ..core import AOTConfig
from ..pipeline.inputs import VideoInput
from ..pipeline.run import RunConfig, build_result, method_with_side
from ..pipeline.workers import decode_target
from ..video import decode_video
from .memory import MemoryPeak, PeakMemory

T = TypeVar("T")
STAGES = ("decode", "preprocess", "tower", "scores", "method", "write")


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> Tuple[T, float]:
    """``(fn(), seconds)`` with the device synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - t0


@dataclass
class TowerPass:
    """Best time of a tower pass over runs, and the memory of the run that needed the most."""

    seconds: float = float("inf")
    runs: List[float] = field(default_factory=list)
    memory: MemoryPeak = field(default_factory=MemoryPeak)

    def add(self, seconds: float, memory: MemoryPeak) -> None:
        if not self.runs or memory.working > self.memory.working:
            self.memory = memory
        self.runs.append(seconds)
        self.seconds = min(self.seconds, seconds)


@dataclass
class VideoStages:
    """Per-stage seconds of one video (best over runs), its tower passes and cache sizes.

    ``frames``: frames sampled; ``tokens``: visual tokens kept; ``all_tokens``: visual tokens the
    model would get with the method off; ``bytes`` / ``all_tokens_bytes``: size of the
    single-video safetensors file with the method on / off (same dtype, same metadata kinds)."""

    video_id: str
    path: str
    frames: int = 0
    tokens: int = 0
    all_tokens: int = 0
    bytes: int = 0
    all_tokens_bytes: int = 0
    token_dim: int = 0
    token_dtype: str = ""
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    plain: TowerPass = field(default_factory=TowerPass)
    scored: TowerPass = field(default_factory=TowerPass)

    def best(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = min(self.stage_seconds.get(stage, float("inf")), seconds)

    def to_dict(self) -> dict:
        return {"id": self.video_id, "path": self.path, "frames": self.frames, "tokens": self.tokens,
                "all_tokens": self.all_tokens, "bytes": self.bytes, "all_tokens_bytes": self.all_tokens_bytes,
                "stages_s": {k: round(v, 6) for k, v in self.stage_seconds.items()},
                "tower_runs_s": [round(x, 6) for x in self.plain.runs],
                "scored_runs_s": [round(x, 6) for x in self.scored.runs]}


def identity_method(method: AOTConfig) -> AOTConfig:
    """The method switched off with the same pooling: the tokens the model itself would get."""
    return dataclasses.replace(method, method="none", preset="reference", ratio=None, num_anchors=None, keep_ratio=None)


def measure_video(item: VideoInput, adapter, cfg: RunConfig, method: AOTConfig, workdir: Path,
                  into: Optional[VideoStages] = None) -> VideoStages:
    """Run ``item`` through every stage once; ``into`` (from an earlier run of the same video)
    keeps each stage's best time over the calls. The plain and the scored tower pass run back to
    back on the same pixels, so drift on a shared machine hits both alike. Writes
    ``workdir/video.safetensors`` (method on) and ``workdir/video.all.safetensors`` (method off)."""
    device = adapter.device
    score_layers = cfg.model.score_layers or adapter.profile.score_layers
    out = into if into is not None else VideoStages(video_id=item.video_id, path=str(item.path))
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "video.safetensors"
    decoded, t = timed(lambda: decode_video(item.path, cfg.decode, default_frames=adapter.profile.default_frames,
                                            target_size=decode_target(adapter, cfg.decode)), device)
    out.best("decode", t)
    pixels, t = timed(lambda: adapter.preprocess(decoded.frames), device)
    out.best("preprocess", t)
    with PeakMemory(device) as mem:
        plain, t = timed(lambda: adapter.features(pixels), device)
    out.plain.add(t, mem.result)
    del plain
    with PeakMemory(device) as mem:
        tower, t = timed(lambda: adapter.encode(pixels, score_layers=score_layers), device)
    out.scored.add(t, mem.result)
    pixels = None  # free the frames before the method runs
    (res, side), t = timed(lambda: method_with_side(tower.tokens, tower.shallow, tower.deep, tower.grid, tower.side,
                                                    method), device)
    out.best("method", t)

    def write():
        entry = build_result(item.video_id, decoded, adapter, cfg, method, res, {}, side=side)
        write_single(target, item.video_id, entry.tensors, entry.meta)
        return entry

    entry, t = timed(write, device)
    out.best("write", t)
    out.stage_seconds["tower"] = out.plain.seconds
    out.stage_seconds["scores"] = out.scored.seconds - out.plain.seconds
    out.frames = int(entry.meta["counts"]["frames"])
    out.tokens = int(entry.meta["counts"]["achieved"])
    out.bytes = target.stat().st_size
    out.token_dim = int(entry.tensors["tokens"].shape[1])
    out.token_dtype = entry.meta["token_dtype"]
    whole = identity_method(method)
    whole_res, whole_side = method_with_side(tower.tokens, None, None, tower.grid, tower.side, whole)
    full = build_result(item.video_id, decoded, adapter, cfg, whole, whole_res, {}, side=whole_side)
    full_path = workdir / "video.all.safetensors"
    write_single(full_path, item.video_id, full.tensors, full.meta)
    out.all_tokens = int(full.meta["counts"]["achieved"])
    out.all_tokens_bytes = full_path.stat().st_size
    return out


def warm_up(item: VideoInput, adapter, cfg: RunConfig) -> None:
    """One plain and one scored tower pass on up to ``batch_frames`` frames of ``item``, so that
    one-off costs (kernel selection, allocator growth, lazy imports) stay out of the timings."""
    score_layers = cfg.model.score_layers or adapter.profile.score_layers
    decoded = decode_video(item.path, cfg.decode, default_frames=adapter.profile.default_frames,
                           target_size=decode_target(adapter, cfg.decode))
    pixels = adapter.preprocess(decoded.frames[: adapter.batch_frames])
    adapter.features(pixels)
    adapter.encode(pixels, score_layers=score_layers)
    synchronize(adapter.device)


def sum_stages(videos: List[VideoStages]) -> Dict[str, float]:
    """Per-stage seconds summed over videos, in pipeline order."""
    return {stage: sum(v.stage_seconds.get(stage, 0.0) for v in videos) for stage in STAGES}


def worst_memory(passes: List[TowerPass]) -> MemoryPeak:
    """The memory of the pass that needed the most (device bytes when there is a device, else host)."""
    return max((p.memory for p in passes), key=lambda m: m.working, default=MemoryPeak())

