"""``decode_video``: probe, choose frames, read them, turn them upright.

The guarantee: frame ``k`` is the k-th picture of a plain sequential FFmpeg decode of the chosen
stream, whatever the container, and its recorded timestamp is that picture's (never going back).
How each read is made to keep it:

1. Probe (:func:`~.probe.probe_with_index`): choose the stream (FFmpeg's best video stream or
   ``--stream``), demux every packet and predict the picture timeline (pieces of a restarting
   timeline laid end to end).
2. Where the timestamps are unique and continuous and the container can be sought
   (``FrameIndex.seek_by``: MP4/MOV, Matroska/WebM and AVI through their index, MPEG-TS/PS and ASF
   by the byte offsets of the keyframe packets): the seeking reader (:mod:`.seek_reader`), which
   decodes only what the wanted pictures depend on and checks every picture against the index.
3. Elsewhere (GIF, raw streams, missing or restarting timestamps...), or when a seek gives other
   pictures: a sequential PyAV read that counts pictures, converts only the wanted ones, and checks
   the pictures' own timeline against the prediction; when they differ the frames are sampled again
   over the decoded pictures (a second pass) and a note says so.

``cfg.seek == "keyframe"`` replaces each sampled frame by the keyframe at or before it before
reading (:func:`keyframe_selection`); the frames read are then exactly those keyframes. The file's
sha256 is computed in a thread while decoding when the caller does not pass it.

``decoder="decord"`` reads with decord instead, and keeps its answer only when its count and
timestamps agree with the index and its pictures match a PyAV read of the same frames
(:func:`check_pictures`: two frames where the index can be trusted, every frame elsewhere);
otherwise it fails in one line. ``decoder="auto"`` is PyAV: measured on the sample clips, the
seeking PyAV read is as fast as decord or faster (benchmarks/RESULTS.md), and needs no check.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from ..config import DecodeConfig
from .colour import ColourRule
from .decord_reader import DecordRejected, decord_available, read_decord, timestamp_tolerance
from .digest import BackgroundSha256
from .formats import undecodable_cause
from .info import (
    Deadline,
    DecodedVideo,
    FrameIndex,
    VideoDecodeError,
    VideoInfo,
    apply_rotation,
    describe_exception,
)
from .logs import decoder_logging
from .probe import measured_rate, probe_with_index
from .pyav_reader import Output, SeekMismatch, read_sequential
from .seek_reader import read_seek
from .sampling import FrameSelection, check_decode_config, sample_indices
from .timeline import continuous_timeline

#: What a target size can be: (height, width), or a function of the displayed (height, width)
#: giving it (e.g. ``ImageSpec.resized_size``).
TargetSize = Union[Tuple[int, int], Callable[[int, int], Tuple[int, int]]]
#: Largest mean absolute difference (0..255 scale) between a picture from decord and the same
#: frame read by PyAV for decord's answer to be accepted.
PICTURE_TOLERANCE = 3.0
#: Frames are decoded at this many times the target size (then resized by the consumer): on a 4K
#: clip with DINOv2-S that keeps tokens within cosine 0.9995 (mean 0.99995) of the native path
#: (benchmarks/RESULTS.md, "Decoding at the tower's size").
OVERSAMPLE = 2.0


def decode_video(
    path: str | Path,
    cfg: Optional[DecodeConfig] = None,
    default_frames: int = 32,
    *,
    target_size: Optional[TargetSize] = None,
    sha256: Optional[str] = None,
    progress: Optional[Callable[[], None]] = None,
) -> DecodedVideo:
    """Read the frames ``cfg`` asks for from the video at ``path``.

    Returns a :class:`DecodedVideo` whose ``frames`` are torch.uint8 [F, H, W, 3] RGB, upright
    (rotation metadata applied); frame ``j`` is picture ``indices[j]`` of a sequential FFmpeg
    decode of the chosen stream (``info.stream_index``). ``cfg.frames`` None means
    ``default_frames``.

    ``target_size``: the size the consumer will resize frames to, as (height, width) or a function
    of the displayed (height, width) (e.g. ``ImageSpec.resized_size``). FFmpeg then scales each
    picture (antialiased bicubic) while converting it, to :func:`decode_size` (twice the target,
    aspect kept, never larger than native); native-size RGB frames are never held. None
    (default): native size. ``sha256``: the file's hash when the caller has it
    (saves hashing it again). ``progress``: called about once a second while work advances.

    Raises ValueError for invalid settings and :class:`VideoDecodeError` (one line,
    ``"<path>: <cause>"``) for files that cannot be read, files FFmpeg cannot decode, a bad
    ``cfg.stream``, and videos over ``cfg.frame_limit`` frames or ``cfg.pixel_limit`` pixels.
    """
    cfg = cfg or DecodeConfig()
    check_decode_config(cfg)
    if cfg.fps is None:
        count = int(cfg.frames) if cfg.frames is not None else int(default_frames)
        if count > cfg.frame_limit:
            raise VideoDecodeError(path, f"{count} frames asked for, over the frame limit of {cfg.frame_limit} "
                                         "(--frame-limit); ask for fewer or raise --frame-limit")
    deadline = Deadline(path, cfg.timeout, progress)
    # hash while decoding (the file is read by both; hashlib and FFmpeg release the GIL)
    hasher = BackgroundSha256(path) if sha256 is None and Path(path).is_file() else None
    try:
        with decoder_logging(cfg.decoder_log):
            info, index = probe_with_index(path, deadline, stream=cfg.stream,
                                           sha256=sha256 if hasher is None else "", pixel_limit=cfg.pixel_limit)
            size = decode_size(info.height, info.width, target_size)
            output = output_for(info, index, size)
            selection = select_frames(path, index.timestamps, info.duration, cfg, default_frames)
            if cfg.seek == "keyframe":
                selection = keyframe_selection(selection, index)
            read = read_frames(path, cfg, info, index, selection, output, size, deadline, default_frames)
        if hasher is not None:
            try:
                read.info = dataclasses.replace(read.info, sha256=hasher.result())
            except OSError as exc:
                raise VideoDecodeError(path, f"cannot be read ({describe_exception(exc)})") from None
    finally:
        if hasher is not None:
            hasher.cancel()
    notes: List[str] = [note for note in index.notes if not (read.resampled and note in index.timeline_notes)]
    for note in read.notes + read.selection.notes:
        if note not in notes:
            notes.append(note)
    selection = read.selection
    unique = np.asarray(sorted(set(selection.indices)))
    slots = np.searchsorted(unique, np.asarray(selection.indices))
    pixels = torch.from_numpy(np.ascontiguousarray(read.frames))  # no copy: the readers' frame_array
    if len(slots) != len(unique):  # repeats (padding, keyframe mode): torch's allocator, as frame_array
        pixels = pixels.index_select(0, torch.from_numpy(slots.astype(np.int64)))
    return DecodedVideo(
        frames=pixels,
        indices=list(selection.indices),
        timestamps=[float(read.times[int(s)]) for s in slots],
        info=read.info,
        decoder=read.decoder,
        notes=notes,
        requested=selection.requested,
        padded=selection.padded,
        read=read.mode,
        seek=cfg.seek,
        decode_size=(int(pixels.shape[1]), int(pixels.shape[2])),
        native_size=(info.height, info.width),
    )


def decode_size(height: int, width: int, target: Optional[TargetSize]) -> Tuple[int, int]:
    """(height, width) to decode a ``height x width`` (displayed) video at for ``target``.

    The aspect-preserving size whose sides are at least :data:`OVERSAMPLE` times the target's
    (never above native), so the consumer's own resize still does the last step from a picture
    with detail to spare. When ``target`` is a function, the size is nudged by a pixel or two so
    that ``target(decoded) == target(native)`` (the consumer resizes to the same geometry as from
    the native frames); if no such size is near, frames stay native.
    """
    if target is None:
        return height, width
    wanted = target(height, width) if callable(target) else target
    th, tw = int(wanted[0]), int(wanted[1])
    if th < 1 or tw < 1:
        raise ValueError(f"target size must be positive, got {th}x{tw}")
    scale = OVERSAMPLE * max(th / height, tw / width)
    if scale >= 1.0:
        return height, width
    base_h = min(height, math.ceil(height * scale - 1e-9))
    base_w = min(width, math.ceil(width * scale - 1e-9))
    if not callable(target):
        return base_h, base_w
    for dh in (0, 1, -1, 2, -2):
        for dw in (0, 1, -1, 2, -2):
            h, w = base_h + dh, base_w + dw
            if th <= h <= height and tw <= w <= width and tuple(target(h, w)) == (th, tw):
                return h, w
    return height, width


def output_for(info: VideoInfo, index: FrameIndex, size: Tuple[int, int]) -> Output:
    """How PyAV converts pictures for a displayed ``size`` (height, width): stored orientation
    (the sample aspect ratio applied by the scaling), the stream's colour conversion, swscale's
    bicubic filter (it widens with the scale factor when shrinking, so it averages like an
    antialiased resize)."""
    height, width = size
    if info.rotation in (90, 270):
        height, width = width, height
    return Output(width=width, height=height, colour=index.colour or ColourRule())


def keyframe_selection(selection: FrameSelection, index: FrameIndex) -> FrameSelection:
    """``--seek keyframe``: each selected frame replaced by the keyframe at or before it (frame 0
    when none is), so one keyframe decode per frame reads it; repeats are kept (two frames of one
    group of pictures give the same keyframe twice). The keyframes are the container's: flags
    that lie only cost speed, the pictures read are still exactly those frames. Without unique,
    increasing timestamps to place keyframes, the frames stay as selected (with a note)."""
    ticks, keys = index.pts_ticks, index.key_ticks
    if ticks is None or keys is None or not keys.size or np.any(np.diff(ticks) <= 0):
        return dataclasses.replace(selection, notes=selection.notes + [
            "--seek keyframe: the stream's timestamps do not place its keyframes (missing, repeated or "
            "restarting); the exact frames were read"])
    key_frames = np.searchsorted(ticks, keys)  # keyframes' frame numbers (ticks are sorted)
    key_frames = key_frames[(key_frames < len(ticks)) & (ticks[np.minimum(key_frames, len(ticks) - 1)] == keys)]
    key_frames = np.unique(key_frames)
    chosen = []
    for frame in selection.indices:
        at = int(np.searchsorted(key_frames, frame, side="right")) - 1
        chosen.append(int(key_frames[at]) if at >= 0 else 0)
    moved = sum(a != b for a, b in zip(chosen, selection.indices))
    repeats = len(chosen) - len(set(chosen))
    note = (f"--seek keyframe: {moved} of {len(chosen)} frames replaced by the keyframe before them"
            + (f" ({repeats} repeated)" if repeats else ""))
    return FrameSelection(chosen, selection.requested, selection.padded, selection.notes + [note])


def select_frames(
    path: str | Path, timestamps: np.ndarray, duration: float, cfg: DecodeConfig, default_frames: int
) -> FrameSelection:
    """:func:`sample_indices`, with "nothing to sample" and selections over ``cfg.frame_limit``
    reported as :class:`VideoDecodeError`."""
    try:
        selection = sample_indices(timestamps, duration, cfg, default_frames)
    except ValueError as exc:
        raise VideoDecodeError(path, str(exc)) from None
    if len(selection.indices) > cfg.frame_limit:
        raise VideoDecodeError(path, f"{cfg.fps:g} fps gives {len(selection.indices)} frames, over the frame limit "
                                     f"of {cfg.frame_limit} (--frame-limit); set --max-frames, lower --fps or "
                                     "raise --frame-limit")
    return selection


@dataclass
class Read:
    """Frames read for the unique wanted frame numbers: ``frames`` uint8 [k, H, W, 3] upright,
    ``times`` seconds per frame, the ``decoder`` ("decord"/"pyav") and ``mode`` ("decord",
    "seek", "sequential") used, ``notes``; ``info``/``selection`` change when the decoded
    pictures differ from the prediction and the frames were sampled again."""

    frames: np.ndarray
    times: List[float]
    decoder: str
    mode: str
    info: VideoInfo
    selection: FrameSelection
    notes: List[str] = field(default_factory=list)
    resampled: bool = False


def read_frames(
    path: str | Path,
    cfg: DecodeConfig,
    info: VideoInfo,
    index: FrameIndex,
    selection: FrameSelection,
    output: Output,
    size: Tuple[int, int],
    deadline: Deadline,
    default_frames: int,
) -> Read:
    """Read the selected frames with the configured decoder (see the module docstring)."""
    wanted = sorted(set(selection.indices))
    times = [float(index.timestamps[i]) for i in wanted]
    notes: List[str] = []
    if cfg.decoder == "decord":
        return Read(read_checked_decord(path, cfg, info, index, wanted, output, size, deadline), times,
                    "decord", "decord", info, selection, notes)
    if index.seek_by is not None:
        try:
            frames = read_seek(path, info.stream_index, wanted, index, output, deadline)
            return Read(apply_rotation(frames, info.rotation), times, "pyav", "seek", info, selection, notes)
        except SeekMismatch as exc:
            notes.append(f"read sequentially: seeking gave other pictures than the index ({exc})")
    return read_in_order(path, cfg, info, index, selection, output, deadline, default_frames, notes)


def read_checked_decord(path: str | Path, cfg: DecodeConfig, info: VideoInfo, index: FrameIndex,
                        wanted: List[int], output: Output, size: Tuple[int, int], deadline: Deadline) -> np.ndarray:
    """``--decoder decord``: decord's frames ``wanted`` (uint8 [k, H, W, 3], upright) when its count,
    timestamps and pictures check out (:func:`check_pictures`); else one-line :class:`VideoDecodeError`."""
    if not decord_available():
        raise VideoDecodeError(path, "decord is not installed (pip install 'aot-cli[decord]')")
    if info.stream_index != index.best_stream:
        raise VideoDecodeError(path, f"decord always reads FFmpeg's best video stream ({index.best_stream}), "
                                     f"not stream {info.stream_index}; use --decoder pyav")
    try:
        stored = (index.stored_height, index.stored_width)
        upright = stored[::-1] if info.rotation in (90, 270) else stored  # what decord hands over
        frames = read_decord(path, wanted, index, upright[1], upright[0], cfg.decoder_log,
                             None if size == upright else size)
        check_pictures(path, frames, wanted, info, index, output, deadline)
    except VideoDecodeError:
        raise
    except DecordRejected as exc:
        raise VideoDecodeError(path, f"decord cannot give the right frames: {exc}") from None
    except Exception as exc:  # decord raises its own DECORDError and RuntimeError
        raise VideoDecodeError(path, f"decord cannot give the right frames: decord failed "
                                     f"({describe_exception(exc)})") from None
    deadline.check("decoding")
    return frames


def verification_frames(wanted: List[int], index: FrameIndex) -> List[int]:
    """The ``wanted`` frames to check a decoder's pictures on. On seekable streams two, cheap to
    read with PyAV: the first, and the one fewest pictures after its keyframe among those that
    need a seek, preferring one that is not a keyframe itself (a bad seek shows there). Elsewhere
    decord's frame numbering cannot be trusted anywhere (repeated or missing timestamps shift
    it), so every wanted frame is checked."""
    chosen = [wanted[0]]
    rest = wanted[1:]
    if index.seekable is not None:
        return list(wanted)
    if not rest:
        return chosen
    if index.pts_ticks is None or index.key_ticks is None or not index.key_ticks.size:
        return chosen + [rest[0]]
    key_frames = np.searchsorted(index.pts_ticks, index.key_ticks)  # keyframes' frame numbers (sorted pts)
    best = None
    for frame in rest:
        position = int(np.searchsorted(key_frames, frame, side="right")) - 1
        key = int(key_frames[position]) if position >= 0 else 0
        if key == 0:
            continue
        cost = (frame == key, frame - key)
        if best is None or cost < best[0]:
            best = (cost, frame)
    return chosen + [best[1] if best is not None else rest[0]]


def check_pictures(path: str | Path, frames: np.ndarray, wanted: List[int], info: VideoInfo,
                   index: FrameIndex, output: Output, deadline: Deadline) -> None:
    """Raise :class:`DecordRejected` unless decord's pictures (``frames``, upright, one per
    ``wanted``) match a PyAV read of the same frames (a keyframe-accurate read where the index
    allows it, else sequential) on :func:`verification_frames`: mean absolute difference at most
    :data:`PICTURE_TOLERANCE` per frame."""
    check = verification_frames(wanted, index)
    references = {}
    first = index.first_picture
    if check[0] == 0 and first is not None and index.pts_ticks is not None and first.pts is not None \
            and int(first.pts) == int(index.pts_ticks[0]):  # the probe already decoded frame 0
        references[0] = output.convert(first)
    rest = [frame for frame in check if frame not in references]
    try:
        if rest and index.seek_by is not None:
            read = read_seek(path, info.stream_index, rest, index, output, deadline, threads=1)
            references.update(zip(rest, read))
        elif rest:
            seq = read_sequential(path, info.stream_index, rest, index, output, deadline, stop_at=rest[-1])
            if not seq.has_all(rest):
                raise DecordRejected(f"the stream has only {seq.count} pictures, frame {rest[-1]} was asked for")
            references.update(zip(rest, seq.frames))
    except SeekMismatch as exc:
        raise DecordRejected(f"no reference read to check decord against ({exc})") from None
    for frame in check:
        reference = apply_rotation(references[frame][None], info.rotation)[0]
        got = frames[wanted.index(frame)]
        if got.shape != reference.shape:
            raise DecordRejected(f"decord's frame {frame} is {got.shape}, PyAV's {reference.shape}")
        difference = float(np.abs(got.astype(np.int16) - reference.astype(np.int16)).mean())
        if difference > PICTURE_TOLERANCE:
            raise DecordRejected(f"decord's frame {frame} is another picture than a sequential FFmpeg decode's "
                                 f"(mean absolute difference {difference:.1f} of 255)")


def read_in_order(
    path: str | Path,
    cfg: DecodeConfig,
    info: VideoInfo,
    index: FrameIndex,
    selection: FrameSelection,
    output: Output,
    deadline: Deadline,
    default_frames: int,
    notes: List[str],
) -> Read:
    """Sequential read; the pictures' own timeline must match the predicted one, else the frames
    are sampled again over the decoded pictures and read in a second pass."""
    wanted = sorted(set(selection.indices))
    stop_after = float(cfg.end) if cfg.end is not None else None
    seq = read_sequential(path, info.stream_index, wanted, index, output, deadline, stop_after=stop_after)
    notes = notes + seq.notes()
    if seq.count == 0:
        raise VideoDecodeError(path, undecodable_cause(path, info.codec, seq.errors[0] if seq.errors else None))
    timeline = continuous_timeline(seq.seconds, index.fps, index.discontinuity)
    if matches(timeline.seconds, index, seq.finished) and seq.has_all(wanted):
        times = [float(timeline.seconds[i]) for i in wanted]
        return Read(apply_rotation(seq.frames, info.rotation), times, "pyav", "sequential", info, selection, notes)
    seen = seq.count
    duration = float(timeline.seconds[-1]) + timeline.interval
    notes = notes + timeline.notes
    notes.append(f"the decoder gave {seen} pictures{'' if seq.finished else ' (up to the end of the span)'} "
                 f"where demuxing predicted {index.num_frames}"
                 + (" with other timestamps" if seen == index.num_frames else "")
                 + "; frames sampled over the decoded pictures")
    selection = select_frames(path, timeline.seconds, duration, cfg, default_frames)
    again = sorted(set(selection.indices))
    retry = read_sequential(path, info.stream_index, again, index, output, deadline, stop_after=stop_after)
    if not retry.has_all(again) or retry.count < seen and seq.finished:
        raise VideoDecodeError(path, f"the decoder gave {retry.count} pictures on a second pass, {seen} on the first")
    if seq.finished:
        info = dataclasses.replace(info, num_frames=seen, duration=duration,
                                   fps=measured_rate(timeline.seconds, index.fps))
    times = [float(timeline.seconds[i]) for i in again]
    return Read(apply_rotation(retry.frames, info.rotation), times, "pyav", "sequential", info, selection, notes,
                resampled=True)


def matches(seconds: np.ndarray, index: FrameIndex, finished: bool) -> bool:
    """Whether the decoded pictures' timeline agrees with the predicted one (the same count when
    the whole stream was decoded, else a prefix; times within :func:`timestamp_tolerance`)."""
    predicted = index.timestamps
    count = int(seconds.shape[0])
    if count > predicted.shape[0] or (finished and count != predicted.shape[0]):
        return False
    return bool(np.all(np.abs(seconds - predicted[:count]) <= timestamp_tolerance(index)))
