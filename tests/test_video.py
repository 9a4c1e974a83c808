"""Video decoding: real sample clips, generated videos of many kinds, broken inputs, sampling."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aot_cli.config import DecodeConfig
from aot_cli.video import (
    DecodedVideo,
    VideoDecodeError,
    VideoInfo,
    decode_video,
    file_sha256,
    probe_video,
    sample_indices,
)
from videogen import (
    MadeVideo,
    encoder_available,
    frame_pattern,
    make_audio_only,
    make_lying_avi,
    make_random_bytes,
    make_text_file,
    make_truncated,
    make_video,
    make_zero_bytes,
    read_index,
)

SAMPLES = Path(__file__).parent.parent / "samples"
# name: (frames found by demuxing, displayed width, height, fps, has audio); carphone's pixels are
# not square (QCIF 176x144 with SAR 128:117): it shows, and decodes, at 192x144
REAL = {
    "bikes.mp4": (250, 640, 272, 25.0, False),
    "carphone_pristine.mp4": (120, 192, 144, 30000 / 1001, False),
    "realshort.mp4": (36, 320, 240, 45000 / 1499, True),
    "motion.mov": (242, 568, 320, 30.0, True),
}
HAS_DECORD = importlib.util.find_spec("decord") is not None
needs_decord = pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")


def need_encoder(codec: str) -> None:
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build has no '{codec}' encoder")


def shown_indices(video: DecodedVideo) -> list[int]:
    """The frame numbers the returned pixels show (generated videos only)."""
    return [read_index(frame) for frame in video.frames.numpy()]


def assert_one_line_error(excinfo: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(excinfo.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def made(gen: Path):
    """``made(name, **make_video_kwargs)``: the video ``gen/name``, written on first use."""
    cache: dict[str, MadeVideo] = {}

    def get(name: str, **kwargs) -> MadeVideo:
        if name not in cache:
            cache[name] = make_video(gen / name, **kwargs)
        return cache[name]

    return get


# ---------------------------------------------------------------- real samples


@pytest.mark.parametrize("name", sorted(REAL))
def test_probe_real_sample(name: str) -> None:
    n, width, height, fps, audio = REAL[name]
    path = SAMPLES / name
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.rotation) == (n, width, height, 0)
    assert info.fps == pytest.approx(fps, rel=1e-6)
    assert info.duration == pytest.approx(n / fps, abs=0.05)
    assert info.has_audio is audio
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.size_bytes == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert json.loads(json.dumps(info.to_dict()))["num_frames"] == n


def test_motion_mov_header_count_is_corrected() -> None:
    # The header counts 243 samples; the edit list hides the last one, so 242 are shown.
    info = probe_video(SAMPLES / "motion.mov")
    assert (info.num_frames_header, info.num_frames) == (243, 242)
    video = decode_video(SAMPLES / "motion.mov", DecodeConfig(frames=8, decoder="pyav"))
    assert video.indices[-1] == 241
    assert any("header count corrected" in note for note in video.notes)


@pytest.mark.parametrize("name", sorted(REAL))
def test_decode_real_sample_pyav(name: str) -> None:
    n, width, height, fps, _ = REAL[name]
    video = decode_video(SAMPLES / name, DecodeConfig(decoder="pyav"))
    assert video.decoder == "pyav"
    assert video.frames.dtype == torch.uint8
    assert tuple(video.frames.shape) == (32, height, width, 3)
    assert video.indices == np.linspace(0, n - 1, 32, dtype=int).tolist()
    assert (video.requested, video.padded) == (32, False)
    times = np.asarray(video.timestamps)
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)
    # Constant-rate clips: frame i is shown at i / fps.
    assert times == pytest.approx(np.asarray(video.indices) / fps, abs=2e-3)
    assert video.frames.float().std() > 5  # real pictures, not blank buffers


@needs_decord
@pytest.mark.parametrize("name", sorted(REAL))
def test_decord_and_pyav_agree_on_real_samples(name: str) -> None:
    cfg = dict(frames=12)
    by_pyav = decode_video(SAMPLES / name, DecodeConfig(decoder="pyav", **cfg))
    by_decord = decode_video(SAMPLES / name, DecodeConfig(decoder="decord", **cfg))
    assert by_decord.decoder == "decord"
    assert by_decord.indices == by_pyav.indices
    assert by_decord.timestamps == pytest.approx(by_pyav.timestamps, abs=1e-6)
    assert by_decord.frames.shape == by_pyav.frames.shape
    diff = (by_decord.frames.float() - by_pyav.frames.float()).abs()
    assert float(diff.mean()) < 2.0  # same frames; only colour-conversion rounding may differ


def test_auto_seeks_with_pyav_on_indexed_containers() -> None:
    # MP4 with a real index: keyframe-accurate PyAV seeks (checked picture by picture), no note
    video = decode_video(SAMPLES / "bikes.mp4", DecodeConfig(frames=4))
    assert (video.decoder, video.read) == ("pyav", "seek") and video.notes == []


# ---------------------------------------------------------------- generated videos

CODECS = [
    ("h264_420.mp4", "libx264", "yuv420p"),
    ("h264_444.mp4", "libx264", "yuv444p"),
    ("mpeg4.avi", "mpeg4", "yuv420p"),
    ("mjpeg.avi", "mjpeg", "yuvj420p"),
    ("mpeg2.mpg", "mpeg2video", "yuv420p"),
    ("vp9.webm", "libvpx-vp9", "yuv420p"),
]


@pytest.mark.parametrize("decoder", ["pyav", "auto"])
@pytest.mark.parametrize("name,codec,pix_fmt", CODECS)
def test_codecs_return_the_right_frames(made, name: str, codec: str, pix_fmt: str, decoder: str) -> None:
    need_encoder(codec)
    path = made(name, codec=codec, pix_fmt=pix_fmt, n=20).path
    video = decode_video(path, DecodeConfig(frames=7, decoder=decoder))
    assert video.indices == np.linspace(0, 19, 7, dtype=int).tolist()
    assert shown_indices(video) == video.indices
    assert tuple(video.frames.shape) == (7, 48, 64, 3)
    assert video.timestamps == pytest.approx([i / 10 for i in video.indices], abs=1e-6)
    assert video.info.num_frames == 20 and video.info.pix_fmt == pix_fmt


@needs_decord
def test_decord_is_refused_where_it_misreports(gen: Path) -> None:
    # decord's timestamps for MPEG program streams are garbage (and its seeks return frame 0);
    # the default seeks by the byte offsets the probe found, and checks every picture
    need_encoder("mpeg2video")
    path = make_video(gen / "fallback.mpg", codec="mpeg2video", n=12).path
    video = decode_video(path, DecodeConfig(frames=4))
    assert (video.decoder, video.read) == ("pyav", "seek")
    assert shown_indices(video) == video.indices == [0, 3, 7, 11]
    with pytest.raises(VideoDecodeError) as excinfo:
        decode_video(path, DecodeConfig(frames=4, decoder="decord"))
    assert_one_line_error(excinfo, path, "decord")


@pytest.mark.parametrize("decoder", ["pyav", pytest.param("decord", marks=needs_decord)])
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(made, rotation: int, decoder: str) -> None:
    path = made(f"rot{rotation}.mp4", n=12, size=(64, 48), rotation=rotation).path
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (rotation, 64, 48)
    video = decode_video(path, DecodeConfig(frames=5, decoder=decoder))
    assert tuple(video.frames.shape) == (5, 48, 64, 3)
    assert shown_indices(video) == video.indices == [0, 2, 5, 8, 11]


@pytest.mark.parametrize("decoder", ["pyav", "auto"])
def test_variable_frame_rate_timestamps(made, decoder: str) -> None:
    vfr = made("vfr.mp4", n=24, fps=10, vfr=True)
    path, written = vfr.path, vfr.timestamps
    assert len(set(np.round(np.diff(written), 6))) == 3  # really variable
    video = decode_video(path, DecodeConfig(frames=24, decoder=decoder))
    assert video.indices == list(range(24)) and shown_indices(video) == video.indices
    assert video.timestamps == pytest.approx(written, abs=1e-6)
    # Rate mode follows the timeline: the frame on screen at each multiple of 1/4 s.
    by_rate = decode_video(path, DecodeConfig(fps=4, decoder=decoder))
    end = written[-1] + 0.1
    targets = np.arange(0, end, 0.25)
    expected = sorted({int(np.searchsorted(written, t + 1e-9, side="right") - 1) for t in targets})
    assert by_rate.indices == expected
    assert shown_indices(by_rate) == expected


@pytest.mark.parametrize("name,codec", [("with_audio.mp4", "libx264"), ("with_audio.webm", "libvpx-vp9")])
def test_audio_track_is_ignored(gen: Path, name: str, codec: str) -> None:
    need_encoder(codec)
    path = make_video(gen / name, codec=codec, n=10, audio=True).path
    info = probe_video(path)
    assert info.has_audio is True and info.num_frames == 10
    video = decode_video(path, DecodeConfig(frames=4))
    assert shown_indices(video) == video.indices == [0, 3, 6, 9]
    silent = make_video(gen / f"silent_{name}", codec=codec, n=10).path
    assert probe_video(silent).has_audio is False


@pytest.mark.parametrize("name", ["nocount.mkv", "nocount.webm", "nocount.h264"])
def test_missing_header_count(gen: Path, name: str) -> None:
    codec = "libvpx-vp9" if name.endswith(".webm") else "libx264"
    need_encoder(codec)
    path = make_video(gen / name, codec=codec, n=15).path
    info = probe_video(path)
    assert info.num_frames_header is None and info.num_frames == 15
    video = decode_video(path, DecodeConfig(frames=5))
    assert shown_indices(video) == video.indices == [0, 3, 7, 10, 14]
    if name.endswith(".h264"):  # raw stream: no timestamps at all, timeline from the rate
        assert video.decoder == "pyav"
        assert any("no timestamps" in note for note in video.notes)
        assert np.all(np.diff(video.timestamps) > 0)


@pytest.mark.parametrize("decoder", ["auto", "pyav", pytest.param("decord", marks=needs_decord)])
def test_header_claims_more_frames_than_the_file_has(gen: Path, made, decoder: str) -> None:
    need_encoder("mpeg4")
    honest = made("honest.avi", codec="mpeg4", n=20).path
    path = make_lying_avi(honest, gen / "lying.avi", claimed=100)
    info = probe_video(path)
    assert (info.num_frames_header, info.num_frames) == (100, 20)
    video = decode_video(path, DecodeConfig(frames=6, decoder=decoder))
    assert shown_indices(video) == video.indices == np.linspace(0, 19, 6, dtype=int).tolist()
    assert any("header says 100 frames, demuxing found 20" in note for note in video.notes)
    if decoder == "auto":
        assert video.decoder == "pyav"  # decord trusts headers, so auto does not risk it


def test_truncated_download_with_index_first(gen: Path) -> None:
    # moov before mdat: the index survives, the data is cut; sample over what decodes.
    source = make_video(gen / "faststart.mp4", n=40, options={"movflags": "faststart"}).path
    path = make_truncated(source, gen / "faststart_cut.mp4", keep=0.85)
    video = decode_video(path, DecodeConfig(frames=8))
    assert video.decoder == "pyav"
    assert video.info.num_frames_header == 40 and 1 <= video.info.num_frames < 40
    assert video.indices[-1] == video.info.num_frames - 1
    assert shown_indices(video) == video.indices


# ---------------------------------------------------------------- sampling behaviour


def test_short_video_repeats_frames_like_linspace(gen: Path) -> None:
    path = make_video(gen / "short.mp4", n=5).path
    cfg = DecodeConfig(frames=8)
    video = decode_video(path, cfg)
    assert video.indices == [0, 0, 1, 1, 2, 2, 3, 4] == np.linspace(0, 4, 8, dtype=int).tolist()
    assert (video.requested, video.padded) == (8, True)
    assert "only 5 frames, sampled 8 with repeats" in video.notes
    assert shown_indices(video) == video.indices
    assert video.timestamps == pytest.approx([i / 10 for i in video.indices])
    again = decode_video(path, cfg)
    assert again.indices == video.indices and bool((again.frames == video.frames).all())


def test_default_frames_used_when_frames_is_none(gen: Path) -> None:
    path = make_video(gen / "default.mp4", n=30).path
    video = decode_video(path, DecodeConfig(decoder="pyav"), default_frames=6)
    assert video.requested == 6 and video.indices == np.linspace(0, 29, 6, dtype=int).tolist()


def test_start_end_window(gen: Path) -> None:
    path = make_video(gen / "window.mp4", n=20).path
    video = decode_video(path, DecodeConfig(frames=4, start=0.5, end=1.5, decoder="pyav"))
    assert video.indices == [5, 8, 11, 14] and shown_indices(video) == video.indices
    with pytest.raises(VideoDecodeError) as excinfo:
        decode_video(path, DecodeConfig(frames=4, start=5.0))
    assert_one_line_error(excinfo, path, "no frames in")


def test_rate_mode_caps_and_never_repeats(gen: Path) -> None:
    path = make_video(gen / "rate.mp4", n=20).path
    assert decode_video(path, DecodeConfig(fps=2)).indices == [0, 5, 10, 15]
    capped = decode_video(path, DecodeConfig(fps=2, max_frames=3))
    assert capped.indices == [0, 5, 15] and any("capped" in note for note in capped.notes)
    dense = decode_video(path, DecodeConfig(fps=25, decoder="pyav"))
    assert dense.indices == list(range(20)) and shown_indices(dense) == dense.indices
    assert dense.padded is False and any("repeats dropped" in note for note in dense.notes)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), frames=st.integers(1, 96))
def test_sample_indices_follows_linspace(n: int, frames: int) -> None:
    stamps = np.arange(n) / 30.0
    chosen = sample_indices(stamps, n / 30.0, DecodeConfig(frames=frames))
    assert chosen.indices == np.linspace(0, n - 1, frames, dtype=int).tolist()
    assert chosen.padded == (n < frames) and chosen.requested == frames
    assert chosen.indices == sorted(chosen.indices)
    if n >= frames:
        assert len(set(chosen.indices)) == frames


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), fps=st.floats(0.2, 60.0), cap=st.one_of(st.none(), st.integers(1, 40)))
def test_sample_indices_rate_mode_properties(n: int, fps: float, cap) -> None:
    stamps = np.arange(n) / 10.0
    chosen = sample_indices(stamps, n / 10.0, DecodeConfig(fps=fps, max_frames=cap))
    assert chosen.indices[0] == 0 and len(chosen.indices) >= 1
    assert all(b > a for a, b in zip(chosen.indices, chosen.indices[1:]))
    assert all(0 <= i < n for i in chosen.indices)
    if cap is not None:
        assert len(chosen.indices) <= cap
    uncapped = min(n, int(np.ceil(n / 10.0 * fps - 1e-6)))
    assert len(chosen.indices) == (uncapped if cap is None else min(cap, uncapped))


@pytest.mark.parametrize(
    "cfg,word",
    [
        (DecodeConfig(decoder="opencv"), "decoder"),
        (DecodeConfig(frames=0), "frames"),
        (DecodeConfig(fps=0), "fps"),
        (DecodeConfig(fps=1, max_frames=0), "--max-frames"),
        (DecodeConfig(start=2.0, end=1.0), "end"),
        (DecodeConfig(start=-1.0), "start"),
    ],
)
def test_invalid_settings_are_rejected(cfg: DecodeConfig, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        decode_video(SAMPLES / "realshort.mp4", cfg)


def test_timeout_abandons_a_slow_decode(gen: Path) -> None:
    path = make_video(gen / "slow.mp4", n=70).path
    with pytest.raises(VideoDecodeError) as excinfo:
        decode_video(path, DecodeConfig(frames=4, decoder="pyav", timeout=1e-9))
    assert_one_line_error(excinfo, path, "timeout")


def test_decoded_video_to_dict_is_json(gen: Path) -> None:
    video = decode_video(SAMPLES / "realshort.mp4", DecodeConfig(frames=3))
    data = json.loads(json.dumps(video.to_dict()))
    assert data["shape"] == [3, 240, 320, 3] and data["indices"] == [0, 17, 35]
    assert isinstance(video.info, VideoInfo) and data["info"]["num_frames"] == 36


# ---------------------------------------------------------------- broken inputs


def test_broken_inputs_raise_one_line_errors(gen: Path) -> None:
    cases = []
    cases.append((make_zero_bytes(gen / "empty.mp4"), "empty file"))
    cases.append((make_random_bytes(gen / "noise.mp4"), "not a readable video"))
    cases.append((make_text_file(gen / "notes.txt"), "not a video"))
    cases.append((make_text_file(gen / "notes.mp4"), "not a readable video"))
    full = make_video(gen / "to_cut.mp4", n=30).path  # moov written last: cut before it
    data = full.read_bytes()
    before_moov = (data.find(b"moov") - 4) / len(data)
    cases.append((make_truncated(full, gen / "cut.mp4", keep=before_moov * 0.9), "no 'moov' index"))
    front = make_video(gen / "front.mp4", n=30, options={"movflags": "faststart"}).path
    cases.append((make_truncated(front, gen / "cut_index.mp4", keep=0.2), "'moov' is cut off"))
    cases.append((make_audio_only(gen / "sound.m4a"), "no video stream"))
    cases.append((gen, "is a directory"))
    cases.append((gen / "absent.mp4", "no such file"))
    for path, words in cases:
        for call in (probe_video, decode_video):
            with pytest.raises(VideoDecodeError) as excinfo:
                call(path)
            assert_one_line_error(excinfo, path, words)


def test_pattern_round_trips() -> None:
    for index in range(256):
        assert read_index(frame_pattern(index, 64, 48)) == index


def test_error_keeps_path_and_cause_and_pickles() -> None:
    error = VideoDecodeError(Path("/data/a: b.mp4"), "bad\nthing")
    assert str(error) == "/data/a: b.mp4: bad thing"
    assert (error.path, error.cause) == ("/data/a: b.mp4", "bad thing")
    copy = pickle.loads(pickle.dumps(error))  # crosses process boundaries (prefetch workers)
    assert str(copy) == str(error) and (copy.path, copy.cause) == (error.path, error.cause)
    ready = VideoDecodeError("x.mp4: no such file")
    assert (ready.path, ready.cause, str(ready)) == ("x.mp4", "no such file", "x.mp4: no such file")
