"""PyAV backend: decode the stream front to back, keep only the wanted frames, stop after the
last one. Works for every format FFmpeg can demux, including files whose headers lie and
streams with undecodable pictures."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional

import av
import numpy as np

from .info import Deadline, FrameIndex, describe_exception
from .probe import open_container, pick_video_stream

#: Frames between two timeout checks while decoding.
CHECK_EVERY = 32


@dataclass
class PyAVRead:
    """Frames read by :func:`read_pyav`.

    ``frames``: uint8 [k, H, W, 3] RGB in stored orientation, one per wanted index (only valid
    when ``complete``). ``timestamps``: seconds per frame relative to the first frame.
    ``decoded``: display-order number of the last picture reached, plus one; ``complete``:
    every wanted index was filled. ``notes``: remarks (decode errors, held or rescaled frames).
    """

    frames: np.ndarray
    timestamps: List[float]
    decoded: int
    complete: bool
    notes: List[str] = field(default_factory=list)


def decoded_pictures(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, errors: List[str]
) -> Iterator[av.VideoFrame]:
    """Every picture of ``stream`` in display order; packets the decoder rejects are skipped and
    a demuxing error ends the stream (after flushing the decoder); error texts are appended to
    ``errors``."""
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


class WantedFrames:
    """Collects the wanted frames (ascending display-order numbers) while pictures stream past.

    A wanted frame the decoder never produced (a dropped, undecodable picture) is filled with
    the picture shown before it, as a player would keep it on screen; ``held`` counts those.
    """

    def __init__(self, wanted: List[int], index: FrameIndex) -> None:
        self.wanted = wanted
        self.index = index
        self.width, self.height = index.stored_width, index.stored_height
        self.frames = np.empty((len(wanted), self.height, self.width, 3), dtype=np.uint8)
        self.times: List[float] = [0.0] * len(wanted)
        self.next_slot = 0
        self.held = 0
        self.resized = 0
        self.previous: Optional[av.VideoFrame] = None

    @property
    def done(self) -> bool:
        return self.next_slot == len(self.wanted)

    def offer(self, picture: av.VideoFrame, ordinal: int) -> None:
        """Take ``picture`` (display-order number ``ordinal``) if wanted; fill wanted frames
        that were skipped over with the previous picture (or this one when there is none)."""
        while not self.done and self.wanted[self.next_slot] < ordinal:
            frame = self.wanted[self.next_slot]
            self.store(self.previous if self.previous is not None else picture, float(self.index.timestamps[frame]))
            self.held += 1
        if not self.done and self.wanted[self.next_slot] == ordinal:
            self.store(picture, picture_time(picture, ordinal, self.index))
        self.previous = picture

    def store(self, picture: av.VideoFrame, seconds: float) -> None:
        """Convert ``picture`` to RGB at the stored size into the next slot."""
        if picture.width != self.width or picture.height != self.height:
            self.resized += 1
        slot = self.next_slot
        self.frames[slot] = picture.to_ndarray(format="rgb24", width=self.width, height=self.height)
        self.times[slot] = seconds
        self.next_slot += 1

    def notes(self) -> List[str]:
        notes = []
        if self.held:
            notes.append(f"{self.held} wanted frame(s) did not decode; the frame shown before each is used")
        if self.resized:
            notes.append(f"{self.resized} frame(s) had another size and were rescaled to {self.width}x{self.height}")
        return notes


def read_pyav(path: str | Path, wanted: List[int], index: FrameIndex, deadline: Deadline) -> PyAVRead:
    """Decode ``path`` sequentially and keep the frames whose display-order number is in
    ``wanted`` (ascending, unique), stopping after the last one. A picture's number comes from
    its pts (looked up in the demuxed timeline) when the stream has timestamps, so pictures the
    decoder drops do not shift the numbering; otherwise pictures are counted. Pictures are
    converted to RGB at the stored size ``index.stored_width`` x ``index.stored_height``."""
    ordinal_of = index.ordinal_lookup()
    collector = WantedFrames(wanted, index)
    errors: List[str] = []
    next_ordinal = 0
    with open_container(path) as container:
        stream = pick_video_stream(container, path)
        stream.thread_type = "AUTO"
        for count, picture in enumerate(decoded_pictures(container, stream, errors), start=1):
            ordinal = next_ordinal
            if picture.pts is not None:
                mapped = ordinal_of.get(int(picture.pts))
                if mapped is not None and mapped >= next_ordinal:
                    ordinal = mapped
            collector.offer(picture, ordinal)
            next_ordinal = ordinal + 1
            if collector.done:
                break
            if count % CHECK_EVERY == 0:
                deadline.check("decoding")
    notes = collector.notes()
    if errors:
        notes.insert(0, f"PyAV met {len(errors)} decoding error(s), first: {errors[0][:120]}")
    return PyAVRead(collector.frames, collector.times, next_ordinal, collector.done, notes)


def picture_time(picture: av.VideoFrame, ordinal: int, index: FrameIndex) -> float:
    """Seconds of ``picture`` relative to the first frame: from its pts when the stream has
    timestamps, else from the demuxed timeline."""
    if index.has_pts and picture.pts is not None:
        return index.seconds(picture.pts)
    if ordinal < index.num_frames:
        return float(index.timestamps[ordinal])
    return float(index.timestamps[-1])
