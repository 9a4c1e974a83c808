"""Throughput of batch runs (`run_batch`): videos/s and frames/s over the clips in a folder.

    python benchmarks/batch.py [--videos samples/] [--copies 4] [--model dinov2-small-offline]
                               [--frames 32 8] [--workers 0 1 2] [--device cpu] [--dtype fp32]
                               [--repeat 3] [--gather-only]

The clips are hard-linked ``--copies`` times under distinct names (so nothing is skipped), the model is
loaded once, and each setting compresses all of them into a fresh cache directory; model loading is
not timed, worker start-up is. For every frame count it compares:

- ``inline``: decoding in the main process, one video per tower call (no overlap);
- ``workers=N``: N decode processes read ahead while the tower runs, one video per tower call;
- ``workers=N+gather``: the same, and ready videos share tower calls up to ``batch_frames`` frames;
- ``commit-each``: the last setting committing every video (``--flush-every 0``) instead of every 5 s.

``--gather-only`` keeps ``inline`` and ``workers=N+gather`` (the worker-count comparison alone).
``--repeat N`` runs the settings N times in turn (so load from other processes hits each alike) and
prints the median of each setting's runs.

Prints one table row per setting and a JSON line per row (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}


def make_dataset(source: Path, copies: int, target: Path) -> int:
    """Hard-link (else copy) every clip of ``source`` ``copies`` times into ``target`` under
    distinct names (symlinks would be merged as one file); the number of videos."""
    clips = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise SystemExit(f"{source}: no video clips")
    for k in range(copies):
        for clip in clips:
            dest = target / f"c{k}_{clip.name}"
            try:
                os.link(clip, dest)
            except OSError:
                shutil.copy(clip, dest)
    return len(clips) * copies


def run_setting(items, cfg, adapter, out: Path, *, workers: int, gather: bool, flush_every: float) -> Dict:
    from aot_cli.pipeline.batch import run_batch

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = run_batch(items, out, cfg, adapter=adapter, decode_workers=workers, flush_every=flush_every,
                  gather_frames=None if gather else 1)
    wall = time.perf_counter() - t0
    if s.failed:
        raise SystemExit(f"{s.failed} videos failed: {s.failures[0]['error']}")
    return {"videos": s.done, "frames": s.frames, "seconds": round(wall, 3),
            "videos_per_s": round(s.done / wall, 3), "frames_per_s": round(s.frames / wall, 1),
            "tower_calls": s.tower_calls, "stages_s": {k: round(v, 3) for k, v in s.stage_seconds.items()}}


def median_row(runs: List[Dict]) -> Dict:
    """The run with the median wall time (the lower middle one for an even count), with every
    run's videos/s."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs_videos_per_s"] = [r["videos_per_s"] for r in runs]
    return row


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=ROOT / "samples")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--model", default="dinov2-small-offline")
    ap.add_argument("--frames", type=int, nargs="+", default=[32, 8])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-frames", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="Runs of every setting, in turn; the median is shown.")
    ap.add_argument("--gather-only", action="store_true", help="Only inline and workers=N+gather.")
    args = ap.parse_args(argv)

    import torch

    from aot_cli.config import DecodeConfig, ModelConfig
    from aot_cli.models import load_model
    from aot_cli.pipeline.inputs import expand_inputs
    from aot_cli.pipeline.run import RunConfig

    work = Path(tempfile.mkdtemp(prefix="aot-batch-bench-"))
    try:
        data = work / "videos"
        data.mkdir()
        n = make_dataset(args.videos, args.copies, data)
        items = expand_inputs([str(data)])
        model_cfg = ModelConfig(model=args.model, device=args.device, dtype=args.dtype, batch_frames=args.batch_frames)
        adapter = load_model(model_cfg)
        print(f"# {n} videos ({args.copies} x {args.videos}), model {args.model} on {adapter.device} "
              f"{adapter.dtype}, batch_frames {args.batch_frames}, torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs", flush=True)
        print(f"{'setting':<22}{'frames':>7}{'videos/s':>10}{'frames/s':>10}{'calls':>7}  stages (s)")
        for frames in args.frames:
            cfg = RunConfig(decode=DecodeConfig(frames=frames), model=model_cfg)
            run_setting(items[:2], cfg, adapter, work / "warm", workers=max(args.workers), gather=True,
                        flush_every=5.0)  # warm-up: kernels, forkserver
            settings = [("inline", 0, False, 5.0)]
            if not args.gather_only:
                settings += [(f"workers={w}", w, False, 5.0) for w in args.workers]
            settings += [(f"workers={w}+gather", w, True, 5.0) for w in args.workers]
            if not args.gather_only:
                settings += [(f"workers={max(args.workers)}+gather commit-each", max(args.workers), True, 0.0)]
            rows: Dict[str, List[Dict]] = {name: [] for name, *_ in settings}
            for _ in range(args.repeat):
                for name, workers, gather, flush in settings:
                    rows[name].append(run_setting(items, cfg, adapter, work / "cache", workers=workers, gather=gather,
                                                  flush_every=flush))
            for name, workers, gather, flush in settings:
                row = median_row(rows[name])
                stages = " ".join(f"{k}={v:.2f}" for k, v in row["stages_s"].items())
                print(f"{name:<22}{frames:>7}{row['videos_per_s']:>10.2f}{row['frames_per_s']:>10.1f}"
                      f"{row['tower_calls']:>7}  {stages}", flush=True)
                if args.json:
                    print(json.dumps({"setting": name, "frames_per_video": frames, **row}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
