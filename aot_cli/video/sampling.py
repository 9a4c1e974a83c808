"""Which frames to read: a pure function of the per-frame timeline and the decode settings.

Two modes:

- count (default): ``F`` frames spread over the frames inside ``[start, end)`` with
  ``np.linspace(first, last, F, dtype=int)``, the rule LLaVA-style loaders use. A video with
  fewer than ``F`` frames gets repeated indices (``padded``), as the model's own loader would.
- rate (``fps`` set): one frame every ``1/fps`` seconds of timeline, namely the frame on screen
  at that instant; a frame is never taken twice; more than ``max_frames`` are thinned uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..config import DecodeConfig

DECODERS = ("auto", "decord", "pyav")
SEEK_MODES = ("exact", "keyframe")
#: ``DecodeConfig.size`` values (``--decode-size``).
DECODE_SIZES = ("auto", "native", "tower")
#: Slack (seconds) when comparing timestamps with start/end/targets (float rounding).
TIME_EPS = 1e-6


@dataclass
class FrameSelection:
    """Result of :func:`sample_indices`: ``indices`` ascending frame numbers (repeats allowed
    only in count mode when padded), ``requested`` frames asked for, ``padded`` whether indices
    repeat to reach it, ``notes`` human-readable remarks."""

    indices: List[int]
    requested: int
    padded: bool
    notes: List[str] = field(default_factory=list)


def _number(value, name: str, flag: str, kind: type, minimum=None, above=None):
    """``value`` (the setting ``name``) as ``kind`` (int or float), or ValueError naming its flag."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)
                                                                          and not value.is_integer()):
        raise ValueError(f"{flag} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    number = kind(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{flag} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{flag} must be at least {minimum}, got {value}")
    if above is not None and not number > above:
        raise ValueError(f"{flag} must be positive, got {value}")
    return number


def check_decode_config(cfg: DecodeConfig) -> None:
    """Raise ValueError (one line that starts with the setting's flag) for settings that cannot be
    honoured, including frame counts over ``frame_limit``."""
    from .logs import LOG_LEVELS

    if cfg.decoder not in DECODERS:
        raise ValueError(f"--decoder must be one of {', '.join(DECODERS)}, got {cfg.decoder!r}")
    if cfg.size not in DECODE_SIZES:
        raise ValueError(f"--decode-size must be one of {', '.join(DECODE_SIZES)}, got {cfg.size!r}")
    if cfg.seek not in SEEK_MODES:
        raise ValueError(f"--seek must be one of {', '.join(SEEK_MODES)}, got {cfg.seek!r}")
    if cfg.seek == "keyframe" and cfg.decoder == "decord":
        raise ValueError("--seek keyframe reads keyframes with PyAV: use it with --decoder auto or pyav, not decord")
    if cfg.decoder_log not in LOG_LEVELS:
        raise ValueError(f"--decoder-log must be one of {', '.join(LOG_LEVELS)}, got {cfg.decoder_log!r}")
    limit = _number(cfg.frame_limit, "frame_limit", "--frame-limit", int, minimum=1)
    _number(cfg.pixel_limit, "pixel_limit", "--pixel-limit", int, minimum=1)
    if cfg.stream is not None:
        _number(cfg.stream, "stream", "--stream", int, minimum=0)
    for name, flag in (("frames", "--frames"), ("max_frames", "--max-frames")):
        value = getattr(cfg, name)
        if value is not None and _number(value, name, flag, int, minimum=1) > limit:
            raise ValueError(f"{flag} {value} is over the frame limit of {limit} per video; "
                             "ask for fewer or raise --frame-limit")
    if cfg.fps is not None:
        _number(cfg.fps, "fps", "--fps", float, above=0)
    if cfg.start is not None:
        _number(cfg.start, "start", "--start", float, minimum=0)
    if cfg.end is not None:
        end = _number(cfg.end, "end", "--end", float)
        if end <= float(cfg.start or 0.0):
            raise ValueError(f"--end ({end:g} s) must be after --start ({float(cfg.start or 0.0):g} s)")
    if cfg.timeout is not None:
        _number(cfg.timeout, "timeout", "--decode-timeout", float, above=0)


def frames_in_range(timestamps: np.ndarray, start: Optional[float], end: Optional[float]) -> np.ndarray:
    """Indices (ascending) of the frames whose timestamp lies in ``[start, end)``."""
    lo = 0.0 if start is None else float(start)
    mask = timestamps >= lo - TIME_EPS
    if end is not None:
        mask &= timestamps < float(end) - TIME_EPS
    return np.flatnonzero(mask)


def uniform_indices(first: int, last: int, count: int) -> np.ndarray:
    """``count`` indices from ``first`` to ``last`` inclusive, ``np.linspace(..., dtype=int)``."""
    return np.linspace(first, last, count, dtype=int)


def sample_by_count(inside: np.ndarray, count: int) -> FrameSelection:
    """Count mode over the contiguous frame numbers ``inside``."""
    first, last = int(inside[0]), int(inside[-1])
    available = last - first + 1
    indices = uniform_indices(first, last, count)
    padded = available < count
    notes = [f"only {available} frames, sampled {count} with repeats"] if padded else []
    return FrameSelection([int(i) for i in indices], count, padded, notes)


def sample_by_rate(
    timestamps: np.ndarray,
    inside: np.ndarray,
    duration: float,
    fps: float,
    end: Optional[float],
    max_frames: Optional[int],
) -> FrameSelection:
    """Rate mode: the frame on screen every ``1/fps`` s from the first frame in range."""
    first, last = int(inside[0]), int(inside[-1])
    t0 = float(timestamps[first])
    stop = duration if end is None else min(float(end), duration)
    steps = max(1, int(np.ceil((stop - t0) * fps - TIME_EPS)))
    targets = t0 + np.arange(steps, dtype=np.float64) / fps
    on_screen = np.searchsorted(timestamps, targets + TIME_EPS, side="right") - 1
    on_screen = np.clip(on_screen, first, last)
    chosen = np.unique(on_screen)
    notes: List[str] = []
    if len(chosen) < len(on_screen):
        notes.append(
            f"{fps:g} fps asks for {len(on_screen)} frames but only {len(chosen)} distinct frames "
            "fall on the timeline; repeats dropped"
        )
    if max_frames is not None and len(chosen) > max_frames:
        notes.append(f"{len(chosen)} frames at {fps:g} fps capped to max_frames={max_frames}")
        chosen = chosen[uniform_indices(0, len(chosen) - 1, max_frames)]
    return FrameSelection([int(i) for i in chosen], len(chosen), False, notes)


def sample_indices(
    timestamps: Sequence[float] | np.ndarray,
    duration: float,
    cfg: DecodeConfig,
    default_frames: int = 32,
) -> FrameSelection:
    """Choose the frames to read.

    ``timestamps``: seconds of every frame in display order [n] (ascending); ``duration``: end of
    the timeline in seconds; ``cfg``: frames / fps / max_frames / start / end (``frames`` None ->
    ``default_frames``; ``fps`` set -> rate mode). Raises ValueError when the settings are invalid
    or no frame lies in ``[start, end)``.
    """
    check_decode_config(cfg)
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError("the video has no frames to sample")
    inside = frames_in_range(ts, cfg.start, cfg.end)
    if inside.size == 0:
        lo = 0.0 if cfg.start is None else float(cfg.start)
        hi = "end" if cfg.end is None else f"{float(cfg.end):g} s"
        raise ValueError(
            f"no frames in [{lo:g} s, {hi}); the video's frames run from 0 to {float(ts[-1]):.3f} s"
        )
    if cfg.fps is not None:
        selection = sample_by_rate(ts, inside, float(duration), float(cfg.fps), cfg.end, cfg.max_frames)
        if cfg.frames is not None:
            selection.notes.insert(0, f"frames={cfg.frames} ignored: fps={cfg.fps:g} is set")
        return selection
    count = int(cfg.frames) if cfg.frames is not None else int(default_frames)
    if count < 1:
        raise ValueError(f"default_frames must be at least 1, got {default_frames}")
    return sample_by_count(inside, count)
