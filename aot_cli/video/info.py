"""Plain data returned by the video layer: what a file is (:class:`VideoInfo`), the frames that
were read from it (:class:`DecodedVideo`), the per-frame timeline found by demuxing
(:class:`FrameIndex`) and the one error type (:class:`VideoDecodeError`)."""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch


class VideoDecodeError(RuntimeError):
    """A video could not be read. The message is one line: ``"<path>: <cause>"``.

    Build it as ``VideoDecodeError(path, cause)`` or from a ready message
    ``VideoDecodeError("<path>: <cause>")``; ``path`` and ``cause`` are kept as attributes.
    """

    def __init__(self, path: str | Path, cause: Optional[str] = None) -> None:
        if cause is None:
            message = " ".join(str(path).split())
            head, sep, tail = message.partition(": ")
            self.path, self.cause = (head, tail) if sep else ("", message)
        else:
            self.path = str(path)
            self.cause = " ".join(str(cause).split())
            message = f"{self.path}: {self.cause}"
        super().__init__(message)

    def __reduce__(self):
        """Pickle as (path, cause) so both survive a trip through another process."""
        if self.path:
            return (type(self), (self.path, self.cause))
        return (type(self), (self.cause,))


@dataclass
class VideoInfo:
    """What a video file holds, as used for sampling.

    ``width``/``height`` are the displayed size (after ``rotation``); ``rotation`` is the clockwise
    turn in degrees (0/90/180/270) that the stored frames need to be shown upright (the legacy
    ``rotate`` tag convention; ffprobe prints the negative of it). ``duration`` and ``fps`` are
    measured from the demuxed timestamps when the packets carry them. ``num_frames_header`` is the
    count the container claims (None when it has none); ``num_frames`` is the count found by
    demuxing, the one sampling uses.
    """

    path: str
    size_bytes: int
    sha256: str
    duration: float
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    pix_fmt: str
    has_audio: bool
    num_frames_header: Optional[int]
    num_frames: int

    def to_dict(self) -> dict:
        """All fields as JSON-ready data."""
        return dataclasses.asdict(self)


@dataclass
class FrameIndex:
    """The per-frame timeline of one video stream, found by demuxing packets (no decoding).

    ``timestamps``: float64 [n] seconds of each frame in display order, relative to the first
    frame (0.0). ``origin_ticks``: pts of that first frame in ``time_base`` units (0 without pts).
    ``has_pts``: False when the packets carry no timestamps (raw streams); the timeline is then
    ``i / fps``. ``packets``: packets with data, discarded ones included; ``discarded``: packets
    the container marks as not displayed (edit lists). ``stored_width``/``stored_height``: size
    of the decoded (unrotated) pictures.
    """

    timestamps: np.ndarray
    origin_ticks: int
    has_pts: bool
    packets: int
    discarded: int
    stored_width: int
    stored_height: int
    time_base: Optional[Fraction] = None
    pts_ticks: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.timestamps.shape[0])

    def ordinal_lookup(self) -> Dict[int, int]:
        """pts (stream ticks) -> display-order frame number; empty without pts."""
        if not self.has_pts or self.pts_ticks is None:
            return {}
        return {int(t): i for i, t in enumerate(self.pts_ticks.tolist())}

    def trimmed(self, count: int) -> "FrameIndex":
        """This timeline restricted to its first ``count`` frames."""
        ticks = None if self.pts_ticks is None else self.pts_ticks[:count].copy()
        return dataclasses.replace(self, timestamps=self.timestamps[:count].copy(), pts_ticks=ticks)

    def seconds(self, pts: int) -> float:
        """A pts (stream ticks) as seconds relative to the first frame."""
        tb = self.time_base
        return float((pts - self.origin_ticks) * tb.numerator) / tb.denominator


@dataclass
class DecodedVideo:
    """Frames read from a video.

    ``frames``: torch.uint8 [F, H, W, 3] RGB in displayed orientation at native resolution.
    ``indices``: frame index (0..n-1, display order) of each of the F frames, ascending, with
    repeats when the video is shorter than requested. ``timestamps``: seconds of each of the F
    frames relative to the video's first frame. ``decoder``: "decord" or "pyav". ``requested``:
    the number of frames asked for; ``padded``: True when indices repeat to reach it.
    """

    frames: torch.Tensor
    indices: List[int]
    timestamps: List[float]
    info: VideoInfo
    decoder: str
    notes: List[str] = field(default_factory=list)
    requested: int = 0
    padded: bool = False

    def to_dict(self) -> dict:
        """Everything but the pixels, as JSON-ready data."""
        return {
            "shape": list(self.frames.shape),
            "indices": list(self.indices),
            "timestamps": list(self.timestamps),
            "info": self.info.to_dict(),
            "decoder": self.decoder,
            "notes": list(self.notes),
            "requested": self.requested,
            "padded": self.padded,
        }


class Deadline:
    """Wall-clock budget for one decode; :meth:`check` raises once it has passed."""

    def __init__(self, path: str | Path, seconds: Optional[float]) -> None:
        self.path = path
        self.seconds = seconds
        self.expires = None if seconds is None or seconds <= 0 else time.monotonic() + seconds

    def check(self, stage: str) -> None:
        """Raise :class:`VideoDecodeError` when the budget is spent (``stage`` names the step)."""
        if self.expires is not None and time.monotonic() > self.expires:
            raise VideoDecodeError(self.path, f"{stage} took longer than the {self.seconds:g} s timeout")


def apply_rotation(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn stored frames [F, H, W, C] clockwise by ``rotation`` degrees (0/90/180/270) so they
    show upright; returns a C-contiguous array [F, H', W', C]."""
    quarter_turns = (rotation // 90) % 4
    if quarter_turns == 0:
        return frames
    # np.rot90 turns counter-clockwise for positive k; clockwise is negative k.
    return np.ascontiguousarray(np.rot90(frames, k=-quarter_turns, axes=(1, 2)))


#: decord's log prefix, e.g. "[19:01:00] /github/workspace/src/video/video_reader.cc:486: ".
LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def describe_exception(exc: BaseException) -> str:
    """A short one-line text for an exception raised by a decoder library (log prefixes cut)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(LOG_PREFIX.sub("", str(text)).split())[:300]

