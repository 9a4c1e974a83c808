"""Decode time and memory per clip, through ``aot_cli.video.decode_video``.

Works on any checkout of the project (it only uses ``decode_video(path, DecodeConfig(...))``), so the
same script measures two branches:

    cd /work/main && python /path/to/benchmarks/decode.py samples/*.mp4 samples/*.mov
    cd <branch>   && python benchmarks/decode.py samples/*.mp4 samples/*.mov

``--against DIR`` interleaves this checkout and another one call by call (each in its own process,
with that checkout's .venv), so both see the same load:

    cd <branch> && python benchmarks/decode.py samples/*.mp4 samples/*.mov --against /work/main --repeat 15
    # at the tower's size, as aot bench's decode stage (also prints CPU-time medians):
    cd <branch> && python benchmarks/decode.py samples/*.mp4 samples/*.mov --against /work/main --tower dinov2

Prints one JSON line per clip and decoder: best-of-``--repeat`` seconds, the frames returned, the
decoder that read them and (``--rss``) the peak resident memory of a fresh process that decodes the
clip once. ``--target HxW`` passes a decode target size where the checkout supports one.

Native-size vs tower-size decoding, through preprocessing and a real tower (``--tokens``):

    python benchmarks/decode.py /tmp/aot-long/clip4k.mp4 samples/bikes.mp4 --tokens --frames 8

Peak memory of a whole command, all its processes together (polled every 10 ms):

    python benchmarks/decode.py --command-rss aot compress tests/data/flat_8192x8192.mp4 --frames 8 \
        --model dinov2-small-offline -o /tmp/c8k

Long clips for the cost check (not committed; written with PyAV, a few minutes on two cores):

    python benchmarks/decode.py --make /tmp/aot-long
    # -> /tmp/aot-long/long1080.mp4 (10 min, 1920x1080, 25 fps H.264) and long1080.ts (same stream, MPEG-TS)
    python benchmarks/decode.py --make-4k /tmp/aot-long
    # -> /tmp/aot-long/clip4k.mp4 (64 frames, 3840x2160 H.264, a mosaic of bikes.mp4 at native size)
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path


def decode_once(path: str, frames: int, decoder: str, target):
    from aot_cli.config import DecodeConfig
    from aot_cli.video import decode_video

    kwargs = {}
    if target is not None:
        if "target_size" not in inspect.signature(decode_video).parameters:
            raise SystemExit("this checkout's decode_video takes no target size")
        kwargs["target_size"] = target
    t0 = time.perf_counter()
    video = decode_video(path, DecodeConfig(frames=frames, decoder=decoder), **kwargs)
    return time.perf_counter() - t0, video


def peak_rss_mib(path: str, frames: int, decoder: str, target) -> float:
    """Peak RSS (MiB) of a fresh interpreter that decodes ``path`` once."""
    code = (
        "import resource, sys, json\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import decode as bench\n"
        f"bench.decode_once({path!r}, {frames}, {decoder!r}, {target!r})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def command_peak(command: list) -> None:
    """Run ``command``; print its exit code, wall time, the highest summed RSS of its process tree
    seen while polling every 10 ms, and the sum of each process's own peak (VmHWM; an upper bound
    of the simultaneous total)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampled, peaks = 0, {}
    from aot_cli.bench.memory import descendants

    while child.poll() is None:
        pids = [child.pid] + descendants(child.pid)
        sampled = max(sampled, sum(_status_kib(p, "VmRSS") for p in pids))
        for p in pids:
            peaks[p] = max(peaks.get(p, 0), _status_kib(p, "VmHWM"))
        time.sleep(0.01)
    stderr = child.stderr.read()
    print(json.dumps({"command": " ".join(command), "exit": child.returncode,
                      "seconds": round(time.perf_counter() - t0, 2),
                      "tree_rss_peak_mib": round(sampled / 1024, 1),
                      "sum_of_process_peaks_mib": round(sum(peaks.values()) / 1024, 1),
                      "processes": len(peaks), "load_1min": round(os.getloadavg()[0], 2),
                      "stderr_tail": stderr.strip().splitlines()[-2:]}))


def measure(args) -> None:
    target = None
    if args.target:
        h, w = (int(v) for v in args.target.lower().split("x"))
        target = (h, w)
    for path in args.clips:
        for decoder in args.decoders:
            times = []
            video = None
            for _ in range(args.repeat):
                seconds, video = decode_once(path, args.frames, decoder, target)
                times.append(seconds)
            row = {
                "clip": Path(path).name,
                "decoder_asked": decoder,
                "decoder": video.decoder,
                "frames": int(video.frames.shape[0]),
                "shape": list(video.frames.shape[1:]),
                "seconds_best": round(min(times), 4),
                "seconds_all": [round(t, 4) for t in times],
                "load_1min": round(os.getloadavg()[0], 2),
            }
            if args.rss:
                row["peak_rss_mib"] = round(peak_rss_mib(path, args.frames, decoder, target), 1)
            print(json.dumps(row), flush=True)


SERVER = (
    "import json, resource, sys, time\n"
    "sys.path.insert(0, '.')\n"
    "from aot_cli.config import DecodeConfig\n"
    "from aot_cli.video import decode_video\n"
    "def cpu():\n"
    "    usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    return usage.ru_utime + usage.ru_stime\n"
    "for line in sys.stdin:\n"
    "    path, frames, decoder, tower = json.loads(line)\n"
    "    kwargs = {}\n"
    "    if tower:\n"
    "        from aot_cli.models.preprocess import dinov2_spec, square_spec\n"
    "        spec = dinov2_spec() if tower == 'dinov2' else square_spec(int(tower))\n"
    "        kwargs['target_size'] = spec.resized_size\n"
    "    c0, t0 = cpu(), time.perf_counter()\n"
    "    video = decode_video(path, DecodeConfig(frames=frames, decoder=decoder), **kwargs)\n"
    "    print(json.dumps([time.perf_counter() - t0, video.decoder, cpu() - c0]), flush=True)\n"
)


def paired(args) -> None:
    """Interleave this checkout and ``--against DIR`` (its own .venv) on the same clips, call by call,
    so both see the same machine load; print the median and best of each and their ratio."""
    import statistics

    here = Path.cwd()
    there = Path(args.against).resolve()
    servers = {}
    for name, folder in (("this", here), ("against", there)):
        python = folder / ".venv" / "bin" / "python"
        servers[name] = subprocess.Popen([str(python if python.exists() else sys.executable), "-c", SERVER],
                                         cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for path in args.clips:
            path = str(Path(path).resolve())
            for decoder in args.decoders:
                times = {"this": [], "against": []}
                cpu = {"this": [], "against": []}
                used = {}
                for _ in range(args.repeat):
                    for name, server in servers.items():
                        server.stdin.write(json.dumps([path, args.frames, decoder, args.tower]) + "\n")
                        server.stdin.flush()
                        seconds, used[name], cpu_seconds = json.loads(server.stdout.readline())
                        times[name].append(seconds)
                        cpu[name].append(cpu_seconds)
                med = {k: statistics.median(v) for k, v in times.items()}
                cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
                print(json.dumps({"clip": Path(path).name, "decoder_asked": decoder, "decoders": used,
                                  "tower": args.tower,
                                  "median_s": {k: round(v, 4) for k, v in med.items()},
                                  "best_s": {k: round(min(v), 4) for k, v in times.items()},
                                  "cpu_median_s": {k: round(v, 4) for k, v in cpu_med.items()},
                                  "ratio_median": round(med["this"] / med["against"], 3),
                                  "ratio_best": round(min(times["this"]) / min(times["against"]), 3),
                                  "ratio_cpu": round(cpu_med["this"] / cpu_med["against"], 3),
                                  "repeat": args.repeat, "load_1min": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        for server in servers.values():
            server.stdin.close()
            server.wait()


def token_difference(args) -> None:
    """Decode each clip at native size and at the tower's size (what ``aot compress`` does), run
    both through the same preprocessing and tower, and print how far apart they end up: pixel values
    (mean absolute difference on the 0..255 scale, after preprocessing) and tokens (cosine similarity,
    relative L2). Other preprocessing specs (SigLIP exact 384, SigLIP2 naflex) are compared on pixels."""
    import torch

    from aot_cli.config import DecodeConfig, ModelConfig
    from aot_cli.models import load_model
    from aot_cli.models.preprocess import naflex_spec, preprocess_frames, square_spec
    from aot_cli.video import decode_video

    adapter = load_model(ModelConfig(model=args.model, device="cpu", dtype="fp32"))
    cpu = torch.device("cpu")
    specs = {"model": adapter.spec, "siglip-exact-384": square_spec(384), "siglip2-naflex-256": naflex_spec(16)}
    for path in args.clips:
        native = decode_video(path, DecodeConfig(frames=args.frames, decoder="pyav"))
        for name, spec in specs.items():
            small = decode_video(path, DecodeConfig(frames=args.frames, decoder="pyav"), target_size=spec.resized_size)
            a = preprocess_frames(native.frames, spec, cpu, torch.float32)
            b = preprocess_frames(small.frames, spec, cpu, torch.float32)
            std = torch.tensor(spec.std).view(1, 3, 1, 1)
            row = {"clip": Path(path).name, "spec": name if name != "model" else f"model:{args.model}",
                   "native": list(native.frames.shape[1:3]), "decode_size": list(small.decode_size),
                   "same_geometry": list(a.shape) == list(b.shape)}
            if row["same_geometry"]:
                row["pixel_mad_0_255"] = round(float(((a - b).abs() * std * 255).mean()), 3)
            if name == "model" and row["same_geometry"]:
                with torch.no_grad():
                    ta, tb = adapter.features(a), adapter.features(b)
                ta, tb = ta.reshape(-1, ta.shape[-1]), tb.reshape(-1, tb.shape[-1])
                cos = torch.nn.functional.cosine_similarity(ta, tb, dim=-1)
                row.update(token_cos_mean=round(float(cos.mean()), 5), token_cos_min=round(float(cos.min()), 5),
                           token_rel_l2=round(float((ta - tb).norm() / ta.norm()), 5))
            print(json.dumps(row), flush=True)


def bikes_frames(width: int, height: int):
    """RGB frames of samples/bikes.mp4 scaled to ``width`` x ``height`` (real footage, looped by the caller)."""
    import av

    here = Path(__file__).resolve().parent.parent / "samples" / "bikes.mp4"
    with av.open(str(here)) as container:
        return [f.to_ndarray(format="rgb24", width=width, height=height) for f in container.decode(video=0)]


def encode(path: Path, frames, count: int, width: int, height: int, fps: int = 25, fmt=None) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(count):
            # play the clip forwards then backwards so the loop has no jump every 10 s
            cycle = 2 * len(frames) - 2
            j = i % cycle
            picture = frames[j if j < len(frames) else cycle - j]
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def remux_to_ts(src: Path, dst: Path) -> None:
    """Copy the H.264 stream of MP4 ``src`` into MPEG-TS ``dst`` (Annex B bitstream filter)."""
    import av
    from av.bitstream import BitStreamFilterContext

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        ivs = inp.streams.video[0]
        ovs = out.add_stream_from_template(ivs)
        bsf = BitStreamFilterContext("h264_mp4toannexb", ivs, ovs)
        for packet in inp.demux(ivs):
            if packet.dts is None:
                continue
            for filtered in bsf.filter(packet):
                filtered.stream = ovs
                out.mux(filtered)
        for filtered in bsf.filter(None):
            filtered.stream = ovs
            out.mux(filtered)


def make_long(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    frames = bikes_frames(1920, 1080)
    mp4 = out / "long1080.mp4"
    encode(mp4, frames, 25 * 600, 1920, 1080)
    remux_to_ts(mp4, out / "long1080.ts")
    print(json.dumps({"made": [str(mp4), str(out / "long1080.ts")]}))


def tiled_frames(width: int, height: int, count: int):
    """``count`` pictures of ``width`` x ``height`` tiled from native-size frames of bikes.mp4 (a
    mosaic of real footage, so the picture has real detail at every scale)."""
    import numpy as np

    source = bikes_frames(640, 272)
    frames = []
    for i in range(count):
        picture = np.zeros((height, width, 3), dtype=np.uint8)
        k = 0
        for y in range(0, height, 272):
            for x in range(0, width, 640):
                tile = source[(i + 7 * k) % len(source)]
                picture[y:y + 272, x:x + 640] = tile[: min(272, height - y), : min(640, width - x)]
                k += 1
        frames.append(picture)
    return frames


def make_4k(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "clip4k.mp4"
    encode(path, tiled_frames(3840, 2160, 64), 64, 3840, 2160)
    print(json.dumps({"made": [str(path)]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--decoders", nargs="+", default=["auto"], help="auto, pyav, decord")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss", action="store_true", help="also peak RSS of a fresh process per clip")
    parser.add_argument("--target", help="decode target HxW (checkouts that support it)")
    parser.add_argument("--tower", help="with --against: decode at the size this tower needs, as aot bench does "
                        "(dinov2: DINOv2's preprocessing; a number N: an N-px square tower)")
    parser.add_argument("--make", metavar="DIR", help="write the 10-minute 1080p MP4 and TS into DIR")
    parser.add_argument("--make-4k", metavar="DIR", help="write a 64-frame 4K MP4 into DIR")
    parser.add_argument("--against", metavar="DIR", help="another checkout (with its .venv): interleave the two "
                        "call by call and print both and the ratio (this / DIR)")
    parser.add_argument("--tokens", action="store_true", help="compare native-size and tower-size decoding "
                        "through preprocessing and --model's tower (pixels and tokens)")
    parser.add_argument("--model", default="dinov2-small-offline", help="tower for --tokens")
    parser.add_argument("--command-rss", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="run COMMAND (the rest of the line) and print the peak RSS of its process tree")
    args = parser.parse_args()
    if args.command_rss:
        command_peak(args.command_rss)
        return
    if args.make:
        make_long(args.make)
    if args.make_4k:
        make_4k(args.make_4k)
    if args.clips and args.tokens:
        token_difference(args)
    elif args.clips and args.against:
        paired(args)
    elif args.clips:
        sys.path.insert(0, os.getcwd())
        measure(args)


if __name__ == "__main__":
    main()
