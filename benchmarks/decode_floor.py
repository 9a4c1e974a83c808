"""Exact reads against the floor: how close ``decode_video`` comes to the least work an exact reader can do.

Three readers of the same 32 uniformly spaced frames, decoded at the size a 384-px tower needs
(``decode_size`` of a SigLIP-384 spec: twice the tower's side, aspect kept), alternated call by call
in one process so they see the same machine load; the medians are printed:

- ``ours``: ``decode_video(path, DecodeConfig(frames=32), target_size=...)`` (the exact default; it
  probes the file, seeks, verifies every picture, and hashes the file as a library call does);
- ``floor``: the least work an exact CPU reader can do, given the frames' timestamps for free: for
  each target, seek to the keyframe before it, let FFmpeg skip non-reference pictures
  (``skip_frame=NONREF``) up to the target's packet, decode the target, drain the decoder, and
  keep its RGB as a numpy array (every reader hands the frames over);
- ``keyframe``: one keyframe decode per target (seek, decode the keyframe's packet, drain): what
  ``--seek keyframe`` costs at least;
- ``ours_keyframe`` (when this checkout has it): ``decode_video`` with ``DecodeConfig(seek="keyframe")``.

Make the long clips first (from the sample clips, scaled and looped; a few minutes on two cores):

    python benchmarks/decode_floor.py --make /tmp/aot-floor
    # h264_1080_gop60_bf.mp4 (2 min 1920x1080, GOP 60, 3 B-frames), hevc_720.mp4 (2 min 1280x720),
    # h264_1080_gop30.mp4 (60 s 1920x1080, GOP 30), h264_720_10min.ts (10 min 1280x720 MPEG-TS)

then time them:

    python benchmarks/decode_floor.py /tmp/aot-floor/*.mp4 --repeat 5
    python benchmarks/decode_floor.py /tmp/aot-floor/h264_720_10min.ts --repeat 3 --sequential

Each row gives wall-clock medians and bests and CPU-time medians (all threads of this process:
steadier than wall time when other processes share the machine).

``--sequential`` also times a plain sequential read of the 32 frames (``DecodeConfig`` cannot force
it, so it decodes the stream front to back with PyAV, converting the 32 frames): today's cost for
containers read without seeking. One JSON line per clip.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 32
TOWER = 384

#: name: (width, height, seconds, encoder, codec options, container format)
CLIPS = {
    "h264_1080_gop60_bf.mp4": (1920, 1080, 120, "libx264", {"preset": "veryfast", "g": "60", "bf": "3",
                                                           "x264-params": "keyint=60:min-keyint=60:scenecut=0"}, None),
    "hevc_720.mp4": (1280, 720, 120, "libx265", {"preset": "ultrafast", "x265-params": "log-level=none"}, None),
    "h264_1080_gop30.mp4": (1920, 1080, 60, "libx264", {"preset": "veryfast", "g": "30",
                                                       "x264-params": "keyint=30:min-keyint=30:scenecut=0"}, None),
    "h264_720_10min.ts": (1280, 720, 600, "libx264", {"preset": "veryfast"}, "mpegts"),
}


def make(folder: Path) -> None:
    """Write :data:`CLIPS` into ``folder``: samples/bikes.mp4 scaled to each size and looped."""
    folder.mkdir(parents=True, exist_ok=True)
    source = ROOT / "samples" / "bikes.mp4"
    for name, (width, height, seconds, codec, options, fmt) in CLIPS.items():
        path = folder / name
        if path.exists():
            print(f"{path} exists", file=sys.stderr)
            continue
        rate = Fraction(25)
        wanted = int(seconds * rate)
        written = 0
        partial = path.with_suffix(".part" + path.suffix)
        with av.open(str(partial), "w", format=fmt or None) as out:
            stream = out.add_stream(codec, rate=rate, options=dict(options))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = 1 / rate
            while written < wanted:
                with av.open(str(source)) as clip:
                    for picture in clip.decode(video=0):
                        if written >= wanted:
                            break
                        frame = picture.reformat(width=width, height=height, format="yuv420p")
                        frame.pts, frame.time_base = written, 1 / rate
                        for packet in stream.encode(frame):
                            out.mux(packet)
                        written += 1
            for packet in stream.encode(None):
                out.mux(packet)
        partial.rename(path)
        print(f"wrote {path} ({written} frames)", file=sys.stderr)


def targets_of(path: str):
    """(the pts of every picture in display order, keyframe pts, {keyframe pts: byte offset} for
    containers sought by byte offset, else None): what the floor is given for free."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        by_bytes = container.format.name.split(",")[0] in ("mpegts", "mpeg", "asf")
        pts, keys, positions = [], [], {}
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
                positions[packet.pts] = packet.pos
        return sorted(pts), sorted(keys), positions if by_bytes else None


def output_size(width: int, height: int):
    from aot_cli.models.preprocess import square_spec
    from aot_cli.video import decode_size

    return decode_size(height, width, square_spec(TOWER).resized_size)


def floor_read(path: str, wanted_pts: list, keys: list, positions, size, keyframe_only: bool = False) -> int:
    """The floor (see the module docstring); returns the pictures converted. ``positions``: byte
    offsets of the keyframes (MPEG-TS/PS, ASF: seek there) or None (seek by time)."""
    height, width = size
    kept = []  # the RGB frames, as every reader must hand them over
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for target in wanted_pts:
            at = int(np.searchsorted(keys, target, side="right")) - 1
            key = keys[max(at, 0)]
            goal = key if keyframe_only else target
            if positions is not None:
                container.seek(int(positions[key]), unsupported_byte_offset=True)
            else:
                container.seek(key, stream=stream, backward=True, any_frame=False)
            found = False
            for packet in container.demux(stream):
                if packet.size == 0:
                    break
                stream.codec_context.skip_frame = "DEFAULT" if packet.pts in (goal, key) else "NONREF"
                pictures = stream.decode(packet)
                if packet.pts == goal:
                    pictures += stream.decode(None)  # drain: the goal is in
                for picture in pictures:
                    if picture.pts == goal and not found:
                        rgb = picture.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                        kept.append(np.array(rgb.to_ndarray(), copy=True))
                        found = True
                if packet.pts == goal:
                    break
    return len(kept)


def sequential_read(path: str, wanted_pts: list, size) -> int:
    height, width = size
    wanted = set(wanted_pts)
    kept = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for picture in container.decode(stream):
            if picture.pts in wanted:
                rgb = picture.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                kept.append(np.array(rgb.to_ndarray(), copy=True))
    return len(kept)


def ours(path: str, **cfg) -> int:
    from aot_cli.config import DecodeConfig
    from aot_cli.models.preprocess import square_spec
    from aot_cli.video import decode_video

    video = decode_video(path, DecodeConfig(frames=FRAMES, **cfg), target_size=square_spec(TOWER).resized_size)
    return int(video.frames.shape[0])


def cpu_seconds() -> float:
    """CPU seconds this process has used, all threads (less sensitive to other processes on a
    busy machine than wall time; the hashing thread of ``decode_video`` counts in full)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def has_keyframe_mode() -> bool:
    from aot_cli.config import DecodeConfig

    return "seek" in getattr(DecodeConfig, "__dataclass_fields__", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*")
    parser.add_argument("--make", metavar="DIR", help="write the long clips into DIR")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sequential", action="store_true", help="also time a plain sequential read")
    args = parser.parse_args()
    if args.make:
        make(Path(args.make))
        return
    for path in args.clips:
        pts, keys, positions = targets_of(path)
        picks = np.linspace(0, len(pts) - 1, FRAMES, dtype=int)
        wanted = [pts[i] for i in picks]
        with av.open(path) as container:
            stream = container.streams.video[0]
            size = output_size(stream.codec_context.width, stream.codec_context.height)
        readers = {"ours": lambda: ours(path), "floor": lambda: floor_read(path, wanted, keys, positions, size),
                   "keyframe": lambda: floor_read(path, wanted, keys, positions, size, keyframe_only=True)}
        if has_keyframe_mode():
            readers["ours_keyframe"] = lambda: ours(path, seek="keyframe")
        if args.sequential:
            readers["sequential"] = lambda: sequential_read(path, wanted, size)
        times = {name: [] for name in readers}
        cpu = {name: [] for name in readers}
        for _ in range(args.repeat):
            for name, read in readers.items():
                c0, t0 = cpu_seconds(), time.perf_counter()
                read()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(cpu_seconds() - c0)
        med = {name: statistics.median(v) for name, v in times.items()}
        cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
        row = {"clip": Path(path).name, "frames": len(pts), "keyframes": len(keys), "decode_size": list(size),
               "median_s": {k: round(v, 3) for k, v in med.items()},
               "best_s": {k: round(min(v), 3) for k, v in times.items()},
               "ours_over_floor": round(med["ours"] / med["floor"], 3),
               "ours_over_floor_best": round(min(times["ours"]) / min(times["floor"]), 3),
               "cpu_median_s": {k: round(v, 3) for k, v in cpu_med.items()},
               "ours_over_floor_cpu": round(cpu_med["ours"] / cpu_med["floor"], 3),
               "repeat": args.repeat, "pyav": av.__version__, "load_1min": round(os.getloadavg()[0], 2)}
        if "ours_keyframe" in med:
            row["ours_keyframe_over_keyframe"] = round(med["ours_keyframe"] / med["keyframe"], 3)
            row["ours_keyframe_over_keyframe_best"] = round(min(times["ours_keyframe"]) / min(times["keyframe"]), 3)
            row["ours_keyframe_over_keyframe_cpu"] = round(cpu_med["ours_keyframe"] / cpu_med["keyframe"], 3)
        if "sequential" in med:
            row["sequential_over_ours"] = round(med["sequential"] / med["ours"], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
