"""Configuration, split by concern. Every dataclass here is plain data, JSON-serialisable through
:func:`to_dict`, and recorded in every output the tool writes.

- :class:`DecodeConfig`  how frames are read and sampled from a video
- :class:`ModelConfig`   which vision tower / video-LLM checkpoint produces the tokens
- :class:`MethodConfig`  the AOT method's parameters (see ``aot_cli.core``)
- :class:`StorageConfig` how the cache is written
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple


@dataclass
class DecodeConfig:
    """Frame sampling and decoding (validated by ``aot_cli.video.sampling.check_decode_config``).

    ``frames``: number of frames sampled uniformly over [start, end) (None: the model profile's
    default). ``fps``: sample at this rate instead, capped at ``max_frames``. ``start``/``end`` in
    seconds. ``decoder``: "auto" or "pyav" (PyAV: keyframe-accurate seeks where the container's
    index allows them, else a sequential read) or "decord" (kept only where its pictures match). ``timeout``: seconds without decoding progress after which a decode is abandoned as hung.
    ``stream``: index of the video stream to read (None: FFmpeg's best video stream, never a cover
    picture). ``decoder_log``: FFmpeg/decord messages shown on stderr: "quiet" (none), "error",
    "warning", "info" or "debug". ``frame_limit``: most frames one video may give (refusal above).
    ``pixel_limit``: most pixels (width x height) a video's pictures may have (refusal above).
    """

    frames: Optional[int] = None
    fps: Optional[float] = None
    max_frames: Optional[int] = None
    start: Optional[float] = None
    end: Optional[float] = None
    decoder: str = "auto"
    timeout: float = 60.0
    stream: Optional[int] = None
    decoder_log: str = "quiet"
    frame_limit: int = 1024
    pixel_limit: int = 8192 * 8192


#: DecodeConfig fields that never change the frames of a video that decodes (limits, logging,
#: time budget): leave them out of anything that identifies cached content.
DECODE_RUN_ONLY_FIELDS = ("timeout", "decoder_log", "frame_limit", "pixel_limit")


@dataclass
class ModelConfig:
    """The tower. ``model`` is a hub id, a local directory or a named offline model.
    ``device``: "auto" picks CUDA when present. ``dtype``: "auto", "bf16", "fp16" or "fp32".
    ``score_layers``: the two attention layers (shallow, deep) whose received-attention scores
    drive anchor selection; None means the profile's default."""

    model: str = "google/siglip-so400m-patch14-384"
    revision: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    batch_frames: int = 16
    score_layers: Optional[Tuple[int, int]] = None
    profile: Optional[str] = None


@dataclass
class StorageConfig:
    """Cache writing. ``save_dtype``: "model" (the tower's dtype), "fp32", "bf16" or "fp16".
    ``shard_size``: bytes at which a cache shard is closed."""

    save_dtype: str = "model"
    shard_size: int = 1 << 30


def to_dict(cfg: Any) -> dict:
    """A dataclass (possibly nested) as plain JSON-ready data."""
    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {str(k): convert(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return convert(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a clear error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
    kwargs = {}
    for k, v in data.items():
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)
