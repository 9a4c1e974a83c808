"""Frames you can trust, round 2: colour from the stream's tags, keyframe flags that lie, display
aspect, pictures lost to frame threading at a truncation, and what a cache records about them.

Generated files (PyAV encoders) are checked against an independent numpy YUV->RGB conversion of the
decoded planes (:func:`videogen.patch_references`, the ITU-R equations) and against a sequential
decode; the committed files in tests/data/decode-cases-2/ against the ffmpeg command line's own RGB
(stored references, see that folder's README). Everything here must hold on PyAV 15 (lmms-eval's
``av<16``) and on PyAV 18 alike: CI runs this file under both (``--expect-pyav``).
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from aot_cli.config import DecodeConfig
from aot_cli.video import decode_video, decoder_versions, probe_video
from videogen import (
    encoder_available,
    make_colour_video,
    make_truncated,
    make_video,
    patch_means,
    patch_references,
    read_index,
    remux_all_keyframes,
    set_prores_header_tags,
)

CASES = Path(__file__).parent / "data" / "decode-cases-2"
#: Largest accepted gap (0..255) between a colour patch as decoded and its reference: swscale's
#: fixed-point conversion (the ffmpeg CLI's too) is up to ~3 off the exact equations (10-bit
#: sources come out ~2 darker); a wrong matrix or range moves some patch by more (checked).
PATCH_TOLERANCE = 3.5
#: Least gap a wrong conversion (PyAV 15's default: BT.601, limited range) must show for a test
#: to prove anything.
WRONG_GAP = 7.5
#: Largest mean absolute difference from the ffmpeg CLI's RGB (the issue's bar: 0.5 of 255).
CLI_TOLERANCE = 0.5

BT709, BT470BG, BT2020NC, UNSPECIFIED = 1, 5, 9, 2
LIMITED, FULL = 1, 2


def test_pyav_version_is_the_expected_one(request) -> None:
    """CI runs the decoding tests twice, with PyAV 15 and 18 (``--expect-pyav 15`` / ``18``):
    make sure each run really imported that version."""
    expected = request.config.getoption("--expect-pyav")
    if expected is None:
        pytest.skip("no --expect-pyav given")
    assert av.__version__.split(".")[0] == str(expected), av.__version__


# --------------------------------------------------------------------------------------- colour

# name: (encoder, pixel format, container, colorspace, range, primaries, transfer,
#        the matrix and range the CLI converts with)
COLOUR_KINDS = {
    "h264_bt709.mp4": ("libx264", "yuv420p", None, BT709, LIMITED, BT709, BT709, "bt709", False),
    "h264_bt709_full.mp4": ("libx264", "yuv420p", None, BT709, FULL, BT709, BT709, "bt709", True),
    "h264_untagged_hd.mkv": ("libx264", "yuv420p", "matroska", None, None, None, None, "bt601", False),
    "h264_10bit_full_bt709.mp4": ("libx264", "yuv420p10le", None, BT709, FULL, None, None, "bt709", True),
    "h264_422_bt709.mp4": ("libx264", "yuv422p", None, BT709, LIMITED, None, None, "bt709", False),
    "h264_444_bt2020.mkv": ("libx264", "yuv444p", "matroska", BT2020NC, LIMITED, 9, None, "bt2020nc", False),
    "hevc_10bit_bt2020_pq.mp4": ("libx265", "yuv420p10le", None, BT2020NC, LIMITED, 9, 16, "bt2020nc", False),
    "vp9_full_bt709.webm": ("libvpx-vp9", "yuv420p", None, BT709, FULL, None, None, "bt709", True),
    "av1_bt709.mp4": ("libsvtav1", "yuv420p", None, BT709, LIMITED, BT709, BT709, "bt709", False),
    "mjpeg_yuvj422.mov": ("mjpeg", "yuvj422p", None, None, None, None, None, "bt601", True),
    "ffv1_gray.mkv": ("ffv1", "gray", "matroska", None, None, None, None, "bt601", True),
    "mpeg4_untagged.avi": ("mpeg4", "yuv420p", None, None, None, None, None, "bt601", False),
}
SIZES = {"h264_untagged_hd.mkv": (1280, 720), "av1_bt709.mp4": (128, 64)}
OPTIONS = {"libx265": {"x265-params": "log-level=none"}, "libx264": {"preset": "ultrafast"},
           "libsvtav1": {"preset": "12"}}


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("colour")
    made: dict = {}

    def get(name: str) -> Path:
        codec, pix_fmt, fmt, space, rng, primaries, transfer, _, _ = COLOUR_KINDS[name]
        if not encoder_available(codec):
            pytest.skip(f"this PyAV build has no '{codec}' encoder")
        if name not in made:
            made[name] = make_colour_video(folder / name, codec, pix_fmt, size=SIZES.get(name, (96, 64)),
                                           colorspace=space, color_range=rng, primaries=primaries,
                                           transfer=transfer, fmt=fmt, codec_options=OPTIONS.get(codec))
        return made[name]

    return get


def plain_pictures(path: Path) -> list:
    """Every picture of a plain, single-threaded sequential PyAV decode (the YUV planes); packets
    the decoder rejects are skipped."""
    pictures = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                pictures.extend(stream.decode(packet))
            except av.FFmpegError:
                pass
    return pictures


@pytest.mark.parametrize("name", sorted(COLOUR_KINDS))
def test_colour_follows_the_stream_tags(colour_files, name: str) -> None:
    path = colour_files(name)
    *_, matrix, full = COLOUR_KINDS[name]
    pictures = plain_pictures(path)
    video = decode_video(path, DecodeConfig(frames=3))
    assert video.info.colour["used_matrix"] == matrix and video.info.colour["used_range"] == ("pc" if full else "tv")
    height, width = video.frames.shape[1:3]
    for rgb, index in zip(video.frames.numpy(), video.indices):
        expected = patch_references(pictures[index], matrix, full, width, height)
        got = patch_means(rgb)
        assert np.abs(got - expected).max() <= PATCH_TOLERANCE, (name, index, got.round(1), expected.round(1))
        if matrix != "bt601" or full:
            # what the PyAV 15 default (BT.601, limited) would give is visibly off: the check has teeth
            wrong = patch_references(pictures[index], "bt601", False, width, height)
            assert np.abs(wrong - expected).max() > WRONG_GAP


@pytest.mark.parametrize("name", ["h264_bt709_full.mp4", "h264_10bit_full_bt709.mp4", "hevc_10bit_bt2020_pq.mp4"])
def test_colour_is_right_when_scaling_to_the_towers_size(colour_files, name: str) -> None:
    path = colour_files(name)
    *_, matrix, full = COLOUR_KINDS[name]
    pictures = plain_pictures(path)
    video = decode_video(path, DecodeConfig(frames=2), target_size=(16, 24))
    assert tuple(video.frames.shape[1:3]) == (32, 48)  # scaled while converting
    for rgb, index in zip(video.frames.numpy(), video.indices):
        expected = patch_references(pictures[index], matrix, full, 96, 64)
        assert np.abs(patch_means(rgb) - expected).max() <= PATCH_TOLERANCE


def test_colour_tags_are_recorded(colour_files) -> None:
    info = probe_video(colour_files("hevc_10bit_bt2020_pq.mp4"))
    assert info.colour == {"matrix": "bt2020nc", "range": "tv", "primaries": "bt2020", "transfer": "smpte2084",
                           "used_matrix": "bt2020nc", "used_range": "tv"}
    untagged = probe_video(colour_files("mpeg4_untagged.avi")).colour
    assert (untagged["matrix"], untagged["range"], untagged["used_matrix"], untagged["used_range"]) == \
        ("unknown", "unknown", "bt601", "tv")
    rgb_source = make_colour_video(colour_files("ffv1_gray.mkv").parent / "rgb.mkv", "ffv1", "bgr0", fmt="matroska")
    assert probe_video(rgb_source).colour["used_matrix"] is None  # RGB pictures need no YUV conversion


@pytest.mark.parametrize("header", [UNSPECIFIED, BT709])
def test_prores_header_tags_win_over_the_container(tmp_path: Path, header: int) -> None:
    """ProRes 4:2:2 10-bit in MOV tagged BT.709 in the container: FFmpeg's ``prores_ks`` writes
    "unspecified" in the frame headers (Debian's 5.1 and 7.1 do); FFmpeg 5.1 and 8 then convert
    with BT.601, FFmpeg 7.1 (PyAV 15) would take the container's BT.709. aot converts as the CLI
    does, from the headers, on every version."""
    if not encoder_available("prores_ks"):
        pytest.skip("no prores_ks encoder")
    path = make_colour_video(tmp_path / "prores.mov", "prores_ks", "yuv422p10le", colorspace=BT709,
                             color_range=LIMITED, primaries=BT709, transfer=BT709)
    assert set_prores_header_tags(path, header, header, header) == 4
    matrix = "bt709" if header == BT709 else "bt601"
    pictures = plain_pictures(path)
    video = decode_video(path, DecodeConfig(frames=2))
    assert video.info.colour["used_matrix"] == matrix
    assert video.info.colour["matrix"] == ("bt709" if header == BT709 else "unknown")
    for rgb, index in zip(video.frames.numpy(), video.indices):
        expected = patch_references(pictures[index], matrix, False, 96, 64)
        assert np.abs(patch_means(rgb) - expected).max() <= PATCH_TOLERANCE
        other = patch_references(pictures[index], "bt601" if header == BT709 else "bt709", False, 96, 64)
        assert np.abs(other - expected).max() > WRONG_GAP


# ------------------------------------------------------------------------------ display aspect


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_anamorphic_frames_come_at_display_aspect(tmp_path: Path, container: str) -> None:
    fmt = "matroska" if container == "mkv" else None
    path = make_colour_video(tmp_path / f"dvd.{container}", "libx264", "yuv420p", n=4, size=(96, 64),
                             sar=Fraction(32, 27), fmt=fmt, codec_options=OPTIONS["libx264"])
    info = probe_video(path)
    assert (info.width, info.height, info.stored_width, info.stored_height) == (113, 64, 96, 64)  # 96*32/27 = 113.8
    assert (info.sample_aspect_ratio, info.display_aspect_ratio) == ("32:27", "16:9")
    video = decode_video(path, DecodeConfig(frames=2))
    assert tuple(video.frames.shape[1:3]) == (64, 113) and video.native_size == (64, 113)
    pictures = plain_pictures(path)
    for rgb, index in zip(video.frames.numpy(), video.indices):  # stretched, not cropped: patches stay put
        expected = patch_references(pictures[index], "bt601", False, 96, 64)
        assert np.abs(patch_means(rgb) - expected).max() <= PATCH_TOLERANCE
    small = decode_video(path, DecodeConfig(frames=2), target_size=(16, 16))
    height, width = small.frames.shape[1:3]
    assert abs(width / height - 16 / 9) < 0.05  # the tower's size keeps the display aspect too


def test_square_pixels_and_rotation_keep_their_size(tmp_path: Path) -> None:
    plain = make_video(tmp_path / "plain.mp4", n=6).path
    info = probe_video(plain)
    assert (info.width, info.height, info.sample_aspect_ratio, info.display_aspect_ratio) == (64, 48, "1:1", "4:3")
    turned = make_video(tmp_path / "turned.mp4", n=6, size=(64, 48), rotation=90).path
    video = decode_video(turned, DecodeConfig(frames=3))
    assert tuple(video.frames.shape[1:3]) == (48, 64) and [read_index(f) for f in video.frames.numpy()] == video.indices


# -------------------------------------------------------------------------- keyframes that lie

# name: (encoder, container extension, size, encoder options)
LYING_KINDS = {
    "mpeg4_no_stss.mp4": ("mpeg4", ".mp4", (64, 48), {}),
    "h263_no_stss.3gp": ("h263", ".3gp", (128, 96), {}),
    "mpeg4_bframes_no_stss.mov": ("mpeg4", ".mov", (64, 48), {"bf": "2"}),
}


@pytest.mark.parametrize("name", sorted(LYING_KINDS))
def test_keyframe_flags_are_verified_not_trusted(tmp_path: Path, name: str) -> None:
    codec, ext, size, options = LYING_KINDS[name]
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build has no '{codec}' encoder")
    honest = make_video(tmp_path / f"honest{ext}", codec=codec, n=40, gop=10, size=size, codec_options=options).path
    lying = remux_all_keyframes(honest, tmp_path / name)
    with av.open(str(lying)) as container:
        flags = [p.is_keyframe for p in container.demux(container.streams.video[0]) if p.size]
    assert all(flags) and len(flags) == 40  # FFmpeg takes every packet for a keyframe
    assert b"stss" not in lying.read_bytes()
    video = decode_video(lying, DecodeConfig(frames=8))
    assert [read_index(f) for f in video.frames.numpy()] == video.indices  # the right pictures
    assert video.read == "sequential"
    assert any("keyframe" in note or "other pictures" in note for note in video.notes), video.notes
    # the honest file (real sync samples) still seeks and gets the same pictures
    seeking = decode_video(honest, DecodeConfig(frames=8))
    assert seeking.read == "seek" and seeking.indices == video.indices
    assert [read_index(f) for f in seeking.frames.numpy()] == seeking.indices


def test_intra_only_codecs_still_seek(tmp_path: Path) -> None:
    # every MJPEG picture is a keyframe, whatever flags FFmpeg's frame threads leave on it
    path = make_video(tmp_path / "mjpeg.mov", codec="mjpeg", pix_fmt="yuvj420p", n=30).path
    video = decode_video(path, DecodeConfig(frames=6))
    assert video.read == "seek" and [read_index(f) for f in video.frames.numpy()] == video.indices


# ------------------------------------------------------------------------ truncated downloads


def test_truncated_faststart_mp4_keeps_every_decodable_picture(tmp_path: Path, monkeypatch) -> None:
    import os

    whole = make_video(tmp_path / "whole.mp4", n=100, gop=12, size=(128, 96), options={"movflags": "faststart"},
                       codec_options={"bf": "3"}).path
    cut = make_truncated(whole, tmp_path / "cut.mp4", keep=0.55)  # the last packet is cut short
    reference = plain_pictures(cut)  # single-threaded: every picture the stream still holds
    # frame threads lose the pictures in flight when the decoder reports the damage at the end
    with av.open(str(cut)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "AUTO", 4
        threaded = 0
        for packet in container.demux(stream):
            try:
                threaded += len(stream.decode(packet))
            except av.FFmpegError:
                pass
    assert threaded < len(reference)  # the hazard is real on this file
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)  # as on 8 cores
    video = decode_video(cut, DecodeConfig(frames=len(reference)))
    assert video.info.num_frames == len(reference)
    assert video.indices == list(range(len(reference)))
    shown = [read_index(picture.to_ndarray(format="rgb24")) for picture in reference]
    assert [read_index(f) for f in video.frames.numpy()] == shown


# --------------------------------------------------------------------------- what is recorded


def test_decoder_versions_are_recorded() -> None:
    from aot_cli.pipeline.run import versions

    recorded = versions()
    assert recorded["pyav"] == av.__version__ == decoder_versions()["pyav"]
    codec = ".".join(str(v) for v in av.library_versions["libavcodec"])
    assert f"libavcodec {codec}" in recorded["ffmpeg"] and "libswscale" in recorded["ffmpeg"]


def test_info_to_dict_carries_colour_and_aspect(tmp_path: Path) -> None:
    path = make_colour_video(tmp_path / "a.mp4", "libx264", "yuv420p", size=(96, 64), sar=Fraction(4, 3),
                             colorspace=BT709, color_range=LIMITED, codec_options=OPTIONS["libx264"])
    meta = json.loads(json.dumps(decode_video(path, DecodeConfig(frames=2)).to_dict()["info"]))
    assert (meta["width"], meta["stored_width"], meta["sample_aspect_ratio"], meta["display_aspect_ratio"]) == \
        (128, 96, "4:3", "2:1")
    assert meta["colour"]["matrix"] == "bt709" and meta["colour"]["used_matrix"] == "bt709"


# ------------------------------------------------------------------ the committed cases (CLI RGB)

REFERENCES = CASES / "references.npz"


def committed_cases() -> list:
    if not REFERENCES.exists():
        return []
    with np.load(REFERENCES) as data:
        return sorted(str(n) for n in data["names"])


def block_means(rgb: np.ndarray, block: int) -> np.ndarray:
    height, width = rgb.shape[0] // block * block, rgb.shape[1] // block * block
    cut = rgb[:height, :width].astype(np.float64)
    return cut.reshape(height // block, block, width // block, block, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("name", committed_cases())
def test_committed_cases_match_the_ffmpeg_cli(name: str) -> None:
    """Pictures, count, timestamps, colour (within 0.5 of 255 of the CLI's RGB) and display
    aspect of the files in tests/data/decode-cases-2/, against the stored CLI references."""
    with np.load(REFERENCES) as data:
        row = list(data["names"]).index(name)
        count, block = int(data["counts"][row]), int(data["block"])
        times = data[f"{name}:times"]
        indices, blocks, crops = data[f"{name}:indices"], data[f"{name}:blocks"], data[f"{name}:crops"]
        display = tuple(int(v) for v in data[f"{name}:display"])
    video = decode_video(CASES / name, DecodeConfig(frames=len(indices)))
    assert video.info.num_frames == count
    assert video.indices == indices.tolist()
    assert tuple(video.frames.shape[1:3]) == display  # (height, width) at display aspect
    assert np.allclose(video.timestamps, times[indices] - times[0], atol=2e-3)
    for j, rgb in enumerate(video.frames.numpy()):
        assert np.abs(block_means(rgb, block) - blocks[j]).mean() <= CLI_TOLERANCE, (name, j)
        top = (rgb.shape[0] - crops.shape[1]) // 2
        left = (rgb.shape[1] - crops.shape[2]) // 2
        crop = rgb[top: top + crops.shape[1], left: left + crops.shape[2]]
        assert np.abs(crop.astype(np.int16) - crops[j]).mean() <= CLI_TOLERANCE, (name, j)
