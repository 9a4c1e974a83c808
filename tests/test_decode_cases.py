"""Frames you can trust: every frame ``decode_video`` returns is the picture a plain sequential FFmpeg
decode of the chosen stream yields at that index, whatever the container; timestamps never go back.

Files: the decoding cases in tests/data/decode-cases/ (see samples/NOTICE.md) and generated files of
every kind that fools seeking decoders (MPEG-TS/PS, M2TS, ASF, two video streams, pal8 AVI, B-frames
in AVI, duplicated timestamps in MKV, joined TS, GIF), plus the stream choice, the frame and pixel
limits, decoder log quietness and decoding at a target size.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from aot_cli.config import DecodeConfig
from aot_cli.video import (
    VIDEO_EXTENSIONS,
    DecodedVideo,
    VideoDecodeError,
    check_decode_config,
    decode_size,
    decode_video,
    probe_video,
)
from aot_cli.video.timeline import continuous_timeline, display_order
from videogen import (
    encoder_available,
    make_joined_ts,
    make_mjpeg_mkv_duplicate_times,
    make_pal8_avi,
    make_two_streams,
    make_video,
    read_index,
)

ROOT = Path(__file__).parent.parent
CASES = Path(__file__).parent / "data" / "decode-cases"
BIG = Path(__file__).parent / "data" / "flat_8192x8192.mp4"
HAS_DECORD = importlib.util.find_spec("decord") is not None
DECODERS = ["auto", "pyav"] + (["decord"] if HAS_DECORD else [])
TOLERANCE = 3.0  # mean absolute difference, 0..255


def sequential_pictures(path: Path, stream: int) -> list:
    """The reference: every picture of a plain sequential PyAV decode of ``stream``, as RGB, at
    its display aspect (stored width times the stream's sample aspect ratio, rounded down, resized by Pillow)."""
    from PIL import Image

    with av.open(str(path)) as container:
        chosen = container.streams[stream]
        sar = chosen.sample_aspect_ratio
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(chosen)]
    if not sar or sar == 1:
        return pictures
    height, width = pictures[0].shape[:2]
    shown = (int(width * sar), height)
    return [np.asarray(Image.fromarray(p).resize(shown, Image.BICUBIC)) for p in pictures]


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_sequential_pictures(video: DecodedVideo, path: Path) -> None:
    """Each returned frame is the reference picture its index names; times never go back."""
    reference = sequential_pictures(path, video.info.stream_index)
    assert video.info.num_frames == len(reference)
    assert video.indices == sorted(video.indices) and video.indices[-1] < len(reference)
    turns = -(video.info.rotation // 90)
    for frame, index in zip(video.frames.numpy(), video.indices):
        picture = np.rot90(reference[index], k=turns)
        assert frame.shape == picture.shape
        assert mad(frame, picture) <= TOLERANCE, (path.name, index)
    times = np.asarray(video.timestamps)
    assert times[0] >= 0 and np.all(np.diff(times) >= 0), video.timestamps
    assert len(times) == len(video.indices)


def decode_or_refuse(path: Path, decoder: str, **cfg) -> DecodedVideo | None:
    """decode_video; decord may refuse a file (one line naming decord) instead of giving other pictures."""
    try:
        return decode_video(path, DecodeConfig(decoder=decoder, **cfg))
    except VideoDecodeError as exc:
        if decoder != "decord":
            raise
        assert "\n" not in str(exc) and str(exc).startswith(f"{path}: ") and "decord" in str(exc)
        return None


# ------------------------------------------------------------------------------ the shipped cases

CASE_FILES = sorted(p.name for p in CASES.iterdir() if p.suffix != ".webp")


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", CASE_FILES)
def test_case_files_give_the_sequential_pictures(name: str, decoder: str) -> None:
    path = CASES / name
    video = decode_or_refuse(path, decoder, frames=8)
    if video is None:
        return
    assert_sequential_pictures(video, path)
    assert video.frames.float().std() > 5  # real pictures, not blank buffers


def test_case_defaults_agree_with_pyav_and_record_the_stream() -> None:
    for name in CASE_FILES:
        path = CASES / name
        default = decode_video(path, DecodeConfig(frames=6))
        by_pyav = decode_video(path, DecodeConfig(frames=6, decoder="pyav"))
        assert default.indices == by_pyav.indices
        assert default.timestamps == pytest.approx(by_pyav.timestamps, abs=1e-6)
        assert max(mad(a, b) for a, b in zip(default.frames.numpy(), by_pyav.frames.numpy())) <= TOLERANCE
        assert default.to_dict()["info"]["stream_index"] == default.info.stream_index


def test_joined_ts_keeps_both_halves_in_file_order() -> None:
    path = CASES / "ts_cat_pts_reset.ts"
    video = decode_video(path, DecodeConfig(frames=100))
    assert video.indices == list(range(100))  # every picture once, in file order
    assert video.info.duration == pytest.approx(4.0, abs=0.05)  # two 2 s pieces, not 2 s
    assert np.all(np.diff(video.timestamps) > 0)
    assert any("restart" in note for note in video.notes)


def test_avi_with_bframes_has_increasing_times() -> None:
    video = decode_video(CASES / "avi_h264_bframes.avi", DecodeConfig(frames=100, decoder="pyav"))
    assert video.timestamps == pytest.approx([i / 25 for i in range(100)], abs=1e-6)


def test_two_streams_use_ffmpegs_best_stream() -> None:
    video = decode_video(CASES / "two_streams_second_default.mp4", DecodeConfig(frames=4))
    assert video.info.stream_index == 1  # flagged default
    assert probe_video(CASES / "two_streams_second_default.mp4").stream_index == 1


def test_animated_webp_says_ffmpeg_cannot_decode_it() -> None:
    path = CASES / "anim.webp"
    for decoder in DECODERS:
        with pytest.raises(VideoDecodeError) as excinfo:
            decode_video(path, DecodeConfig(decoder=decoder))
        message = str(excinfo.value)
        assert message.startswith(f"{path}: FFmpeg cannot decode it") and "\n" not in message
        assert "animated WebP" in message and "'webp'" in message


# --------------------------------------------------------------------------- generated, per kind


def _kind(folder: Path, kind: str) -> Path:
    """Write a file of ``kind`` into ``folder``; 48 frames with 8-frame GOPs where it matters, so a
    decoder that seeks must land inside GOPs."""
    long = dict(n=48, gop=8)
    if kind == "h264.ts":
        return make_video(folder / kind, codec="libx264", fmt="mpegts", **long).path
    if kind == "mpeg2.ts":
        return make_video(folder / kind, codec="mpeg2video", fmt="mpegts", codec_options={"bf": "2"}, **long).path
    if kind == "h264.m2ts":
        return make_video(folder / kind, codec="libx264", fmt="mpegts", options={"mpegts_m2ts_mode": "1"}, **long).path
    if kind == "mpeg2.mpg":
        return make_video(folder / kind, codec="mpeg2video", fmt="vob", codec_options={"bf": "2"}, **long).path
    if kind == "wmv2.asf":  # 100 frames in 12-frame GOPs: enough for decord's ASF seeks to land wrong
        return make_video(folder / kind, codec="wmv2", fmt="asf", n=100, gop=12).path
    if kind == "two_streams.mp4":
        return make_two_streams(folder / kind)
    if kind == "pal8.avi":
        return make_pal8_avi(folder / kind)
    if kind == "bframes.avi":
        return make_video(folder / kind, codec="libx264", codec_options={"bf": "3"}, **long).path
    if kind == "duplicate_times.mkv":
        return make_mjpeg_mkv_duplicate_times(folder / kind)
    if kind == "joined.ts":
        return make_joined_ts(folder / kind, folder)
    if kind == "anim.gif":
        return make_video(folder / kind, codec="gif", pix_fmt="rgb8", n=20).path
    raise ValueError(kind)


KINDS = ["h264.ts", "mpeg2.ts", "h264.m2ts", "mpeg2.mpg", "wmv2.asf", "two_streams.mp4", "pal8.avi",
         "bframes.avi", "duplicate_times.mkv", "joined.ts", "anim.gif"]
ENCODER = {"mpeg2.ts": "mpeg2video", "mpeg2.mpg": "mpeg2video", "wmv2.asf": "wmv2", "duplicate_times.mkv": "mjpeg",
           "anim.gif": "gif", "pal8.avi": "rawvideo"}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("kinds")
    cache: dict = {}

    def get(kind: str) -> Path:
        codec = ENCODER.get(kind, "libx264")
        if not encoder_available(codec):
            pytest.skip(f"this PyAV build has no '{codec}' encoder")
        if kind not in cache:
            cache[kind] = _kind(folder, kind)
        return cache[kind]

    return get


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_the_sequential_pictures(kinds, kind: str, decoder: str) -> None:
    path = kinds(kind)
    video = decode_or_refuse(path, decoder, frames=9)
    if video is None:
        return
    assert_sequential_pictures(video, path)
    if kind != "two_streams.mp4":
        # the pictures show their own number: each returned frame is the one its index names
        assert [read_index(f) for f in video.frames.numpy()] == video.indices


def test_generated_two_streams_read_the_default_stream(kinds) -> None:
    path = kinds("two_streams.mp4")
    video = decode_video(path, DecodeConfig(frames=5))
    assert video.info.stream_index == 1
    flipped = [read_index(np.ascontiguousarray(255 - f[::-1])) for f in video.frames.numpy()]
    assert flipped == video.indices  # stream 1 holds the flipped negatives
    with av.open(str(path)) as container:
        assert container.streams[0].bit_rate > container.streams[1].bit_rate  # not chosen by bit rate


def test_duplicate_timestamps_keep_the_picture_count(kinds) -> None:
    path = kinds("duplicate_times.mkv")
    video = decode_video(path, DecodeConfig(frames=20))
    assert video.indices == list(range(20)) and [read_index(f) for f in video.frames.numpy()] == list(range(20))
    assert np.all(np.diff(video.timestamps) >= 0)


def test_joined_ts_generated_continues_the_timeline(kinds) -> None:
    path = kinds("joined.ts")
    video = decode_video(path, DecodeConfig(frames=48))
    assert [read_index(f) for f in video.frames.numpy()] == list(range(48))
    assert video.timestamps == pytest.approx([i / 10 for i in range(48)], abs=1e-6)
    assert video.info.duration == pytest.approx(4.8, abs=1e-6)


def test_gif_decodes_like_a_video_and_is_scanned(kinds) -> None:
    path = kinds("anim.gif")
    video = decode_video(path, DecodeConfig(frames=5))
    assert video.info.codec == "gif" and video.info.num_frames == 20
    assert ".gif" in VIDEO_EXTENSIONS
    today = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv",
             ".wmv", ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".264", ".hevc"}
    assert today <= VIDEO_EXTENSIONS and ".png" not in VIDEO_EXTENSIONS


def test_generated_animated_webp_error(tmp_path: Path) -> None:
    if not encoder_available("libwebp_anim"):
        pytest.skip("no libwebp_anim encoder")
    path = make_video(tmp_path / "a.webp", codec="libwebp_anim", pix_fmt="yuv420p", n=6, fmt="webp").path
    with pytest.raises(VideoDecodeError, match="FFmpeg cannot decode it: animated WebP"):
        decode_video(path)


@pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
def test_decord_and_pyav_give_the_same_pictures_where_decord_is_used(kinds) -> None:
    for path in [ROOT / "samples" / "bikes.mp4", kinds("wmv2.asf"), CASES / "two_streams_second_default.mp4"]:
        by_decord = decode_or_refuse(path, "decord", frames=10)
        by_pyav = decode_video(path, DecodeConfig(frames=10, decoder="pyav"))
        if by_decord is not None:
            assert by_decord.decoder == "decord" and by_decord.indices == by_pyav.indices
            assert max(mad(a, b) for a, b in zip(by_decord.frames.numpy(), by_pyav.frames.numpy())) <= TOLERANCE


@pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
def test_decord_black_frames_are_caught(kinds) -> None:
    # decord returns black pictures for palettised AVI: the picture check refuses them
    path = kinds("pal8.avi")
    with pytest.raises(VideoDecodeError, match="another picture"):
        decode_video(path, DecodeConfig(frames=4, decoder="decord"))


# ----------------------------------------------------------------------------------- --stream


def test_stream_flag_chooses_the_stream(kinds) -> None:
    path = kinds("two_streams.mp4")
    first = decode_video(path, DecodeConfig(frames=5, stream=0))
    assert first.info.stream_index == 0
    assert_sequential_pictures(first, path)
    second = decode_video(path, DecodeConfig(frames=5, stream=1))
    assert mad(first.frames.numpy(), second.frames.numpy()) > 50  # other pictures


def test_stream_flag_errors(tmp_path: Path, kinds) -> None:
    path = kinds("two_streams.mp4")
    with pytest.raises(VideoDecodeError) as excinfo:
        decode_video(path, DecodeConfig(stream=7))
    assert str(excinfo.value) == f"{path}: no stream 7 (--stream): the file has 2 stream(s) (video: 0, 1)"
    sound = make_video(tmp_path / "sound.mp4", n=10, audio=True).path
    with pytest.raises(VideoDecodeError, match=r"stream 1 \(--stream\) is audio, not video"):
        decode_video(sound, DecodeConfig(stream=1))
    with pytest.raises(ValueError, match="--stream"):
        check_decode_config(DecodeConfig(stream=-1))


def test_cover_picture_is_never_chosen(tmp_path: Path) -> None:
    path = tmp_path / "cover.mp4"
    make_video(tmp_path / "plain.mp4", n=12)
    with av.open(str(tmp_path / "plain.mp4")) as source, av.open(str(path), "w") as out:
        video_in = source.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic.value  # an int for PyAV 15 and 16+
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        picture.pts = 0
        for packet in list(cover.encode(picture)) + list(cover.encode(None)):
            packet.stream = cover
            out.mux(packet)
        for packet in source.demux(video_in):
            if packet.dts is None:
                continue
            packet.stream = video_out
            out.mux(packet)
    with av.open(str(path)) as container:
        covers = [s.index for s in container.streams.video if s.disposition & av.stream.Disposition.attached_pic]
    assert covers == [1]
    video = decode_video(path, DecodeConfig(frames=4))
    assert video.info.stream_index == 0 and video.info.num_frames == 12
    assert [read_index(f) for f in video.frames.numpy()] == video.indices
    with pytest.raises(VideoDecodeError, match=r"stream 1 \(--stream\) is a cover picture"):
        decode_video(path, DecodeConfig(stream=1))


def test_best_stream_rule_skips_a_cover_that_ffmpeg_ranks_first() -> None:
    from types import SimpleNamespace

    from aot_cli.video.probe import choose_stream

    D = av.stream.Disposition

    def stream(index, disposition, bit_rate):
        return SimpleNamespace(index=index, type="video", disposition=disposition, bit_rate=bit_rate,
                               codec_context=SimpleNamespace(name="h264"))

    cover = stream(0, D.attached_pic | D.default, 10)
    plain = stream(1, D(0), 500)
    flagged = stream(2, D.default, 100)
    streams = [cover, plain, flagged]
    container = SimpleNamespace(format=SimpleNamespace(name="mov,mp4"),
                                streams=SimpleNamespace(video=streams, best=lambda kind: cover))
    assert choose_stream(container, "x.mp4").index == 2  # default beats a higher bit rate, as in FFmpeg
    flagged.disposition = D(0)
    assert choose_stream(container, "x.mp4").index == 1  # then bit rate


# ----------------------------------------------------------------------------------- limits


def test_frame_limit_refuses_up_front() -> None:
    with pytest.raises(ValueError) as excinfo:
        check_decode_config(DecodeConfig(frames=100000))
    assert "--frame-limit" in str(excinfo.value) and "1024" in str(excinfo.value)
    check_decode_config(DecodeConfig(frames=2000, frame_limit=2000))
    with pytest.raises(ValueError, match="--max-frames"):
        check_decode_config(DecodeConfig(fps=1, max_frames=5000))
    for bad in (0, -3, 1.5, "8"):
        with pytest.raises(ValueError, match="--frame-limit"):
            check_decode_config(DecodeConfig(frame_limit=bad))
    with pytest.raises(ValueError, match="--pixel-limit"):
        check_decode_config(DecodeConfig(pixel_limit=0))
    with pytest.raises(ValueError, match="--decoder-log"):
        check_decode_config(DecodeConfig(decoder_log="loud"))
    with pytest.raises(ValueError, match="--decode-timeout"):
        check_decode_config(DecodeConfig(timeout=0))


def test_frame_limit_per_video(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", n=40, fps=20).path
    with pytest.raises(VideoDecodeError) as excinfo:
        decode_video(path, DecodeConfig(fps=20, frame_limit=10))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and "40 frames" in message and "--frame-limit" in message
    assert len(decode_video(path, DecodeConfig(fps=20, max_frames=10, frame_limit=10)).indices) == 10
    with pytest.raises(VideoDecodeError, match="200000 frames asked for.*--frame-limit"):
        decode_video(path, DecodeConfig(), default_frames=200000)  # e.g. a cache's recorded count


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    path = make_video(tmp_path / "v.mp4", n=4, size=(64, 48)).path
    with pytest.raises(VideoDecodeError) as excinfo:
        decode_video(path, DecodeConfig(pixel_limit=64 * 48 - 1))
    assert str(excinfo.value) == (f"{path}: its 64x48 pictures (3,072 pixels) are over the pixel limit of 3,071 "
                                  "(--pixel-limit); raise --pixel-limit to read it")
    assert decode_video(path, DecodeConfig(pixel_limit=64 * 48)).frames.shape[0] == 32


def test_cli_refuses_too_many_frames_without_decoding(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aot_cli.cli import main

    clip = make_video(tmp_path / "short.mp4", n=16).path
    result = CliRunner().invoke(main, ["compress", str(clip), "--frames", "100000", "-o", str(tmp_path / "c"),
                                       "--model", "dinov2-small-offline", "--decode-workers", "0"])
    assert result.exit_code == 2  # a usage error, found before the model loads
    assert "--frame-limit" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------ decoder log


WARNING_SCRIPT = textwrap.dedent("""
    import sys
    from aot_cli.config import DecodeConfig
    from aot_cli.video import VideoDecodeError, decode_video
    level = sys.argv[1]
    for decoder in sys.argv[2].split(","):
        for path in sys.argv[3:]:
            try:
                video = decode_video(path, DecodeConfig(frames=8, decoder=decoder, decoder_log=level))
            except VideoDecodeError as exc:  # decord may refuse a damaged file
                print(decoder, "refused", exc)
            else:
                print(decoder, video.decoder, video.info.num_frames)
""")


@pytest.fixture(scope="module")
def noisy_files(tmp_path_factory: pytest.TempPathFactory):
    """An MP4 and a TS with bytes flipped inside the video data: FFmpeg warns while decoding them."""
    folder = tmp_path_factory.mktemp("noisy")
    made = []
    for name, fmt in (("noisy.mp4", None), ("noisy.ts", "mpegts")):
        clean = make_video(folder / f"clean_{name}", n=48, gop=8, fmt=fmt, size=(128, 96)).path
        data = bytearray(clean.read_bytes())
        rng = np.random.default_rng(1)
        for position in rng.integers(len(data) // 3, 2 * len(data) // 3, 40):
            if fmt == "mpegts" and position % 188 < 4:
                continue  # keep the TS packet headers
            data[position] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
        made.append(str(folder / name))
    return made


def run_decode(level: str, decoders: list, paths: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WARNING_SCRIPT, level, ",".join(decoders), *paths],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_decoder_warnings_stay_off_the_terminal(noisy_files) -> None:
    quiet = run_decode("quiet", DECODERS, noisy_files)  # the default level
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[:500]
    assert len(quiet.stdout.splitlines()) == len(DECODERS) * len(noisy_files)
    for decoder in DECODERS:
        # the same files do make FFmpeg warn (else the check above proves nothing); decord refuses
        # the TS before decoding it, but decodes the MP4
        loud = run_decode("warning", [decoder], noisy_files)
        assert loud.returncode == 0 and loud.stderr.strip(), decoder
    assert run_decode("quiet", ["auto"], noisy_files).stdout == run_decode("warning", ["auto"], noisy_files).stdout


# --------------------------------------------------------------------------- target size


def test_decode_size_rule() -> None:
    assert decode_size(2160, 3840, None) == (2160, 3840)
    assert decode_size(2160, 3840, (384, 384)) == (768, 1366)  # twice the target, aspect kept
    assert decode_size(272, 640, (384, 384)) == (272, 640)  # never above native
    with pytest.raises(ValueError):
        decode_size(100, 100, (0, 10))


@pytest.mark.parametrize("spec_name", ["siglip", "clip", "dinov2", "naflex"])
def test_target_size_keeps_the_towers_geometry(spec_name: str) -> None:
    from aot_cli.models.preprocess import clip_spec, dinov2_spec, naflex_spec, square_spec

    spec = {"siglip": square_spec(384), "clip": clip_spec(224), "dinov2": dinov2_spec(),
            "naflex": naflex_spec(16)}[spec_name]
    for height, width in [(2160, 3840), (1080, 1920), (4320, 7680), (1920, 1080), (8192, 8192), (1000, 1333),
                          (720, 1280), (2000, 3001)]:
        h, w = decode_size(height, width, spec.resized_size)
        assert spec.resized_size(h, w) == spec.resized_size(height, width), (height, width, h, w)
        assert h <= height and w <= width


def test_target_size_frames_are_close_to_native() -> None:
    import torch

    from aot_cli.models.preprocess import preprocess_frames, square_spec

    spec = square_spec(96)
    path = ROOT / "samples" / "bikes.mp4"
    native = decode_video(path, DecodeConfig(frames=6, decoder="pyav"))
    small = decode_video(path, DecodeConfig(frames=6), target_size=spec.resized_size)
    assert small.decode_size == (192, 192 * 640 // 272 + 1) == tuple(small.frames.shape[1:3])
    assert small.native_size == (272, 640) and small.read == "seek" and small.indices == native.indices
    cpu = torch.device("cpu")
    a = preprocess_frames(native.frames, spec, cpu, torch.float32)
    b = preprocess_frames(small.frames, spec, cpu, torch.float32)
    assert float((a - b).abs().mean()) * 0.5 * 255 < 2.0  # in 0..255 units


def test_target_size_on_sequential_and_rotated_reads(kinds, tmp_path: Path) -> None:
    path = kinds("joined.ts")  # restarting timestamps: read sequentially
    video = decode_video(path, DecodeConfig(frames=5), target_size=(12, 16))
    assert video.read == "sequential" and tuple(video.frames.shape[1:3]) == (24, 32)
    assert [read_index(f) for f in video.frames.numpy()] == video.indices
    rotated = make_video(tmp_path / "rot.mp4", n=12, size=(64, 48), rotation=90).path
    video = decode_video(rotated, DecodeConfig(frames=4, decoder="pyav"), target_size=(12, 16))
    assert tuple(video.frames.shape[1:3]) == (24, 32)
    assert [read_index(f) for f in video.frames.numpy()] == video.indices


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from aot_cli.config import DecodeConfig
    from aot_cli.video import decode_video
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    target = None if sys.argv[2] == "native" else (384, 384)
    video = decode_video(sys.argv[1], DecodeConfig(frames=8, decoder="pyav"), target_size=target)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"shape": list(video.frames.shape), "before_kib": before, "peak_kib": after}))
""")


def test_8k_clip_at_a_target_size_stays_small() -> None:
    # 8 native 8192x8192 RGB frames alone are 1.5 GiB; at the target size the decode needs far less.
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(BIG), "target"], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["shape"] == [8, 768, 768, 3]
    grown_mib = (row["peak_kib"] - row["before_kib"]) / 1024
    assert grown_mib < 1100, row


# ------------------------------------------------------------------------------ timelines


def test_continuous_timeline_restarts_gaps_and_disorder() -> None:
    joined = continuous_timeline([10.0, 10.1, 10.2, 0.0, 0.1], fps=10)
    assert joined.seconds.tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4]) and joined.restarts == 1
    missing = continuous_timeline([0.0, 0.1, None, 0.3], fps=10)
    assert missing.seconds.tolist() == pytest.approx([0, 0.1, 0.2, 0.3]) and missing.notes
    repeated = continuous_timeline([0.0, 0.1, 0.1, 0.2], fps=10)
    assert repeated.seconds.tolist() == pytest.approx([0, 0.1, 0.1, 0.2]) and repeated.restarts == 0
    shuffled = continuous_timeline([0.04 * i for i in (1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12)], fps=25)
    assert not shuffled.ordered and shuffled.seconds.tolist() == pytest.approx([i / 25 for i in range(12)])
    jump = continuous_timeline([0.0, 0.1, 500.0, 500.1], fps=10, discontinuity=10.0)
    assert jump.seconds.tolist() == pytest.approx([0, 0.1, 0.2, 0.3]) and jump.restarts == 1
    assert np.all(np.diff(continuous_timeline([0.0, 0.1, 500.0], fps=10).seconds) > 0)


def test_display_order_sorts_within_pieces() -> None:
    # decode order with B-frames, then a second piece whose clock starts again
    pts = [2, 4, 3, 6, 5, 2, 4, 3]
    dts = [1, 2, 3, 4, 5, 1, 2, 3]
    assert display_order(pts, dts, None) == [2, 3, 4, 5, 6, 2, 3, 4]
    assert display_order([1, 2, None], [None, None, None], None) == [1, 2, None]


# ------------------------------------------------------------------------------ pipeline glue


def test_decode_job_hashes_once_and_decodes_at_the_target_size(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    import aot_cli.video.probe as probe
    from aot_cli.pipeline.workers import DecodeJob, decode_target, run_job

    path = make_video(tmp_path / "v.mp4", n=20, size=(128, 96)).path

    def no_second_hash(*args, **kwargs):
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(probe, "file_sha256", no_second_hash)
    outcome = run_job(DecodeJob(str(path), DecodeConfig(frames=4), 8, None, (24, 32)))
    assert outcome.status == "ok", outcome.error
    assert outcome.sha256 == outcome.decoded.info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tuple(outcome.decoded.frames.shape) == (4, 48, 64, 3) and outcome.decoded.decode_size == (48, 64)
    assert [read_index(f) for f in outcome.decoded.frames.numpy()] == outcome.decoded.indices

    from aot_cli.models.preprocess import square_spec

    class Adapter:
        spec = square_spec(384)

    assert decode_target(Adapter())(1080, 1920) == (384, 384)
    assert decode_target(object()) is None


def test_deadline_counts_time_without_progress(monkeypatch) -> None:
    import aot_cli.video.info as info

    clock = [100.0]
    monkeypatch.setattr(info.time, "monotonic", lambda: clock[0])
    calls = []
    deadline = info.Deadline("x.mp4", 5.0, progress=lambda: calls.append(clock[0]))
    clock[0] += 4
    deadline.advance("decoding")  # progress: the budget starts again, the watchdog hears of it
    assert calls == [104.0]
    clock[0] += 4
    deadline.check("decoding")  # 8 s since the start, 4 s since progress
    clock[0] += 2
    with pytest.raises(VideoDecodeError, match="decoding made no progress for 5 s"):
        deadline.check("decoding")
