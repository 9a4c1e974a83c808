"""PyAV readers. Frame ``k`` is the k-th picture of a sequential decode of the chosen stream.

- :func:`read_sequential` decodes the stream front to back, counts pictures and converts only the
  wanted ones to RGB. It works for every format FFmpeg can demux and is the reference the others
  are held to; it also returns every picture's timestamp, so the caller can check the timeline
  that sampling used.
- the seeking reader (:mod:`.seek_reader`) builds on :class:`Output` and :func:`open_stream`;
  when its pictures do not follow the index it raises :class:`SeekMismatch`, and the caller
  reads sequentially instead.

Pictures are converted by FFmpeg's swscale straight to the output size (``Output``), so frames are
never held at native resolution when a smaller size is asked for, with the colour matrix and range
the ffmpeg CLI would use (:mod:`.colour`) and swscale's bicubic filter (the CLI's default flags).

Frame-threaded decoding loses the pictures still in flight when the decoder reports an error
while PyAV collects the last pictures (a truncated download: 68 of 70 pictures with two threads,
fewer with more; PyAV >= 17 does not even raise the error), so streams the probe found damaged
(packets the demuxer flags as corrupt, as the cut-off last packet of a partial download, or a
demuxing error) are decoded with one thread, and a read that met decoding errors with frame
threads is done again with one thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from .colour import ColourRule
from .info import Deadline, FrameIndex, describe_exception
from .probe import choose_stream, configure_decoder, open_container

#: Pictures between two timeout checks / progress reports while decoding.
CHECK_EVERY = 32
#: FFmpeg's FF_THREAD_FRAME bit of a thread type (PyAV ``ThreadType``: FRAME 1, SLICE 2, AUTO 3).
FRAME_THREADS = 1


@dataclass(frozen=True)
class Output:
    """How decoded pictures become arrays: RGB24 at ``width`` x ``height`` (stored orientation,
    sample aspect ratio applied when the size says so), converted by swscale with the matrix and
    range ``colour`` gives each picture (the ffmpeg CLI's, :mod:`.colour`) and ``interpolation``
    (bicubic: the ffmpeg CLI's own swscale flags, antialiasing when shrinking). One reformatter
    serves every picture, so swscale's context is set up once per read, not once per picture."""

    width: int
    height: int
    interpolation: str = "BICUBIC"
    colour: ColourRule = field(default_factory=ColourRule, compare=False, repr=False)
    reformatter: VideoReformatter = field(default_factory=VideoReformatter, compare=False, repr=False)

    def convert(self, picture: av.VideoFrame, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 [height, width, 3] RGB of ``picture``, written into ``out`` when given (else a
        new array)."""
        rgb = self.reformatter.reformat(picture, width=self.width, height=self.height, format="rgb24",
                                        interpolation=self.interpolation, **self.colour.reformat_args(picture))
        if out is None:
            return np.array(rgb.to_ndarray(), copy=True)
        out[...] = rgb.to_ndarray()
        return out


def frame_array(count: int, height: int, width: int) -> np.ndarray:
    """An uninitialised uint8 [count, height, width, 3] array for decoded RGB frames, in memory
    from torch's allocator (the caller hands it on as a tensor without a copy).

    Not ``np.empty``: numpy asks the kernel for transparent huge pages on arrays of 4 MB and more
    (``madvise``), and where the kernel compacts memory on such a fault (``defrag=madvise``, the
    usual default) the first touch of a fresh frame buffer can stall on compaction: 12-154 ms for
    32 frames of 1366x768 here, against a steady 52 ms with ordinary pages (benchmarks/RESULTS.md,
    ``--seek keyframe``)."""
    return torch.empty((count, height, width, 3), dtype=torch.uint8).numpy()


class SeekMismatch(Exception):
    """Seeking gave other pictures than the index predicts (message says how)."""


def open_stream(path: str | Path, stream_index: int, index: FrameIndex, threads: Optional[int] = None):
    """(container, stream) ready to decode stream ``stream_index`` of ``path`` (``threads``: see
    :func:`~.probe.configure_decoder`; one thread for a stream the probe found damaged)."""
    container = open_container(path)
    try:
        stream = choose_stream(container, path, stream_index)
        configure_decoder(stream, index.stored_width, index.stored_height, 1 if index.damaged else threads)
    except BaseException:
        container.close()
        raise
    return container, stream


def decoded_pictures(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, errors: List[str]
) -> Iterator[av.VideoFrame]:
    """Every picture of ``stream`` in decode-output order; packets the decoder rejects are
    skipped and a demuxing error ends the stream (after flushing the decoder); error texts are
    appended to ``errors``."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            errors.append(describe_exception(exc))
            packet = None  # flush what the decoder still holds, then stop
        try:
            pictures = stream.decode(packet)
        except av.FFmpegError as exc:
            errors.append(describe_exception(exc))
            pictures = []
        yield from pictures
        if packet is None:
            return


@dataclass
class SequentialRead:
    """What :func:`read_sequential` found. ``frames``: uint8 [len(wanted), H, W, 3] (rows of
    wanted pictures past ``count`` are unset). ``seconds``: every decoded picture's pts in
    seconds (None where missing), in decode-output order. ``count``: pictures decoded;
    ``finished``: the end of the stream was reached. ``resized``: pictures of another size than
    the first, rescaled to the output size."""

    frames: np.ndarray
    seconds: List[Optional[float]]
    count: int
    finished: bool
    errors: List[str] = field(default_factory=list)
    resized: int = 0
    threaded: bool = False

    def has_all(self, wanted: List[int]) -> bool:
        return not wanted or wanted[-1] < self.count

    def notes(self) -> List[str]:
        notes = []
        if self.errors:
            notes.append(f"PyAV met {len(self.errors)} decoding error(s), first: {self.errors[0][:120]}")
        if self.resized:
            notes.append(f"{self.resized} picture(s) had another size and were rescaled")
        return notes


def read_sequential(path: str | Path, stream_index: int, wanted: List[int], index: FrameIndex,
                    output: Output, deadline: Deadline, stop_after: Optional[float] = None,
                    stop_at: Optional[int] = None) -> SequentialRead:
    """Decode stream ``stream_index`` of ``path`` front to back; picture ``k`` (counted) is frame
    ``k``. ``wanted``: ascending unique frame numbers to convert. Decoding goes on to the end of
    the stream (so the picture count is known), unless ``stop_after`` (s, in the pictures' own
    clock, relative to the first) is given: then it stops once every wanted picture is in and a
    picture at or past that time was seen; or ``stop_at``: it stops after picture ``stop_at``.
    A read with frame threads that met decoding errors is done again with one thread (see the
    module docstring)."""
    read = sequential_pass(path, stream_index, wanted, index, output, deadline, stop_after, stop_at, None)
    if read.errors and read.threaded:
        read = sequential_pass(path, stream_index, wanted, index, output, deadline, stop_after, stop_at, 1)
    return read


def frame_threaded(stream: av.video.stream.VideoStream) -> bool:
    """Whether ``stream``'s decoder was set up to decode several pictures at once."""
    return int(stream.codec_context.thread_count or 0) > 1 and bool(getattr(stream.thread_type, "value", stream.thread_type) & FRAME_THREADS)


def sequential_pass(path: str | Path, stream_index: int, wanted: List[int], index: FrameIndex, output: Output,
                    deadline: Deadline, stop_after: Optional[float], stop_at: Optional[int],
                    threads: Optional[int]) -> SequentialRead:
    """One front-to-back pass of :func:`read_sequential` with at most ``threads`` decoder threads."""
    frames = frame_array(len(wanted), output.height, output.width)
    seconds: List[Optional[float]] = []
    errors: List[str] = []
    slot = 0
    resized = 0
    finished = True
    first: Optional[float] = None
    deadline.check("decoding")
    container, stream = open_stream(path, stream_index, index, threads)
    threaded = frame_threaded(stream)
    with container:
        time_base = stream.time_base
        for count, picture in enumerate(decoded_pictures(container, stream, errors)):
            t = float(picture.pts * time_base) if picture.pts is not None and time_base is not None else None
            seconds.append(t)
            if first is None and t is not None:
                first = t
            if slot < len(wanted) and wanted[slot] == count:
                if picture.width != index.stored_width or picture.height != index.stored_height:
                    resized += 1
                output.convert(picture, frames[slot])
                slot += 1
            if (count + 1) % CHECK_EVERY == 0:
                deadline.advance("decoding")
            if (stop_after is not None and slot == len(wanted) and t is not None and first is not None
                    and t - first >= stop_after) or (stop_at is not None and count >= stop_at):
                finished = False
                break
    return SequentialRead(frames, seconds, len(seconds), finished, errors, resized, threaded)
