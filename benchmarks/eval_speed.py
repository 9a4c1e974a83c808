"""Evaluation from a cache vs from the raw video: prefill tokens and time per sample.

    python benchmarks/eval_speed.py [--video samples/bikes.mp4 ...] [--frames 32] [--ratio 0.1]
                                    [--repeats 5] [--text-tokens 64] [--tflops 400] [--json]

Measured, with one random-weight LLaVA-OneVision of real token geometry (``random_models.py tiny``:
384 px, 27x27 patches pooled to 14x14 = 196 tokens per frame, a 64-wide 6-layer tower and a
64-wide 1-layer Qwen2) on this machine's CPU, per question about one video:

- from the raw video (what an lmms-eval LLaVA model does): decode ``--frames`` frames, preprocess
  them, one forward pass of ``LlavaOnevisionForConditionalGeneration`` with ``pixel_values_videos``
  (tower, projector, pooling, newline, then the LLM prefill over F x 196 + 1 video positions);
- from the cache (what ``aot_llava_onevision`` does): find the video in the cache
  (:class:`~aot_cli.downstream.lookup.VideoLookup`), read its tokens, check and splice them
  (:func:`~aot_cli.downstream.llava.splice_video_tokens`), one forward pass of the LLM over the
  cached count. The one-off compression (``aot compress``'s pipeline) is timed separately.

Both forward passes compute the logits of the first answer token only (the prefill). The prompt is
the same token sequence in both, ``--text-tokens`` text tokens around one video placeholder.

Projected for LLaVA-OneVision-7B (Qwen2-7B LLM, SigLIP-so400m tower) with the formulas printed
below; the time projection divides FLOPs by an assumed sustained throughput (``--tflops``), it is
not a measurement. Times are medians over ``--repeats`` runs after one warm-up; the load average
is printed before and after, because the 2 CPU cores of the development machines are shared.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Qwen2-7B (LLM of llava-onevision-qwen2-7b-ov): config.json of the published checkpoint.
QWEN2_7B = {"layers": 28, "hidden": 3584, "mlp": 18944, "heads": 28, "kv_heads": 4, "head_dim": 128}
# SigLIP-so400m-patch14-384 as LLaVA-OneVision runs it: 26 of its 27 layers, 729 patches per frame.
SIGLIP_SO400M = {"layers": 26, "hidden": 1152, "mlp": 4304, "patches": 729}
TOKENS_PER_FRAME_7B = 196  # 27x27 patches, bilinear 2x2 pooling with ceil -> 14x14


def llm_params(cfg: Dict[str, int]) -> int:
    """Non-embedding parameters of a Qwen2 decoder: q/o (d x d), k/v (d x kv*head_dim), 3 MLP
    matrices (d x mlp) per layer (biases and norms are < 0.01 % and left out)."""
    d, kv = cfg["hidden"], cfg["kv_heads"] * cfg["head_dim"]
    return cfg["layers"] * (2 * d * d + 2 * d * kv + 3 * d * cfg["mlp"])


def prefill_flops(length: int, cfg: Dict[str, int] = QWEN2_7B) -> float:
    """FLOPs of one causal prefill over ``length`` tokens: 2 N L (matrix products, N non-embedding
    parameters) + 2 n_layers d L^2 (QK^T and AV: 4 d per query-key pair, L^2 / 2 pairs)."""
    return 2.0 * llm_params(cfg) * length + 2.0 * cfg["layers"] * cfg["hidden"] * length ** 2


def vision_flops(frames: int, llm_hidden: int = QWEN2_7B["hidden"], cfg: Dict[str, int] = SIGLIP_SO400M) -> float:
    """FLOPs the raw-video path spends before the LLM: the tower over every frame (2 N_v P + full
    attention 4 n_layers d P^2 per frame, P patches) and the 2-layer projector (2 P (d_v D + D^2))."""
    d, p = cfg["hidden"], cfg["patches"]
    tower = cfg["layers"] * (4 * d * d + 2 * d * cfg["mlp"])
    per_frame = 2.0 * tower * p + 4.0 * cfg["layers"] * d * p ** 2 + 2.0 * p * (d * llm_hidden + llm_hidden ** 2)
    return frames * per_frame


def kv_cache_bytes(length: int, cfg: Dict[str, int] = QWEN2_7B, bytes_per_value: int = 2) -> int:
    """Key and value cache of one sequence (bf16): 2 x layers x kv_heads x head_dim x L values."""
    return 2 * cfg["layers"] * cfg["kv_heads"] * cfg["head_dim"] * length * bytes_per_value


def projection(frames: int, ratio: float, text_tokens: int, tflops: float) -> dict:
    raw_visual = frames * TOKENS_PER_FRAME_7B + 1
    cached_visual = int(ratio * frames * TOKENS_PER_FRAME_7B + 0.5) + 1
    out = {"model": "LLaVA-OneVision-7B (Qwen2-7B, SigLIP-so400m)", "frames": frames, "ratio": ratio,
           "text_tokens": text_tokens, "assumed_tflops": tflops,
           "llm_non_embedding_params": llm_params(QWEN2_7B)}
    for name, visual, vision in (("raw", raw_visual, vision_flops(frames)), ("cache", cached_visual, 0.0)):
        length = visual + text_tokens
        llm = prefill_flops(length)
        out[name] = {"video_tokens": visual, "prefill_tokens": length, "llm_prefill_tflop": llm / 1e12,
                     "vision_tflop": vision / 1e12, "total_tflop": (llm + vision) / 1e12,
                     "projected_s": (llm + vision) / (tflops * 1e12), "kv_cache_mib": kv_cache_bytes(length) / 2 ** 20}
    out["llm_prefill_speedup"] = out["raw"]["llm_prefill_tflop"] / out["cache"]["llm_prefill_tflop"]
    out["total_speedup"] = out["raw"]["total_tflop"] / out["cache"]["total_tflop"]
    return out


def median_time(fn: Callable[[], Dict[str, float]], repeats: int) -> Dict[str, float]:
    """Median seconds of each stage (and the total) over ``repeats`` calls after one warm-up."""
    fn()
    runs = [fn() for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(videos: List[Path], frames: int, ratio: float, repeats: int, text_tokens: int, work: Path) -> dict:
    from random_models import write_checkpoint
    from transformers import LlavaOnevisionForConditionalGeneration

    from aot_cli.cache import TokenCache
    from aot_cli.config import DecodeConfig
    from aot_cli.downstream.llava import checked_tokens, splice_video_tokens
    from aot_cli.downstream.lookup import VideoLookup
    from aot_cli.models import load_model
    from aot_cli.pipeline.batch import run_batch
    from aot_cli.pipeline.cli_support import build_run_config
    from aot_cli.pipeline.inputs import expand_inputs
    from aot_cli.video import decode_video

    ckpt = write_checkpoint("tiny", work / "tiny")
    cfg = build_run_config(None, {"model": str(ckpt), "dtype": "fp32", "device": "cpu", "ratio": ratio,
                                  "frames": frames})
    adapter = load_model(cfg.model)
    t0 = time.perf_counter()
    summary = run_batch(expand_inputs([str(v) for v in videos]), work / "cache", cfg, adapter=adapter, decode_workers=0)
    compress_s = (time.perf_counter() - t0) / max(1, summary.done)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
    video_id = model.config.video_token_index
    cache = TokenCache(work / "cache")
    lookup = VideoLookup(cache)
    text = [(i % 100) + 2 for i in range(text_tokens)]  # any text ids (< 120), half before the video

    def ids_with(video_positions: int) -> torch.Tensor:
        half = len(text) // 2
        return torch.tensor([text[:half] + [video_id] * video_positions + text[half:]])

    results = []
    for video in videos:
        def from_cache() -> Dict[str, float]:
            t = time.perf_counter()
            cached = cache[lookup.find(str(video)).video_id]
            tokens = checked_tokens(model, cached)
            t_read = time.perf_counter()
            ids = ids_with(tokens.shape[0])
            embeds = splice_video_tokens(model, ids, tokens)
            t_splice = time.perf_counter()
            with torch.inference_mode():
                model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), logits_to_keep=1)
            t_end = time.perf_counter()
            return {"lookup_read": t_read - t, "splice": t_splice - t_read, "prefill": t_end - t_splice,
                    "total": t_end - t, "prefill_tokens": ids.shape[1], "video_tokens": tokens.shape[0]}

        def from_video() -> Dict[str, float]:
            t = time.perf_counter()
            decoded = decode_video(video, DecodeConfig(frames=frames))
            t_decode = time.perf_counter()
            pixels = adapter.preprocess(decoded.frames)[None]
            t_pre = time.perf_counter()
            grid = adapter.grid  # pooled positions per frame follow the model's own arithmetic
            per_frame = -(-grid[0] // 2) * -(-grid[1] // 2)
            ids = ids_with(decoded.frames.shape[0] * per_frame + 1)
            with torch.inference_mode():
                model(input_ids=ids, pixel_values_videos=pixels, attention_mask=torch.ones_like(ids), logits_to_keep=1)
            t_end = time.perf_counter()
            return {"decode": t_decode - t, "preprocess": t_pre - t_decode, "tower_and_prefill": t_end - t_pre,
                    "total": t_end - t, "prefill_tokens": ids.shape[1],
                    "video_tokens": decoded.frames.shape[0] * per_frame + 1}

        cached, raw = median_time(from_cache, repeats), median_time(from_video, repeats)
        results.append({"video": str(video), "cache": cached, "raw": raw, "speedup": raw["total"] / cached["total"]})
    return {"compress_s_per_video": compress_s, "videos": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", action="append", type=Path, help="clip (repeatable; default samples/bikes.mp4)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--tflops", type=float, default=400.0,
                        help="assumed sustained bf16 TFLOP/s of the projection (default 400: ~40%% of an "
                             "H100/H200's 989 dense peak)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    videos = args.video or [ROOT / "samples" / "bikes.mp4"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        measured = measure(videos, args.frames, args.ratio, args.repeats, args.text_tokens, Path(work))
    report = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_before": [round(x, 2) for x in load_before],
                          "load_after": [round(x, 2) for x in os.getloadavg()]},
              "measured_tiny_model": measured,
              "projected_7b": projection(args.frames, args.ratio, args.text_tokens, args.tflops)}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    m = report["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['torch_threads']} torch threads, load average {m['load_before']} before, "
          f"{m['load_after']} after")
    print(f"\nmeasured, tiny random LLaVA-OneVision (196 tokens/frame), {args.frames} frames, ratio {args.ratio}, "
          f"median of {args.repeats}:")
    print(f"  one-off compression into the cache: {measured['compress_s_per_video']:.2f} s per video")
    print(f"  {'video':<24}{'path':<7}{'video tok':>10}{'prefill tok':>12}{'s/sample':>10}   breakdown (s)")
    for v in measured["videos"]:
        for name in ("raw", "cache"):
            r = v[name]
            parts = ", ".join(f"{k} {r[k]:.3f}" for k in r if k not in ("total", "prefill_tokens", "video_tokens"))
            print(f"  {Path(v['video']).name:<24}{name:<7}{int(r['video_tokens']):>10}{int(r['prefill_tokens']):>12}"
                  f"{r['total']:>10.3f}   {parts}")
        print(f"  {'':<24}speed-up per sample: {v['speedup']:.1f}x")
    p = report["projected_7b"]
    print(f"\nprojected, {p['model']}, {args.frames} frames, ratio {args.ratio}, {args.text_tokens} text tokens:")
    print(f"  LLM prefill FLOPs = 2 N L + 2 n_layers d L^2 with N = {p['llm_non_embedding_params'] / 1e9:.2f}e9 "
          f"(non-embedding), n_layers = {QWEN2_7B['layers']}, d = {QWEN2_7B['hidden']}")
    print("  vision FLOPs (raw only) = F x [2 N_v P + 4 n_v d_v P^2 + 2 P (d_v D + D^2)], SigLIP-so400m: "
          f"P = {SIGLIP_SO400M['patches']}, n_v = {SIGLIP_SO400M['layers']}, d_v = {SIGLIP_SO400M['hidden']}")
    print(f"  time = FLOPs / {args.tflops:g} TFLOP/s (an assumed sustained throughput, not a measurement)")
    print(f"  {'path':<7}{'video tok':>10}{'prefill tok':>12}{'LLM TFLOP':>11}{'vision TFLOP':>14}{'s/sample':>10}"
          f"{'KV cache MiB':>14}")
    for name in ("raw", "cache"):
        r = p[name]
        print(f"  {name:<7}{r['video_tokens']:>10}{r['prefill_tokens']:>12}{r['llm_prefill_tflop']:>11.2f}"
              f"{r['vision_tflop']:>14.2f}{r['projected_s']:>10.3f}{r['kv_cache_mib']:>14.1f}")
    print(f"  speed-up: LLM prefill {p['llm_prefill_speedup']:.1f}x, prefill + vision {p['total_speedup']:.1f}x")


if __name__ == "__main__":
    main()
