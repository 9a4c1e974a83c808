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


# ------------------------------------------------------------------ colour, aspect, lying keyframes

#: RGB of the flat patches the colour test pictures are made of (3 columns x 2 rows): saturated
#: enough that converting with the wrong matrix or range moves them by several levels.
COLOUR_PATCHES = ((200, 40, 40), (40, 180, 60), (50, 60, 210), (220, 210, 40), (128, 128, 128), (30, 30, 30))
PATCH_COLS, PATCH_ROWS = 3, 2


def patch_box(slot: int, width: int, height: int, inner: float = 0.5) -> Tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the central ``inner`` part of patch ``slot`` in a ``width x height``
    picture (away from the edges, where chroma subsampling and scaling blur the colours)."""
    row, col = divmod(slot, PATCH_COLS)
    y0, y1 = row * height // PATCH_ROWS, (row + 1) * height // PATCH_ROWS
    x0, x1 = col * width // PATCH_COLS, (col + 1) * width // PATCH_COLS
    dy, dx = int((y1 - y0) * (1 - inner) / 2), int((x1 - x0) * (1 - inner) / 2)
    return y0 + dy, y1 - dy, x0 + dx, x1 - dx


def colour_pattern(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3]: the :data:`COLOUR_PATCHES` as a 3x2 grid, rotated by
    ``index`` places (so consecutive pictures differ)."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    for slot in range(PATCH_COLS * PATCH_ROWS):
        row, col = divmod(slot, PATCH_COLS)
        y0, y1 = row * height // PATCH_ROWS, (row + 1) * height // PATCH_ROWS
        x0, x1 = col * width // PATCH_COLS, (col + 1) * width // PATCH_COLS
        image[y0:y1, x0:x1] = COLOUR_PATCHES[(slot + index) % len(COLOUR_PATCHES)]
    return image


def make_colour_video(path: str | Path, codec: str, pix_fmt: str, n: int = 4, size: Tuple[int, int] = (96, 64),
                      colorspace: Optional[int] = None, color_range: Optional[int] = None,
                      primaries: Optional[int] = None, transfer: Optional[int] = None, fmt: Optional[str] = None,
                      codec_options: Optional[Dict[str, str]] = None, sar: Optional[Fraction] = None,
                      pattern=colour_pattern, gop: Optional[int] = None) -> Path:
    """``n`` pictures of ``pattern`` (default :func:`colour_pattern`) encoded with ``codec`` in
    ``pix_fmt``, the stream tagged with AVColorSpace ``colorspace``, AVColorRange ``color_range``,
    AVColorPrimaries ``primaries``, AVColorTransferCharacteristic ``transfer`` (None: untagged)
    and sample aspect ratio ``sar``; ``size``: stored (width, height)."""
    path = Path(path)
    width, height = size
    rate = Fraction(10)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        context = stream.codec_context
        context.time_base = 1 / rate
        if gop is not None:
            context.gop_size = gop
        for name, value in (("colorspace", colorspace), ("color_range", color_range),
                            ("color_primaries", primaries), ("color_trc", transfer)):
            if value is not None:
                setattr(context, name, value)
        if sar is not None:
            context.sample_aspect_ratio = Fraction(sar)
        for i in range(n):
            rgb = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            frame = rgb.reformat(format=pix_fmt)
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def set_prores_header_tags(path: str | Path, primaries: int = 2, transfer: int = 2, matrix: int = 2) -> int:
    """Rewrite the colour tags of every ProRes frame header in ``path`` (the container's own tags
    stay): as the Debian ffmpeg 5.1 ``prores_ks`` writes them, unspecified while the MOV ``colr``
    box says BT.709. Returns the number of headers changed."""
    data = bytearray(Path(path).read_bytes())
    count, at = 0, data.find(b"icpf")
    while at >= 0:
        data[at + 18: at + 21] = bytes((primaries, transfer, matrix))  # header bytes 14-16
        count += 1
        at = data.find(b"icpf", at + 4)
    Path(path).write_bytes(bytes(data))
    return count


def remux_all_keyframes(src: str | Path, dst: str | Path) -> Path:
    """Copy the video stream of ``src`` to ``dst`` with every packet flagged as a keyframe. In
    MP4/MOV/3GP the muxer then writes no ``stss`` box (every sample is a sync sample), exactly
    what mp4v2 writes (momo0853/mp4v2#128): FFmpeg takes every packet for a keyframe."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        video_in = source.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        for packet in source.demux(video_in):
            if packet.size == 0:
                continue
            packet.is_keyframe = True
            packet.stream = video_out
            out.mux(packet)
    return Path(dst)


def yuv_planes(frame: av.VideoFrame) -> List[np.ndarray]:
    """The planes of a planar YUV (or grey) ``frame`` as float64 arrays of sample values."""
    planes = []
    wide = frame.format.components[0].bits > 8
    for plane in frame.planes:
        dtype = np.uint16 if wide else np.uint8
        row = plane.line_size // np.dtype(dtype).itemsize
        data = np.frombuffer(bytes(plane), dtype=dtype).reshape(-1, row)[: plane.height, : plane.width]
        planes.append(data.astype(np.float64))
    return planes


#: Luma weights (Kr, Kb) of the YUV matrices, ITU-R BT.601 / BT.709 / BT.2020, FCC, SMPTE 240M.
MATRIX_WEIGHTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020nc": (0.2627, 0.0593),
                  "fcc": (0.30, 0.11), "smpte240m": (0.212, 0.087)}


def reference_rgb(y: float, cb: float, cr: float, bits: int, matrix: str, full: bool) -> np.ndarray:
    """RGB (0..255 floats) of one YUV sample with the standard equations (ITU-R BT.601/709/2020):
    an independent reference for the decoder's conversion."""
    kr, kb = MATRIX_WEIGHTS[matrix]
    scale = float(1 << (bits - 8))
    if full:
        top = float((1 << bits) - 1)
        luma, u, v = y / top, (cb - 128 * scale) / top, (cr - 128 * scale) / top
    else:
        luma, u, v = (y - 16 * scale) / (219 * scale), (cb - 128 * scale) / (224 * scale), (cr - 128 * scale) / (224 * scale)
    r = luma + 2 * (1 - kr) * v
    b = luma + 2 * (1 - kb) * u
    g = (luma - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.array([r, g, b]) * 255.0, 0, 255)


def patch_references(frame: av.VideoFrame, matrix: str, full: bool, width: int, height: int) -> np.ndarray:
    """[patches, 3] RGB each colour patch of a decoded :func:`colour_pattern` picture should
    have, from the means of its decoded Y/Cb/Cr samples (``width x height``: the picture's size)."""
    planes = yuv_planes(frame)
    bits = frame.format.components[0].bits
    out = []
    for slot in range(PATCH_COLS * PATCH_ROWS):
        y0, y1, x0, x1 = patch_box(slot, width, height)
        luma = planes[0][y0:y1, x0:x1].mean()
        if len(planes) >= 3:
            sy, sx = height // planes[1].shape[0], width // planes[1].shape[1]
            cb = planes[1][y0 // sy: y1 // sy, x0 // sx: x1 // sx].mean()
            cr = planes[2][y0 // sy: y1 // sy, x0 // sx: x1 // sx].mean()
        else:  # grey: no chroma
            cb = cr = 128.0 * (1 << (bits - 8))
        out.append(reference_rgb(luma, cb, cr, bits, matrix, full))
    return np.asarray(out)


def patch_means(rgb: np.ndarray) -> np.ndarray:
    """[patches, 3] mean RGB of each colour patch of a decoded picture (uint8 [H, W, 3])."""
    height, width = rgb.shape[:2]
    means = []
    for slot in range(PATCH_COLS * PATCH_ROWS):
        y0, y1, x0, x1 = patch_box(slot, width, height)
        means.append(rgb[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64).mean(0))
    return np.asarray(means)
