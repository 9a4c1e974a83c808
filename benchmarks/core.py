"""Time of the AOT core (`compress`) against one forward of a SigLIP-so400m-geometry tower.

    python benchmarks/core.py [--frames 32] [--repeats 5] [--device cpu] [--tower-layers 27] [--json FILE]

The tower has random weights (geometry of google/siglip-so400m-patch14-384: 27 layers, width 1152,
16 heads, MLP 4304, 384 px, 27x27 patches), runs in bf16 with SDPA under inference_mode, and is
timed once after a warm-up on a few frames. The core runs on 32 frames x 729 tokens x D=1152 in
float32 (its OT math is float32 whatever the input dtype), best of --repeats: the reference rules,
`--ratio 0.1` with the reference preset, the quality preset (docs/method.md §10.3) and the three
baselines (§10.1), all with LLaVA-OneVision's bilinear pooling to 14x14. ``--tower-layers`` runs
fewer tower layers (a smoke run on a CPU; the share of the tower is then not the real one).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from aot_cli.bench.machine import cpu_model
from aot_cli.core import AOTConfig, compress


def time_core(x, sh, dp, cfg, repeats, device):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = compress(x, sh, dp, (27, 27), cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, len(out)


def time_tower(frames, device, dtype, layers=27):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=layers,
                             num_attention_heads=16, image_size=384, patch_size=14)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = SiglipVisionModel(cfg).to(dtype).eval()
    pix = torch.randn(frames, 3, 384, 384, device=device, dtype=dtype)
    with torch.inference_mode():
        model(pixel_values=pix[:2])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(pixel_values=pix)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-tower", action="store_true")
    ap.add_argument("--tower-layers", type=int, default=27, help="Tower layers (27: SigLIP-so400m).")
    ap.add_argument("--json", help="Also write the result to this file.")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.frames, 729, 1152, generator=g).to(device)
    sh = torch.rand(args.frames, 729, generator=g).to(device)
    dp = torch.rand(args.frames, 729, generator=g).to(device)
    torch.set_num_threads(torch.get_num_threads())
    runs = {
        "reference": AOTConfig(num_anchors=126, keep_ratio=0.3),
        "ratio0.1": AOTConfig(ratio=0.1),
        "quality_ratio0.1": AOTConfig.preset("quality", ratio=0.1),
        "random_ratio0.1": AOTConfig(method="random", ratio=0.1),
        "pool_ratio0.1": AOTConfig(method="pool", ratio=0.1),
        "attention_ratio0.1": AOTConfig(method="attention", ratio=0.1),
    }
    for cfg in runs.values():
        compress(x, sh, dp, (27, 27), cfg)  # warm-up
    result = {
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "device": str(device),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "torch": torch.__version__},
        "frames": args.frames,
    }
    times = {}
    for name, cfg in runs.items():
        times[name], n = time_core(x, sh, dp, cfg, args.repeats, device)
        result[f"core_{name}_s"] = round(times[name], 6)
        result[f"core_{name}_tokens"] = n
    if not args.skip_tower:
        dtype = torch.bfloat16
        t_tower = time_tower(args.frames, device, dtype, args.tower_layers)
        result["tower_layers"] = args.tower_layers
        result["tower_bf16_sdpa_s"] = round(t_tower, 6)
        for name, t in times.items():
            result[f"core_share_of_tower_{name}"] = round(t / t_tower, 4)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
