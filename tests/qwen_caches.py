"""Qwen cache entries for the downstream tests, written the way the cache format documents them
(README "Cache format", the Qwen tensors): the model's own ``get_video_features`` on random pixel
values, with the tokens (and DeepStack rows) of a chosen set of merged cells kept.

``qwen_entry`` returns the cached video and what the reference needs: the pixel values, the grid
and the model's full video features."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from aot_cli.cache import TokenCache, write_single

MODEL_TYPES = {"qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl", "qwen3.5": "qwen3_5"}


@dataclass
class QwenEntry:
    video: object                 # the CachedVideo
    pixels: torch.Tensor          # [t*h*w, C*tps*p*p], the processor's layout
    grid: torch.Tensor            # [1, 3] int64
    features: object              # the model's own get_video_features output (all cells)
    kept: torch.Tensor            # [T] cell numbers t_k * cells + c_k, sorted
    frame_indices: List[int]
    fps: float
    total_frames: int


def kept_count(ratio: float, t: int, cells: int) -> int:
    """floor(ratio * t * cells + 0.5): the exact budget of a ``--ratio``."""
    return int(math.floor(ratio * t * cells + 0.5))


def qwen_entry(model, family: str, out: Path, *, grid=(4, 4, 6), ratio: float = 1.0,
               kept: Optional[Sequence[int]] = None, frames: Optional[int] = None, fps: float = 12.5,
               total_frames: int = 100, seed: int = 0, video_id: str = "clip.mp4",
               drop: Sequence[str] = (), meta_edit=None, writer=None) -> QwenEntry:
    """Write a one-video cache file ``out`` for ``model`` of ``family``: ``grid`` (t, h, w) in
    patches, the cells ``kept`` (default: ``kept_count(ratio)`` cells drawn at random, sorted) kept,
    ``frames`` sampled frames (default 2t; 2t - 1 exercises the odd-count rule) spread over
    ``total_frames`` at ``fps``. ``drop`` leaves tensors out; ``meta_edit(meta)`` edits the meta.
    With ``writer`` (an open ``CacheWriter``) the video is added to that cache instead (``out`` is
    ignored and the entry's ``video`` is None)."""
    t, h, w = grid
    vision = model.config.vision_config
    merge, tps, patch = vision.spatial_merge_size, vision.temporal_patch_size, vision.patch_size
    cells = (h // merge) * (w // merge)
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(t * h * w, 3 * tps * patch * patch, generator=g)
    grid_t = torch.tensor([list(grid)], dtype=torch.long)
    with torch.no_grad():
        features = model.model.get_video_features(pixels, grid_t, return_dict=True)
    every = features.pooler_output[0]
    if kept is None:
        count = kept_count(ratio, t, cells)
        kept = torch.randperm(t * cells, generator=g)[:count].sort().values
    kept = torch.as_tensor(list(kept), dtype=torch.long)
    frames = 2 * t if frames is None else frames
    step = total_frames / frames
    frame_indices = [int(i * step + step / 3) for i in range(frames)]
    tensors: Dict[str, torch.Tensor] = {
        "tokens": every[kept].contiguous(),
        "frame": (kept // cells).to(torch.int32),
        "index": (kept % cells).to(torch.int32),
        "kind": torch.ones(len(kept), dtype=torch.uint8),
        "video_grid_thw": torch.tensor(list(grid), dtype=torch.int64),
        "frame_indices": torch.tensor(frame_indices, dtype=torch.int64),
        "timestamps": torch.tensor(frame_indices, dtype=torch.float64) / fps,
    }
    deepstack = getattr(features, "deepstack_features", None)
    if deepstack:
        tensors["deepstack"] = torch.stack([layer[0][kept] for layer in deepstack]).contiguous()
    for name in drop:
        tensors.pop(name, None)
    meta = {
        "video": {"path": f"/videos/{video_id}", "given_path": video_id, "fps": fps, "num_frames": total_frames,
                  "sha256": f"{seed:064x}"},
        "model": {"family": family, "model": f"tiny/{family}", "model_type": MODEL_TYPES[family]},
        "profile": {"name": family},
        "processor": {"patch_size": patch, "merge_size": merge, "temporal_patch_size": tps,
                      "video_grid_thw": list(grid), "sampled_frames": frames, "padded_frames": tps * t - frames},
        "counts": {"achieved": len(kept), "total": len(kept), "uncompressed_tokens": t * cells},
        "config": {"method": {"method": "none" if len(kept) == t * cells else "aot", "ratio": ratio}},
    }
    if meta_edit is not None:
        meta_edit(meta)
    if writer is not None:
        writer.add(video_id, tensors, meta)
        video = None
    else:
        write_single(out, video_id, tensors, meta)
        video = TokenCache(out)[video_id]
    return QwenEntry(video=video, pixels=pixels, grid=grid_t, features=features, kept=kept,
                     frame_indices=frame_indices, fps=fps, total_frames=total_frames)
