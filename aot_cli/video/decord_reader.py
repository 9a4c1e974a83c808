"""decord backend: random access through decord's own index.

decord can return other pictures than the ones asked for without raising (bad seeks in MPEG-TS/PS
and ASF, keyframes instead of the frames after them, black frames for palettised video, another
stream than the one chosen), so its answer is only accepted when its frame count and timestamps
agree with the index and its pictures match an independent PyAV read of a few of the same frames
(see ``decode.check_pictures``). decord always reads FFmpeg's best video stream (its own build's
``av_find_best_stream``), so it is only used where the file has one candidate video stream.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional, Tuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .info import FrameIndex
from .logs import decord_output
from .pyav_reader import frame_array


class DecordRejected(Exception):
    """decord cannot be used for this read, or its answer disagrees with the index or with the
    reference pictures (message says how)."""


def decord_available() -> bool:
    """Whether the optional ``decord`` package can be imported."""
    return importlib.util.find_spec("decord") is not None


def timestamp_tolerance(index: FrameIndex) -> float:
    """Largest accepted gap (s) between decord's and the index's timestamp of one frame: a
    quarter of the shortest frame interval, at least 1 ms."""
    gaps = np.diff(index.timestamps)
    gaps = gaps[gaps > 0]
    shortest = float(gaps.min()) if gaps.size else 0.04
    return max(shortest / 4.0, 1e-3)


def check_timestamps(reader, wanted: List[int], index: FrameIndex) -> None:
    """Raise :class:`DecordRejected` unless decord's start times for ``wanted`` match the index's
    (both taken relative to frame 0, so either clock origin is accepted)."""
    probe_at = [0] + list(wanted)
    starts = np.asarray(reader.get_frame_timestamp(probe_at), dtype=np.float64)[:, 0]
    if not np.all(np.isfinite(starts)):
        raise DecordRejected("decord reports non-finite frame timestamps")
    relative = starts[1:] - starts[0]
    expected = index.timestamps[np.asarray(wanted)]
    gap = np.abs(relative - expected)
    worst = int(np.argmax(gap))
    if gap[worst] > timestamp_tolerance(index):
        raise DecordRejected(
            f"decord puts frame {wanted[worst]} at {relative[worst]:.4f} s, the index at {expected[worst]:.4f} s"
        )


def read_decord(
    path: str | Path, wanted: List[int], index: FrameIndex, width: int, height: int,
    log_level: str = "quiet", size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Frames ``wanted`` (ascending, unique frame numbers) via decord.

    ``width``/``height``: the size decord hands pictures over at (stored, upright); ``size``:
    (height, width) to scale each picture to (None: as handed over; a target size or the display
    aspect of non-square pixels): decord then hands over one native picture at a time and
    FFmpeg's swscale scales it (bicubic, as the PyAV readers do), so native frames are never all
    held. decord converts colour with its own FFmpeg ``scale`` filter, which reads the pictures'
    colour tags as the ffmpeg CLI does. Returns
    uint8 [k, H, W, 3] RGB, upright (decord >= 0.6 applies the rotation metadata itself). Raises
    ImportError when decord is missing, :class:`DecordRejected` when its answer fails validation,
    and whatever decord raises on files it cannot read. decord's own messages are shown according
    to ``log_level`` (see :func:`~.logs.decord_output`).
    """
    import decord

    if not index.has_pts:
        raise DecordRejected("the stream has no timestamps to check decord against")
    out_h, out_w = size if size is not None else (height, width)
    with decord_output(log_level):
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
        needed = wanted[-1] + 1
        if len(reader) < needed:
            raise DecordRejected(f"decord sees {len(reader)} frames, frame {wanted[-1]} is needed")
        check_timestamps(reader, wanted, index)
        if size is None:
            frames = reader.get_batch(wanted).asnumpy()
        else:
            frames = frame_array(len(wanted), out_h, out_w)
            scaler = VideoReformatter()
            for slot, frame in enumerate(wanted):
                picture = av.VideoFrame.from_ndarray(reader.get_batch([frame]).asnumpy()[0], format="rgb24")
                frames[slot] = scaler.reformat(picture, width=out_w, height=out_h, interpolation="BICUBIC").to_ndarray()
    expected_shape = (len(wanted), out_h, out_w, 3)
    if frames.dtype != np.uint8 or tuple(frames.shape) != expected_shape:
        raise DecordRejected(f"decord returned {frames.dtype} {tuple(frames.shape)}, expected uint8 {expected_shape}")
    return np.ascontiguousarray(frames)
