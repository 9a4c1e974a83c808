"""Does ``torch.compile`` pay off for the tower? Time the plain tower pass eager and compiled.

    python benchmarks/compile_tower.py VIDEO --model DIR [--frames 32] [--dtype bf16] [--mode default]

Loads the model with ``aot_cli``, decodes and preprocesses ``--frames`` frames of VIDEO, then
times ``adapter.tower`` (embeddings + encoder layers, no projector, no scores) on all frames at
once: ``torch.compile(adapter.tower, mode=...)``'s first call (compilation included), then
``--repeat`` rounds of one eager and one compiled call back to back (on a shared machine the
median of the per-round ratios is the figure to trust; best times are given too). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.models import load_model
from aot_cli.video import decode_video


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--mode", default="default", help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    adapter = load_model(ModelConfig(model=args.model, dtype=args.dtype, device="auto"))
    decoded = decode_video(args.video, DecodeConfig(frames=args.frames))
    pixels = adapter.preprocess(decoded.frames)
    tower = adapter.tower
    sync = torch.cuda.synchronize if adapter.device.type == "cuda" else (lambda: None)

    def run(module):
        with torch.no_grad():
            module(pixels)
        sync()

    run(tower)  # warm-up
    compiled = torch.compile(tower, mode=args.mode)
    first = seconds(lambda: run(compiled))
    eager_runs, compiled_runs = [], []
    for _ in range(args.repeat):
        eager_runs.append(seconds(lambda: run(tower)))
        compiled_runs.append(seconds(lambda: run(compiled)))
    eager, steady = min(eager_runs), min(compiled_runs)
    speedup = statistics.median(e / c for e, c in zip(eager_runs, compiled_runs))
    with torch.no_grad():
        reference = tower(pixels).float()
        diff = (compiled(pixels).float() - reference).abs().max().item()
    print(json.dumps({
        "model": args.model, "frames": int(pixels.shape[0]), "dtype": args.dtype, "device": str(adapter.device),
        "mode": args.mode, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "eager_runs_s": eager_runs, "compiled_runs_s": compiled_runs, "compiled_first_call_s": first,
        "eager_best_s": eager, "compiled_best_s": steady, "speedup_paired_median": speedup,
        "speedup_best": eager / steady,
        "break_even_calls": (first - steady) / (eager - steady) if eager > steady else None,
        "max_abs_diff": diff, "max_abs_value": reference.abs().max().item(),
    }, indent=2))


if __name__ == "__main__":
    main()
