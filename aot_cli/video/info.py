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
from typing import Callable, List, Optional, Tuple

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

    ``width``/``height`` are the displayed size in pixels: the stored picture
    (``stored_width`` x ``stored_height``) with its sample aspect ratio applied (the width scaled
    by ``sample_aspect_ratio``, e.g. 720x480 at 32:27 shows as 853x480) and turned by
    ``rotation``, the clockwise turn in degrees (0/90/180/270) that the stored frames need to be
    shown upright (the legacy ``rotate`` tag convention; ffprobe prints the negative of it).
    ``display_aspect_ratio``: width:height on screen before the rotation, as ffprobe prints it.
    ``colour``: the stream's colour tags as decoded (``matrix``, ``range``, ``primaries``,
    ``transfer``, ffprobe's names) and the conversion to RGB used (``used_matrix``,
    ``used_range``; None for pictures that are RGB already), see :mod:`.colour`. ``stream_index`` is the
    container's index of the video stream that was read (FFmpeg's best video stream, or the one
    ``DecodeConfig.stream`` names); ``container`` the FFmpeg demuxer name. ``num_frames`` is the
    number of pictures a plain sequential FFmpeg decode of that stream yields, the count sampling
    uses (on indexed containers the demuxed packet count, checked against decoded pictures;
    elsewhere counted by decoding); ``num_frames_header`` is the count the container claims (None
    when it has none). ``duration`` (s) and ``fps`` are measured from the pictures' timestamps when
    they carry them.
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
    stream_index: int = 0
    container: str = ""
    stored_width: int = 0
    stored_height: int = 0
    sample_aspect_ratio: str = "1:1"
    display_aspect_ratio: str = ""
    colour: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """All fields as JSON-ready data."""
        return dataclasses.asdict(self)


@dataclass
class FrameIndex:
    """The picture timeline of one video stream as demuxing the packets predicts it (nothing is
    decoded but the first picture).

    Frame ``k`` is the k-th picture of a sequential decode of the stream. ``timestamps``: float64
    [n] seconds of each picture relative to the first (0.0), non-decreasing: packet timestamps
    sorted within each continuous piece of the timeline, pieces (timestamp restarts, as in joined
    MPEG-TS files) laid one after the other; ``i / fps`` when the packets carry no timestamps
    (``has_pts`` False). ``pts_ticks``: int64 [n] the pictures' pts in ``time_base`` units, in
    display order (None without pts). ``key_ticks``: int64 sorted pts of the keyframes.
    ``seekable``: None when the container has a real index and the timestamps are unique and
    continuous, so frame ``k`` can be reached by seeking to the keyframe before ``pts_ticks[k]``;
    otherwise the reason it cannot. ``seek_by``: how the readers seek: "time" (that index, or
    AVI's ``idx1``), "bytes" (MPEG-TS/PS, ASF: to ``key_positions``, the byte offsets of the
    keyframe packets, aligned with ``key_ticks``) or None (sequential reads only). ``packets``: packets with data, discarded ones included;
    ``discarded``: packets the container marks as not displayed (edit lists). ``restarts``: how
    often the timeline restarted. ``stored_width``/``stored_height``: size of the decoded
    (unrotated) pictures. ``discontinuity``: seconds of forward jump treated as a restart (formats
    with timestamp discontinuities, like MPEG-TS), else None. ``video_streams``: video streams
    in the file that are not cover pictures; ``best_stream``: FFmpeg's best video stream.
    ``timeline_notes``: the ``notes`` that describe the predicted timeline (restarts, gaps).
    ``first_picture``: the probe's first decoded picture (an ``av.VideoFrame``: frame 0 of a
    sequential decode), kept for checks when it is not too large, else None.
    ``display_width``/``display_height``: the stored picture's size on screen (sample aspect
    ratio applied, not rotated); ``colour``: how pictures are converted to RGB
    (:class:`~.colour.ColourRule`). ``damaged``: the demuxer flagged packets as damaged (a cut-off
    download) or stopped on an error, so the readers decode with one thread (frame threads lose
    the pictures in flight when the decoder reports the damage at the end of the stream).
    ``skip_safe``: pictures nothing refers to may be skipped while seeking (the pts name the
    pictures whatever is skipped); False for damaged streams and AVI, whose timestamps are
    packet counters.
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
    key_ticks: Optional[np.ndarray] = None
    seekable: Optional[str] = "not checked"
    seek_by: Optional[str] = None
    key_positions: Optional[np.ndarray] = None
    restarts: int = 0
    fps: float = 0.0
    discontinuity: Optional[float] = None
    video_streams: int = 1
    best_stream: int = 0
    timeline_notes: List[str] = field(default_factory=list)
    first_picture: Optional[object] = field(default=None, repr=False)
    display_width: int = 0
    display_height: int = 0
    colour: Optional[object] = field(default=None, repr=False)
    damaged: bool = False
    skip_safe: bool = True

    @property
    def num_frames(self) -> int:
        return int(self.timestamps.shape[0])



@dataclass
class DecodedVideo:
    """Frames read from a video.

    ``frames``: torch.uint8 [F, H, W, 3] RGB in displayed orientation; H x W is the native size,
    or the smaller decode size when a target size was given (see ``decode_size``). Frame ``j`` is
    picture ``indices[j]`` of a sequential FFmpeg decode of stream ``info.stream_index``.
    ``indices``: picture numbers (0..n-1) of the F frames, ascending, with repeats when the video
    is shorter than requested. ``timestamps``: seconds of each of the F pictures relative to the
    stream's first picture, non-decreasing. ``decoder``: "decord" or "pyav". ``read``: how the
    pictures were reached: "decord", "seek" (keyframe-accurate PyAV seeks) or "sequential".
    ``seek``: the sampling mode, "exact" (the frames sampling chose) or "keyframe" (each replaced
    by the keyframe at or before it: ``indices`` and ``timestamps`` are the keyframes').
    ``decode_size``: (height, width) of the frames; ``native_size``: the displayed size of the
    pictures in the file (sample aspect ratio and rotation applied: frames at native size are
    what a player shows, not the stored, possibly squeezed, pixels). ``requested``: the number of frames asked for; ``padded``: True when
    indices repeat to reach it. ``notes``: remarks on anything unusual (restarted timestamps, a
    decoder that was not used and why, corrected counts).
    """

    frames: torch.Tensor
    indices: List[int]
    timestamps: List[float]
    info: VideoInfo
    decoder: str
    notes: List[str] = field(default_factory=list)
    requested: int = 0
    padded: bool = False
    read: str = ""
    seek: str = "exact"
    decode_size: Tuple[int, int] = (0, 0)
    native_size: Tuple[int, int] = (0, 0)

    def to_dict(self) -> dict:
        """Everything but the pixels, as JSON-ready data."""
        return {
            "shape": list(self.frames.shape),
            "indices": list(self.indices),
            "timestamps": list(self.timestamps),
            "info": self.info.to_dict(),
            "decoder": self.decoder,
            "read": self.read,
            "seek": self.seek,
            "decode_size": list(self.decode_size),
            "native_size": list(self.native_size),
            "notes": list(self.notes),
            "requested": self.requested,
            "padded": self.padded,
        }


class Deadline:
    """Time budget for one decode: :meth:`check` raises once ``seconds`` have passed without
    :meth:`advance` being called (None or <= 0: no limit). ``progress``: called (at most once a
    second) when work advances, so a watchdog in another process can restart its own clock."""

    def __init__(self, path: str | Path, seconds: Optional[float], progress: Optional[Callable[[], None]] = None) -> None:
        self.path = path
        self.seconds = seconds
        self.limited = seconds is not None and seconds > 0
        self.expires = time.monotonic() + seconds if self.limited else None
        self.progress = progress
        self.reported = time.monotonic()

    def check(self, stage: str) -> None:
        """Raise :class:`VideoDecodeError` when the budget is spent (``stage`` names the step)."""
        if self.expires is not None and time.monotonic() > self.expires:
            raise VideoDecodeError(self.path, f"{stage} made no progress for {self.seconds:g} s (decode timeout)")

    def advance(self, stage: str) -> None:
        """Work advanced: check the budget, then start it again and tell the watchdog."""
        self.check(stage)
        now = time.monotonic()
        if self.limited:
            self.expires = now + self.seconds
        if self.progress is not None and now - self.reported >= 1.0:
            self.reported = now
            self.progress()


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

