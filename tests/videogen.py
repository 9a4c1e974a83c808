"""Generate small test videos (and broken non-videos) with PyAV.

Every generated frame shows its own index as 8 large black/white cells (2 rows x 4 columns,
bit 0 top-left, row-major), which survives lossy codecs and chroma subsampling: decode a frame
with :func:`read_index` to learn which frame came back. The cell layout is not symmetric, so a
frame turned the wrong way reads as a different index (or has the wrong shape).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import av
import numpy as np

from mp4rotation import set_display_rotation

CELL_ROWS, CELL_COLS = 2, 4
DARK, LIGHT = 32, 224
#: Audio codec and sample rate by container extension (when ``audio=True``).
AUDIO_BY_EXT: Dict[str, Tuple[str, int]] = {
    ".webm": ("libopus", 48000),
    ".mkv": ("libopus", 48000),
    ".mpg": ("mp2", 44100),
    ".avi": ("mp2", 44100),
}
DEFAULT_AUDIO = ("aac", 16000)
#: Frame durations, in units of 1/(2*fps), cycled through for variable-frame-rate videos.
VFR_PATTERN = (1, 3, 2)


@dataclass
class MadeVideo:
    """What :func:`make_video` wrote: ``n`` frames, displayed ``width`` x ``height``,
    ``timestamps`` the presentation times (s) written, ``rotation`` clockwise degrees."""

    path: Path
    n: int
    fps: float
    width: int
    height: int
    rotation: int = 0
    timestamps: List[float] = field(default_factory=list)


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build can encode with ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return False
    return True


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3] picture showing ``index`` (modulo 256) as 8 bit cells."""
    image = np.full((height, width, 3), DARK, dtype=np.uint8)
    for bit in range(CELL_ROWS * CELL_COLS):
        if (index >> bit) & 1:
            row, col = divmod(bit, CELL_COLS)
            y0, y1 = row * height // CELL_ROWS, (row + 1) * height // CELL_ROWS
            x0, x1 = col * width // CELL_COLS, (col + 1) * width // CELL_COLS
            image[y0:y1, x0:x1] = LIGHT
    return image


def read_index(frame: np.ndarray) -> int:
    """The index shown by a decoded [H, W, 3] frame made from :func:`frame_pattern`
    (each cell's central half is averaged, so codec ringing at the edges does not matter)."""
    frame = np.asarray(frame)
    height, width = frame.shape[:2]
    value = 0
    for bit in range(CELL_ROWS * CELL_COLS):
        row, col = divmod(bit, CELL_COLS)
        y0, y1 = row * height // CELL_ROWS, (row + 1) * height // CELL_ROWS
        x0, x1 = col * width // CELL_COLS, (col + 1) * width // CELL_COLS
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        cell = frame[y0 + dy : y1 - dy, x0 + dx : x1 - dx]
        if float(cell.mean()) > (DARK + LIGHT) / 2:
            value |= 1 << bit
    return value


def frame_times(n: int, fps: float, vfr: bool) -> Tuple[List[int], Fraction]:
    """Presentation times of ``n`` frames as (ticks, time base): ``i/fps`` for constant rate,
    or durations cycling through :data:`VFR_PATTERN` (mean rate ``fps``) for variable rate."""
    if not vfr:
        return list(range(n)), 1 / Fraction(fps).limit_denominator(1001)
    ticks, t = [], 0
    for i in range(n):
        ticks.append(t)
        t += VFR_PATTERN[i % len(VFR_PATTERN)]
    return ticks, 1 / (2 * Fraction(fps).limit_denominator(1001))


def add_audio_stream(container: av.container.OutputContainer, path: Path) -> av.audio.stream.AudioStream:
    """Add a mono audio stream to an output container (codec chosen from the extension); must be
    called before anything is muxed."""
    codec, rate = AUDIO_BY_EXT.get(path.suffix.lower(), DEFAULT_AUDIO)
    stream = container.add_stream(codec, rate=rate)
    stream.layout = "mono"
    return stream


def write_silence(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    """Encode and mux ``seconds`` of silence on ``stream``."""
    rate = stream.codec_context.sample_rate
    chunk = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format.name
    for start in range(0, int(seconds * rate) + chunk, chunk):
        samples = np.zeros((1, chunk), dtype=av.audio.frame.format_dtypes[fmt])
        frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts, frame.time_base = start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_video(
    path: str | Path,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    n: int = 16,
    fps: float = 10,
    size: Tuple[int, int] = (64, 48),
    audio: bool = False,
    rotation: Optional[int] = None,
    vfr: bool = False,
    fmt: Optional[str] = None,
    options: Optional[Dict[str, str]] = None,
    codec_options: Optional[Dict[str, str]] = None,
    gop: Optional[int] = None,
) -> MadeVideo:
    """Write ``n`` frames showing their index (:func:`frame_pattern`) to ``path``.

    ``size``: displayed (width, height). ``rotation``: clockwise degrees (90/180/270) a player
    must turn the stored pictures, written as a display matrix; the pictures are stored turned
    the other way, so a correct decoder shows :func:`frame_pattern` upright. ``vfr``: frame
    durations vary (see :data:`VFR_PATTERN`). ``fmt``: container format (default: from the
    extension). ``options``: muxer options (e.g. ``{"movflags": "faststart"}``); ``codec_options``:
    encoder options (e.g. ``{"bf": "3"}``); ``gop``: keyframe interval in frames.
    """
    path = Path(path)
    width, height = size
    turn = (rotation or 0) % 360
    stored_w, stored_h = (height, width) if turn in (90, 270) else (width, height)
    ticks, time_base = frame_times(n, fps, vfr)
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.codec_context.time_base = time_base
        if turn and hasattr(stream, "set_display_rotation"):  # PyAV >= 16
            stream.set_display_rotation(-turn)
        sound = add_audio_stream(container, path) if audio else None
        for i, tick in enumerate(ticks):
            stored = np.ascontiguousarray(np.rot90(frame_pattern(i, width, height), k=turn // 90))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts, frame.time_base = tick, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if sound is not None:
            write_silence(container, sound, float(n / fps))
    if turn and not hasattr(stream, "set_display_rotation"):  # PyAV 15 (lmms-eval's av<16)
        set_display_rotation(path, turn)
    times = [float(t * time_base) for t in ticks]
    return MadeVideo(path, n, float(fps), width, height, turn, times)


def make_truncated(src: str | Path, dst: str | Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dst`` (a cut-off download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def make_lying_avi(src: str | Path, dst: str | Path, claimed: int) -> Path:
    """Copy AVI ``src`` to ``dst`` with every header frame count (``avih`` total frames, the
    video ``strh`` length, OpenDML ``dmlh``) set to ``claimed``; the frames stay as they were."""
    data = bytearray(Path(src).read_bytes())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, claimed)
    strh = data.find(b"strh")
    while strh >= 0 and data[strh + 8 : strh + 12] != b"vids":
        strh = data.find(b"strh", strh + 4)
    if avih < 0 or strh < 0:
        raise ValueError(f"{src}: not an AVI with a video stream header")
    struct.pack_into("<I", data, strh + 8 + 32, claimed)
    dmlh = data.find(b"dmlh")
    if dmlh >= 0:
        struct.pack_into("<I", data, dmlh + 8, claimed)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def make_random_bytes(path: str | Path, size: int = 4096, seed: int = 0) -> Path:
    """``size`` pseudo-random bytes (a file no demuxer recognises)."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return Path(path)


def make_text_file(path: str | Path) -> Path:
    """A plain text file (FFmpeg's ``tty`` demuxer would show it as ANSI-art 'video')."""
    Path(path).write_text("This is not a video.\n" * 40, encoding="utf-8")
    return Path(path)


def make_zero_bytes(path: str | Path) -> Path:
    """An empty file."""
    Path(path).write_bytes(b"")
    return Path(path)


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """A file with an audio stream and no video stream (codec chosen from the extension)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        write_silence(container, add_audio_stream(container, path), seconds)
    return path



# ------------------------------------------------------------------ containers that fool seeking

def pattern_frame(index: int, width: int, height: int, flip: bool = False) -> av.VideoFrame:
    """:func:`frame_pattern` as an RGB VideoFrame (``flip``: the negative, turned upside down)."""
    image = frame_pattern(index, width, height)
    if flip:
        image = np.ascontiguousarray(255 - image[::-1])
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def make_two_streams(path: str | Path, n: int = 24, fps: float = 10, size: Tuple[int, int] = (64, 48)) -> Path:
    """An MP4 with two video streams of the same size and rate but different pictures: stream 0
    is busy (noise added, the higher bit rate), stream 1 is the flipped negative of the pattern
    and the only one flagged default, so FFmpeg's best-stream rule picks stream 1 while a rule
    by bit rate (or "the first one") picks stream 0."""
    path = Path(path)
    width, height = size
    rng = np.random.default_rng(0)
    time_base = 1 / Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        busy = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "10"})
        plain = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "40"})
        for stream in (busy, plain):
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = time_base
            stream.codec_context.gop_size = 6
        busy.disposition = 0  # ints work on PyAV 15 and 16+
        plain.disposition = av.stream.Disposition.default.value
        for i in range(n):
            noisy = frame_pattern(i, width, height).astype(np.int16) + rng.integers(-20, 21, (height, width, 3))
            frames = [av.VideoFrame.from_ndarray(np.clip(noisy, 0, 255).astype(np.uint8), format="rgb24"),
                      pattern_frame(i, width, height, flip=True)]
            for stream, frame in zip((busy, plain), frames):
                frame.pts, frame.time_base = i, time_base
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in (busy, plain):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def make_pal8_avi(path: str | Path, n: int = 12, fps: float = 10, size: Tuple[int, int] = (64, 48)) -> Path:
    """Raw palettised (pal8) video in AVI: a palette of 256 colours, pictures of
    :func:`frame_pattern` drawn with palette entries 40 (dark grey) and 200 (light grey)."""
    path = Path(path)
    width, height = size
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255  # alpha (ARGB)
    palette[:, 1] = np.arange(256)  # red
    palette[:, 2] = 255 - np.arange(256)  # green
    palette[:, 3] = (np.arange(256) * 7) % 256  # blue
    palette[40, 1:] = DARK
    palette[200, 1:] = LIGHT
    time_base = 1 / Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        for i in range(n):
            bits = frame_pattern(i, width, height)[:, :, 0] > (DARK + LIGHT) // 2
            indices = np.where(bits, 200, 40).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray((indices, palette), format="pal8")
            frame.pts, frame.time_base = i, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_mjpeg_mkv_duplicate_times(path: str | Path, n: int = 20, fps: float = 10,
                                   size: Tuple[int, int] = (64, 48)) -> Path:
    """MJPEG in Matroska where some pictures repeat the timestamp of the one before (every 4th
    picture from picture 3 on), as some capture tools write."""
    path = Path(path)
    width, height = size
    step = int(1000 / fps)
    ticks, tick = [], 0
    for i in range(n):
        if i and not (i >= 3 and (i - 3) % 4 == 0):
            tick += step
        ticks.append(tick)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i in range(n):
            frame = pattern_frame(i, width, height)
            frame.pts, frame.time_base = i, 1 / Fraction(fps).limit_denominator(1001)
            for packet in stream.encode(frame):  # intra-only: one packet per picture, in order
                packet.pts = packet.dts = ticks[int(packet.pts)]
                packet.time_base = Fraction(1, 1000)
                container.mux(packet)
        for packet in stream.encode(None):
            packet.pts = packet.dts = ticks[int(packet.pts)]
            packet.time_base = Fraction(1, 1000)
            container.mux(packet)
    return path


def make_joined_ts(path: str | Path, folder: str | Path, n: int = 24, codec: str = "libx264") -> Path:
    """Two MPEG-TS files joined byte for byte (``cat a.ts b.ts``): the second piece's timestamps
    start again from the beginning. The pieces show pictures 0..n-1 and n..2n-1."""
    folder = Path(folder)
    first = make_video(folder / "piece_a.ts", codec=codec, n=n, gop=8, fmt="mpegts").path
    second = folder / "piece_b.ts"
    width, height = 64, 48
    time_base = Fraction(1, 10)
    with av.open(str(second), "w", format="mpegts") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = 8
        for i in range(n):
            frame = pattern_frame(n + i, width, height)
            frame.pts, frame.time_base = i, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    Path(path).write_bytes(first.read_bytes() + second.read_bytes())
    return Path(path)
