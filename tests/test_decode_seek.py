"""Exact reads at the floor, seeking in containers without an index, and ``--seek keyframe``.

- MPEG-TS/PS and ASF are sought by the byte offsets the probe found, AVI through its ``idx1`` index;
  every picture is still the one a sequential decode gives (generated files show their own number).
- After a seek only what the wanted pictures depend on is decoded (``skip_frame=NONREF`` for the
  others), one pass per group of pictures.
- ``DecodeConfig(seek="keyframe")`` takes the keyframe at or before each sampled frame, records the
  pictures used and the mode, is validated like every setting and enters the configuration
  fingerprint.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from aot_cli.config import DecodeConfig
from aot_cli.video import decode_video, probe_video
from aot_cli.video.probe import probe_with_index
from aot_cli.video.sampling import check_decode_config
from videogen import encoder_available, make_video, read_index, remux_all_keyframes


def shown(video) -> list:
    return [read_index(frame) for frame in video.frames.numpy()]


def need(codec: str) -> None:
    if not encoder_available(codec):
        pytest.skip(f"this PyAV build has no '{codec}' encoder")


#: MPEG-2 at a constant 1 Mbit/s: pictures big enough to start packs of their own (tiny pictures
#: share one PES, and then only the first has a byte offset to seek to)
CBR = {"b": "1M", "minrate": "1M", "maxrate": "1M", "bufsize": "1M"}
# name: (encoder, container format, encoder options, size, expected seek method)
SEEKABLE = {
    "h264_bframes.ts": ("libx264", "mpegts", {"bf": "2"}, (64, 48), "bytes"),
    "mpeg2_bframes.mpg": ("mpeg2video", "vob", {"bf": "2", **CBR}, (160, 120), "bytes"),
    "wmv2.asf": ("wmv2", "asf", {}, (320, 240), "bytes"),
    "mpeg4.avi": ("mpeg4", None, {}, (64, 48), "time"),
    "h264_bframes.mp4": ("libx264", None, {"bf": "3"}, (64, 48), "time"),
}


@pytest.mark.parametrize("name", sorted(SEEKABLE))
def test_containers_without_an_index_are_sought_exactly(tmp_path: Path, name: str) -> None:
    codec, fmt, options, size, method = SEEKABLE[name]
    need(codec)
    path = make_video(tmp_path / name, codec=codec, fmt=fmt, n=96, gop=12, size=size, codec_options=options).path
    _, index = probe_with_index(path)
    assert index.seek_by == method
    for frames in (7, 40):  # sparse targets (a group each) and dense ones (several per group)
        video = decode_video(path, DecodeConfig(frames=frames))
        assert video.read == "seek", video.notes
        assert video.indices == np.linspace(0, 95, frames, dtype=int).tolist()
        assert shown(video) == video.indices
        assert video.timestamps == pytest.approx([i / 10 for i in video.indices], abs=1e-3)


def test_avi_with_reordered_pictures_is_read_in_order(tmp_path: Path) -> None:
    # AVI timestamps are packet counters: with B-frames they do not name the pictures
    path = make_video(tmp_path / "b.avi", codec="libx264", n=48, gop=12, codec_options={"bf": "3"}).path
    _, index = probe_with_index(path)
    assert index.seek_by is None
    video = decode_video(path, DecodeConfig(frames=9))
    assert video.read == "sequential" and shown(video) == video.indices


def test_palettised_video_is_never_sought(tmp_path: Path) -> None:
    # the palette comes with the first packet only: pictures decoded after a seek would be black
    from videogen import make_pal8_avi

    path = make_pal8_avi(tmp_path / "pal.avi", n=24)
    _, index = probe_with_index(path)
    assert index.seek_by is None
    video = decode_video(path, DecodeConfig(frames=6))
    assert shown(video) == video.indices and video.frames.float().mean() > 20


def count_decoded(monkeypatch) -> list:
    """Patch the seeking reader so every picture the decoder hands over is counted."""
    from aot_cli.video import seek_reader

    counted = [0]
    original = seek_reader.GroupReader.decode

    def decode(self, packet):
        pictures = original(self, packet)
        counted[0] += len(pictures)
        return pictures

    monkeypatch.setattr(seek_reader.GroupReader, "decode", decode)
    return counted


def test_only_what_the_targets_depend_on_is_decoded(tmp_path: Path, monkeypatch) -> None:
    # 4 B-frames between references: the non-reference pictures before each target are skipped
    path = make_video(tmp_path / "b.mp4", codec="libx264", n=120, gop=40, size=(96, 64),
                      codec_options={"bf": "4", "x264-params": "b-pyramid=none"}).path
    counted = count_decoded(monkeypatch)
    video = decode_video(path, DecodeConfig(frames=4))  # frames 0, 39, 79, 119: the last of each group
    assert video.read == "seek" and shown(video) == video.indices == [0, 39, 79, 119]
    spans = 39 + 39 + 39  # pictures from each group's keyframe to its target (frame 0 comes from the probe)
    assert counted[0] < spans * 0.5, counted[0]  # most were never decoded, only references and targets


def test_lying_keyframe_flags_fall_back_to_an_exact_read(tmp_path: Path) -> None:
    honest = make_video(tmp_path / "m.mp4", codec="mpeg4", n=40, gop=10).path
    lying = remux_all_keyframes(honest, tmp_path / "lying.mp4")
    for seek in ("exact", "keyframe"):
        video = decode_video(lying, DecodeConfig(frames=8, seek=seek))
        assert shown(video) == video.indices and video.read == "sequential"


# ------------------------------------------------------------------------------ --seek keyframe


def decoded_keyframes(path: Path) -> list:
    """Frame numbers of the pictures a plain single-threaded sequential decode reports as keyframes."""
    with av.open(str(path)) as container:
        return [k for k, picture in enumerate(container.decode(container.streams.video[0])) if picture.key_frame]


def keyframe_before(keys: list, frame: int) -> int:
    return max(k for k in keys if k <= frame)


def test_keyframe_mode_reads_the_keyframe_before_each_target(tmp_path: Path, monkeypatch) -> None:
    path = make_video(tmp_path / "k.mp4", codec="libx264", n=100, gop=10, codec_options={"bf": "2"}).path
    exact = decode_video(path, DecodeConfig(frames=8))
    counted = count_decoded(monkeypatch)
    video = decode_video(path, DecodeConfig(frames=8, seek="keyframe"))
    truth = decoded_keyframes(path)
    assert len(truth) >= 8
    keys = [keyframe_before(truth, i) for i in exact.indices]
    assert video.indices == keys and shown(video) == keys  # the pictures used, recorded exactly
    assert video.timestamps == pytest.approx([i / 10 for i in keys], abs=1e-3)
    assert keys != exact.indices  # most targets are not keyframes: the mode changed the pictures
    assert video.seek == "keyframe" and video.to_dict()["seek"] == "keyframe" and exact.seek == "exact"
    assert any("keyframe" in note for note in video.notes)
    assert counted[0] <= len(set(keys))  # one keyframe decode per target (frame 0 comes from the probe)


def test_keyframe_mode_in_a_transport_stream(tmp_path: Path) -> None:
    path = make_video(tmp_path / "k.ts", codec="libx264", fmt="mpegts", n=60, gop=15).path
    video = decode_video(path, DecodeConfig(frames=5, seek="keyframe"))
    truth = decoded_keyframes(path)
    assert video.read == "seek" and video.indices == [keyframe_before(truth, i) for i in (0, 14, 29, 44, 59)]
    assert shown(video) == video.indices


def test_keyframe_mode_without_usable_timestamps_reads_the_exact_frames(tmp_path: Path) -> None:
    from videogen import make_joined_ts

    path = make_joined_ts(tmp_path / "joined.ts", tmp_path, n=16)
    video = decode_video(path, DecodeConfig(frames=6, seek="keyframe"))
    assert shown(video) == video.indices == np.linspace(0, 31, 6, dtype=int).tolist()
    assert any("exact frames were read" in note for note in video.notes)


def test_seek_setting_is_validated_and_fingerprinted() -> None:
    from aot_cli.pipeline.runconfig import RunConfig, config_fingerprint

    with pytest.raises(ValueError, match="--seek must be one of exact, keyframe"):
        check_decode_config(DecodeConfig(seek="nearest"))
    with pytest.raises(ValueError, match="--seek keyframe.*decord"):
        check_decode_config(DecodeConfig(seek="keyframe", decoder="decord"))
    identity = {"model": "x", "profile": {}}
    exact = config_fingerprint(RunConfig(decode=DecodeConfig(seek="exact")), identity)
    keyframe = config_fingerprint(RunConfig(decode=DecodeConfig(seek="keyframe")), identity)
    assert exact != keyframe


def test_seek_flag_errors_exit_2_before_any_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aot_cli.cli import main

    clip = make_video(tmp_path / "c.mp4", n=8).path
    for extra in (["--seek", "nearest"], ["--seek", "keyframe", "--decoder", "decord"]):
        result = CliRunner().invoke(main, ["compress", str(clip), "-o", str(tmp_path / "out"), "--model",
                                           "dinov2-small-offline", *extra])
        assert result.exit_code == 2, result.output
        assert "--seek" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()
    config = tmp_path / "c.toml"
    config.write_text('[decode]\nseek = "sometimes"\n')
    result = CliRunner().invoke(main, ["compress", str(clip), "-o", str(tmp_path / "out"), "--config", str(config)])
    assert result.exit_code == 2 and "seek" in result.output and not (tmp_path / "out").exists()


def test_compress_records_the_seek_mode_colour_and_versions(tmp_path: Path, tiny_dinov2_dir: Path) -> None:
    from click.testing import CliRunner

    from aot_cli.cache import TokenCache
    from aot_cli.cli import main

    clip = make_video(tmp_path / "clip.mp4", n=40, gop=10).path
    truth = decoded_keyframes(clip)
    out = tmp_path / "cache"
    result = CliRunner().invoke(main, ["compress", str(clip), "-o", str(out), "--model", str(tiny_dinov2_dir),
                                       "--frames", "4", "--seek", "keyframe", "--dtype", "fp32",
                                       "--decode-workers", "0", "-q"])
    assert result.exit_code == 0, result.output
    cache = TokenCache(out)
    meta = cache[cache.ids()[0]].meta
    assert meta["sampling"]["seek"] == "keyframe" and meta["config"]["decode"]["seek"] == "keyframe"
    assert cache[cache.ids()[0]].array("frame_indices").tolist() == [keyframe_before(truth, i) for i in (0, 13, 26, 39)]
    assert meta["versions"]["pyav"] == av.__version__ and "libavcodec" in meta["versions"]["ffmpeg"]
    assert meta["video"]["colour"]["used_matrix"] == "bt601"
    assert meta["video"]["sample_aspect_ratio"] == "1:1" and meta["video"]["stored_width"] == 64
    assert probe_video(clip).num_frames == 40
