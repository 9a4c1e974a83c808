"""decord backend: random access through decord's own index, validated against the demuxed
timeline. decord can return wrong frames without raising (bad seeks in MPEG-PS, garbage
timestamps, a frame count taken from a lying header), so its answer is only accepted when its
frame count, per-frame timestamps and array shape agree with what demuxing found."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Tuple

import numpy as np

from .info import FrameIndex


class DecordRejected(Exception):
    """decord ran but its answer disagrees with the demuxed timeline (message says how)."""


def decord_available() -> bool:
    """Whether the optional ``decord`` package can be imported."""
    return importlib.util.find_spec("decord") is not None


def timestamp_tolerance(index: FrameIndex) -> float:
    """Largest accepted gap (s) between decord's and the demuxed timestamp of one frame: a
    quarter of the shortest frame interval, at least 1 ms."""
    gaps = np.diff(index.timestamps)
    gaps = gaps[gaps > 0]
    shortest = float(gaps.min()) if gaps.size else 0.04
    return max(shortest / 4.0, 1e-3)


def check_timestamps(reader, wanted: List[int], index: FrameIndex) -> None:
    """Raise :class:`DecordRejected` unless decord's start times for ``wanted`` match the demuxed
    ones (both taken relative to frame 0, so either clock origin is accepted)."""
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
            f"decord puts frame {wanted[worst]} at {relative[worst]:.4f} s, demuxing at {expected[worst]:.4f} s"
        )


def read_decord(
    path: str | Path, wanted: List[int], index: FrameIndex, width: int, height: int
) -> Tuple[np.ndarray, List[float]]:
    """Frames ``wanted`` (ascending, unique display-order numbers) via decord.

    ``width``/``height``: the displayed size. Returns (uint8 [k, height, width, 3] RGB, upright:
    decord >= 0.6 applies the rotation metadata itself, seconds per frame relative to the first
    frame). Raises ImportError when decord is missing, :class:`DecordRejected` when its
    answer fails validation, and whatever decord raises on files it cannot read.
    """
    import decord

    if not index.has_pts:
        raise DecordRejected("the stream has no timestamps to check decord against")
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
    needed = wanted[-1] + 1
    if len(reader) < needed:
        raise DecordRejected(f"decord sees {len(reader)} frames, frame {wanted[-1]} is needed")
    check_timestamps(reader, wanted, index)
    frames = reader.get_batch(wanted).asnumpy()
    # decord >= 0.6 turns frames upright itself (from the rotate tag / display matrix).
    expected_shape = (len(wanted), height, width, 3)
    if frames.dtype != np.uint8 or tuple(frames.shape) != expected_shape:
        raise DecordRejected(f"decord returned {frames.dtype} {tuple(frames.shape)}, expected uint8 {expected_shape}")
    times = [float(index.timestamps[i]) for i in wanted]
    return np.ascontiguousarray(frames), times
