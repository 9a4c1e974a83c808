"""The seeking PyAV reader: each wanted picture from the keyframe before it, decoding no more than it needs.

Frame ``k`` is the k-th picture of a sequential decode of the chosen stream; the probe's
:class:`~.info.FrameIndex` names it by its pts (``pts_ticks[k]``). Wanted frames are grouped by
the keyframe before them (one pass per group of pictures, "GOP"). For each group:

1. Seek to the keyframe: through the container's own index (MP4/MOV sample tables, Matroska cues,
   AVI ``idx1``: ``seek_by == "time"``), or to a byte offset a few packets before its packet,
   which the probe learned by demuxing (MPEG-TS/PS, ASF: ``seek_by == "bytes"``).
2. Feed the packets from the keyframe's own (a seek may land a little earlier: those packets are
   not decoded). The keyframe's packet and the wanted pictures' packets are decoded
   in full; every other packet with FFmpeg's ``skip_frame=NONREF``, so pictures nothing refers to
   are not decoded at all (the least work an exact reader can do: the references of a wanted
   picture are always decoded). After the last wanted packet of the group the decoder is drained,
   so no picture past it is decoded either.
3. Verify, never trust: the picture the seek lands on must be one the decoder itself decodes as a
   keyframe (containers can flag every packet as a keyframe: MP4/3GP without an ``stss`` box);
   every picture that comes out must carry a pts the index lists, in increasing frame order, and
   each wanted picture must come out with exactly its own pts. Anything else (or a decoding error)
   raises :class:`SeekMismatch`, and the caller reads sequentially instead.

Where the index's pts-to-frame mapping rests on assumptions a skipped picture could hide (a stream
the probe found damaged, AVI), nothing is skipped and every picture from the keyframe on must
follow the index exactly, as a sequential decode would give them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import av
import numpy as np

from .info import Deadline, FrameIndex, describe_exception
from .pyav_reader import CHECK_EVERY, Output, SeekMismatch, frame_array, open_stream

#: AVPictureType of an intra picture.
PICTURE_I = 1
#: Picture type letters for messages (AVPictureType order).
PICTURE_TYPES = "?IPBSipb"
#: Packets fed between two timeout checks (few pictures come out while references are decoded).
PACKETS_PER_CHECK = 64
#: Packets a seek may land before the keyframe's own packet (skipped, not decoded): Matroska
#: seeks land on a cue's cluster, byte seeks a few packets early (see ``probe.resync_positions``).
MAX_BEFORE_KEY = 4096


def read_seek(path: str | Path, stream_index: int, wanted: List[int], index: FrameIndex,
              output: Output, deadline: Deadline, threads: Optional[int] = None) -> np.ndarray:
    """Frames ``wanted`` (ascending unique frame numbers) by seeking (see the module docstring);
    only for a ``FrameIndex`` whose ``seek_by`` is set. Returns uint8 [len(wanted), H, W, 3].
    Raises :class:`SeekMismatch` when the decoded pictures do not follow the index or a seek
    lands on a picture the decoder does not decode as a keyframe. ``threads``: cap on decoder
    threads (1 for a read of a few pictures)."""
    ticks = index.pts_ticks
    if ticks is None:
        raise SeekMismatch("the stream has no timestamps")
    frames = frame_array(len(wanted), output.height, output.width)
    slots = {frame: slot for slot, frame in enumerate(wanted)}
    todo = list(wanted)
    first = index.first_picture
    if todo and todo[0] == 0 and first is not None and first.pts is not None and int(first.pts) == int(ticks[0]):
        output.convert(first, frames[0])  # the probe already decoded frame 0
        todo = todo[1:]
    if not todo:
        return frames
    deadline.check("decoding")
    container, stream = open_stream(path, stream_index, index, threads)
    with container:
        reader = GroupReader(container, stream, index, output, deadline)
        for key, group in groups(todo, ticks, index.key_ticks):
            reader.read(key, group, frames, slots)
    return frames


def groups(wanted: List[int], ticks: np.ndarray, keys: Optional[np.ndarray]) -> List[Tuple[Optional[int], List[int]]]:
    """``wanted`` frames grouped by the pts of the keyframe at or before each (None: no keyframe
    before it, decode from the start of the stream), in order."""
    keys = keys if keys is not None else np.zeros(0, dtype=np.int64)
    out: List[Tuple[Optional[int], List[int]]] = []
    for frame in wanted:
        key = keyframe_before(keys, int(ticks[frame]))
        if out and out[-1][0] == key:
            out[-1][1].append(frame)
        else:
            out.append((key, [frame]))
    return out


class GroupReader:
    """Reads groups of wanted frames that share a keyframe from one open ``container``."""

    def __init__(self, container, stream, index: FrameIndex, output: Output, deadline: Deadline) -> None:
        self.container, self.stream, self.index = container, stream, index
        self.output, self.deadline = output, deadline
        self.ticks = index.pts_ticks
        self.order: Dict[int, int] = {int(t): i for i, t in enumerate(self.ticks.tolist())}
        # every picture of an intra-only codec is a keyframe (FFmpeg 7.1 leaves their key flags
        # unset with frame threads)
        self.intra_only = bool(getattr(stream.codec_context.codec, "intra_only", False))
        # the index names pictures by presentation timestamps that a skipped picture cannot shift
        self.skipping = index.skip_safe
        self.decoded = 0
        self.packets = 0
        self.fresh = True  # nothing demuxed yet

    def seek(self, key: Optional[int]) -> None:
        """Position the demuxer on keyframe ``key`` (None: the start of the stream). A fresh
        container is already at the start, before the first keyframe: no seek then."""
        container, index = self.container, self.index
        fresh, self.fresh = self.fresh, False
        first_key = index.key_ticks is not None and index.key_ticks.size and key == int(index.key_ticks[0])
        if fresh and (key is None or first_key):
            return  # a fresh container is at the start: packets before the keyframe are passed over
        if key is None:
            container.seek(0, backward=True, any_frame=False)
            return
        position = -1
        if index.seek_by == "bytes":
            position = int(index.key_positions[int(np.searchsorted(index.key_ticks, key))])
        if position >= 0:
            container.seek(position, unsupported_byte_offset=True)
        else:
            container.seek(key, stream=self.stream, backward=True, any_frame=False)

    def read(self, key: Optional[int], group: List[int], frames: np.ndarray, slots: Dict[int, int]) -> None:
        """Convert every frame of ``group`` (ascending, all after keyframe ``key``) into
        ``frames[slots[frame]]``; :class:`SeekMismatch` when the pictures do not follow the index."""
        ticks, order, context = self.ticks, self.order, self.stream.codec_context
        goals = {int(ticks[frame]): frame for frame in group}
        fed = 0
        start = int(key) if key is not None else min(order)
        landing = key  # the keyframe's picture, until it is checked
        last = -1  # frame number of the last picture that came out
        expected = order[int(key)] if key is not None else 0  # strict mode: the next picture's frame
        done: List[int] = []
        self.seek(key)
        packets = self.container.demux(self.stream)
        waiting = key is not None  # packets before the keyframe's (a seek may land early) are not fed
        passed = 0
        try:
            while len(done) < len(group):
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    raise SeekMismatch(f"demuxing failed after a seek ({describe_exception(exc)[:120]})") from None
                self.packets += 1
                if self.packets % PACKETS_PER_CHECK == 0:
                    self.deadline.advance("decoding")
                if waiting:
                    if packet.size and packet.pts is not None and int(packet.pts) == key and packet.is_keyframe:
                        waiting = False
                    else:
                        passed += 1
                        if passed > MAX_BEFORE_KEY or packet.size == 0:
                            raise SeekMismatch(f"a seek to picture {order[int(key)]} did not reach its packet")
                        continue
                if packet.size == 0:  # end of the stream: drain the decoder
                    pictures = self.decode(None)
                else:
                    pts = None if packet.pts is None else int(packet.pts)
                    needed = pts in goals or pts == key or not self.skipping
                    context.skip_frame = "DEFAULT" if needed else "NONREF"
                    pictures = self.decode(packet)
                    fed += pts in goals
                    if fed == len(goals):  # every wanted picture is in: drain, decode nothing more
                        pictures = pictures + self.decode(None)
                for picture in pictures:
                    if picture.pts is None:
                        raise SeekMismatch("a decoded picture has no timestamp")
                    pts = int(picture.pts)
                    if pts < start:
                        continue  # a leading picture of an open GOP, decoded without its references
                    frame = order.get(pts)
                    if frame is None or frame <= last:
                        raise SeekMismatch(f"after a seek, a picture has pts {pts}, which the index does not "
                                           "list next")
                    if not self.skipping and frame != expected:
                        raise SeekMismatch(f"after a seek, picture {expected} has pts {pts}, the index says "
                                           f"{int(ticks[expected]) if expected < len(ticks) else 'none'}")
                    if landing is not None:
                        if frame != order[int(landing)]:
                            raise SeekMismatch(f"a seek to picture {order[int(landing)]} gave picture {frame} first")
                        if not self.intra_only:
                            check_keyframe(picture, frame)
                        landing = None
                    last, expected = frame, frame + 1
                    if pts in goals and goals[pts] not in done:
                        done.append(goals[pts])
                        self.output.convert(picture, frames[slots[goals[pts]]])
                if fed == len(goals):
                    break
        finally:
            context.skip_frame = "DEFAULT"
        if len(done) < len(group):
            missing = [frame for frame in group if frame not in done]
            raise SeekMismatch(f"the pictures ended before frame {missing[0]}")

    def decode(self, packet) -> list:
        """Decode ``packet`` (None: drain); a decoding error is a mismatch (the caller then reads
        sequentially, which copes with damaged streams)."""
        try:
            pictures = self.stream.decode(packet)
        except av.FFmpegError as exc:
            raise SeekMismatch(f"decoding errors ({describe_exception(exc)[:120]})") from None
        self.decoded += len(pictures)
        if pictures and self.decoded % CHECK_EVERY < len(pictures):
            self.deadline.advance("decoding")
        return pictures


def is_real_keyframe(picture: av.VideoFrame) -> bool:
    """Whether the decoder itself decoded ``picture`` as a keyframe (its key flag, or an intra
    picture: an open-GOP I picture after which decoding is right) rather than taking the
    container's word for it."""
    return bool(picture.key_frame) or int(picture.pict_type or 0) == PICTURE_I


def check_keyframe(picture: av.VideoFrame, frame: int) -> None:
    """Raise :class:`SeekMismatch` unless the picture a seek landed on (frame ``frame``) is a
    real keyframe (:func:`is_real_keyframe`)."""
    if not is_real_keyframe(picture):
        kind = int(picture.pict_type or 0)
        letter = PICTURE_TYPES[kind] if 0 < kind < len(PICTURE_TYPES) else "non-key"
        raise SeekMismatch(f"the container flags picture {frame} as a keyframe, the decoder decodes it as a "
                           f"{letter} picture: keyframe flags cannot be trusted")


def keyframe_before(keys: np.ndarray, target: int) -> Optional[int]:
    """pts of the last keyframe at or before ``target`` (None: none, decode from the start)."""
    position = int(np.searchsorted(keys, target, side="right")) - 1 if keys.size else -1
    return int(keys[position]) if position >= 0 else None
