"""``decode_video``: probe, choose frames, read them with decord or PyAV, turn them upright."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..config import DecodeConfig
from .decord_reader import DecordRejected, decord_available, read_decord
from .info import (
    Deadline,
    DecodedVideo,
    FrameIndex,
    VideoDecodeError,
    VideoInfo,
    apply_rotation,
    describe_exception,
)
from .probe import probe_with_index
from .pyav_reader import read_pyav
from .sampling import FrameSelection, check_decode_config, sample_indices


def decode_video(path: str | Path, cfg: Optional[DecodeConfig] = None, default_frames: int = 32) -> DecodedVideo:
    """Read the frames ``cfg`` asks for from the video at ``path``.

    Returns a :class:`DecodedVideo` whose ``frames`` are torch.uint8 [F, H, W, 3] RGB, upright
    (rotation metadata applied), at the native displayed size. ``cfg.frames`` None means
    ``default_frames``. Raises ValueError for invalid settings and :class:`VideoDecodeError`
    (one line, ``"<path>: <cause>"``) for files that cannot be read.
    """
    cfg = cfg or DecodeConfig()
    check_decode_config(cfg)
    deadline = Deadline(path, cfg.timeout)
    info, index = probe_with_index(path, deadline)
    notes: List[str] = list(index.notes)
    selection = select_frames(path, index.timestamps, info.duration, cfg, default_frames)
    wanted = sorted(set(selection.indices))
    frames, times, decoder, read_notes, info, selection = read_frames(
        path, cfg, info, index, selection, wanted, deadline, default_frames
    )
    notes.extend(read_notes)
    notes.extend(selection.notes)
    slots = np.searchsorted(np.asarray(sorted(set(selection.indices))), np.asarray(selection.indices))
    pixels = torch.from_numpy(np.ascontiguousarray(frames[slots]))
    return DecodedVideo(
        frames=pixels,
        indices=list(selection.indices),
        timestamps=[times[int(s)] for s in slots],
        info=info,
        decoder=decoder,
        notes=notes,
        requested=selection.requested,
        padded=selection.padded,
    )


def select_frames(
    path: str | Path, timestamps: np.ndarray, duration: float, cfg: DecodeConfig, default_frames: int
) -> FrameSelection:
    """:func:`sample_indices`, with "nothing to sample" reported as a :class:`VideoDecodeError`."""
    try:
        return sample_indices(timestamps, duration, cfg, default_frames)
    except ValueError as exc:
        raise VideoDecodeError(path, str(exc)) from None


def read_frames(
    path: str | Path,
    cfg: DecodeConfig,
    info: VideoInfo,
    index: FrameIndex,
    selection: FrameSelection,
    wanted: List[int],
    deadline: Deadline,
    default_frames: int,
) -> Tuple[np.ndarray, List[float], str, List[str], VideoInfo, FrameSelection]:
    """Read ``wanted`` with the configured decoder.

    Returns (uint8 [k, H, W, 3] upright RGB, seconds per wanted frame, decoder name,
    notes, info, selection); info and selection change only when PyAV finds fewer decodable
    frames than demuxing counted, in which case the frames are sampled again over those.
    """
    notes: List[str] = []
    if cfg.decoder in ("auto", "decord"):
        reason = decord_unsuitable(info, index) if cfg.decoder == "auto" else None
        if reason is None:
            try:
                frames, times = read_decord(path, wanted, index, info.width, info.height)
                deadline.check("decoding")
                return frames, times, "decord", notes, info, selection
            except ImportError:
                reason = "decord is not installed"
            except VideoDecodeError:
                raise
            except DecordRejected as exc:
                reason = str(exc)
            except Exception as exc:  # decord raises its own DECORDError and RuntimeError
                reason = f"decord failed ({describe_exception(exc)})"
        if cfg.decoder == "decord":
            raise VideoDecodeError(path, reason)
        notes.append(f"used PyAV: {reason}")
    frames, times, read_notes, info, selection = read_with_pyav(
        path, cfg, info, index, selection, wanted, deadline, default_frames
    )
    return apply_rotation(frames, info.rotation), times, "pyav", notes + read_notes, info, selection


def decord_unsuitable(info: VideoInfo, index: FrameIndex) -> Optional[str]:
    """Why "auto" should not try decord on this file (None: try it). decord trusts headers and
    timestamps, so files whose header count is wrong or whose packets have no pts go to PyAV."""
    if not decord_available():
        return "decord is not installed"
    if not index.has_pts:
        return "the stream has no timestamps"
    header = info.num_frames_header
    if header is not None and header != index.packets:
        return f"the header's frame count ({header}) does not match the file ({index.packets} packets)"
    return None


def read_with_pyav(
    path: str | Path,
    cfg: DecodeConfig,
    info: VideoInfo,
    index: FrameIndex,
    selection: FrameSelection,
    wanted: List[int],
    deadline: Deadline,
    default_frames: int,
) -> Tuple[np.ndarray, List[float], List[str], VideoInfo, FrameSelection]:
    """PyAV read of ``wanted``; when the decoder yields fewer pictures than demuxing counted,
    sample again over the pictures it did yield and read once more."""
    result = read_pyav(path, wanted, index, deadline)
    if result.complete:
        return result.frames, result.timestamps, result.notes, info, selection
    decodable = result.decoded
    if decodable < 1:
        raise VideoDecodeError(path, f"none of the {info.num_frames} demuxed frames could be decoded")
    notes = result.notes + [
        f"only {decodable} of the {info.num_frames} demuxed frames decode; sampled over those"
    ]
    shorter = index.trimmed(decodable)
    duration = float(shorter.timestamps[-1]) + frame_interval(shorter, info.fps)
    selection = select_frames(path, shorter.timestamps, duration, cfg, default_frames)
    wanted = sorted(set(selection.indices))
    retry = read_pyav(path, wanted, shorter, deadline)
    if not retry.complete:
        raise VideoDecodeError(path, f"the decoder stopped after {retry.decoded} frames on a second pass")
    info = dataclasses.replace(info, num_frames=decodable, duration=duration)
    return retry.frames, retry.timestamps, notes + retry.notes, info, selection


def frame_interval(index: FrameIndex, fps: float) -> float:
    """Typical seconds per frame: the median timestamp step, else ``1/fps``, else 0."""
    steps = np.diff(index.timestamps)
    if steps.size:
        return float(np.median(steps))
    return 1.0 / fps if fps > 0 else 0.0
