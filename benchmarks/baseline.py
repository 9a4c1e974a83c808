"""The straightforward way to run AOT on a video, as the method papers' code does it, to compare
``aot`` against (issue 6). Self-contained: it uses decord, transformers and torch, not ``aot_cli``.

    python benchmarks/baseline.py VIDEO --model DIR [--frames 32] [--anchors 126 --keep-ratio 0.3]
                                  [--dtype bf16] [--json out.json] [--compare]

What it does, per video (the model is loaded first and not timed):

1. decode: ``decord.VideoReader``, ``np.linspace(0, n - 1, frames, dtype=int)``, ``get_batch``;
2. preprocess: the checkpoint's transformers image processor (PIL resize, rescale, normalise);
3. tower: the whole ``LlavaOnevisionForConditionalGeneration`` loaded with eager attention, its
   vision tower called once on all frames with ``output_attentions=True`` and
   ``output_hidden_states=True`` (every layer's ``[F, heads, N, N]`` map is kept), features from
   ``vision_feature_layer``, then the projector;
4. method (docs/method.md §1-§6, reference rules: ``V`` anchors per frame, quantile keep ratio): scores from
   attention maps 5 and -2, then Python loops per frame (anchor windows, cost matrices,
   nearest-anchor updates, pooling) and per clip frame (inter-frame OT), Sinkhorn in kernel form
   (all frames of the intra-frame stage in one batched solve, as the released code);
5. write: ``torch.save`` of the tokens and their frame/kind tags.

``--compare`` then runs ``aot bench`` on the same video and settings in a fresh process (so each
side's peak memory is its own) and prints both, the speed-up and the memory ratio.
``--device cuda`` runs both sides on the GPU (the whole model moved there, as the papers' scripts do)
and adds peak device memory (``torch.cuda.max_memory_allocated``) to each side and to the ratios.
Peak host memory is the process's resident high-water mark (``VmHWM``, reset after loading the
model; Linux) and, for ``aot``, the sum over its process tree (it decodes in worker processes).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------ measurement

def _status_bytes(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timestamp covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_rss() -> Optional[int]:
    """Free unused heap, reset the kernel's RSS high-water mark; returns the RSS now (bytes)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------ the method, naively

def sinkhorn(C: torch.Tensor, eps: float = 0.1, max_iter: int = 100, tol: float = 1e-2) -> torch.Tensor:
    """Kernel-form Sinkhorn on a batch of costs ``C [B, M, N]`` with uniform marginals; the
    stopping test averages ``|r - r_prev|`` over the whole batch. Returns the plans ``[B, M, N]``."""
    K = torch.exp(-C / eps)
    B, M, N = C.shape
    r = torch.ones(B, M, dtype=C.dtype, device=C.device)
    c = torch.ones(B, N, dtype=C.dtype, device=C.device)
    for _ in range(max_iter):
        r_prev = r
        r = (1.0 / M) / torch.bmm(K, c.unsqueeze(2)).squeeze(2)
        c = (1.0 / N) / torch.bmm(K.transpose(1, 2), r.unsqueeze(2)).squeeze(2)
        if (r - r_prev).abs().mean() < tol:
            break
    return r.unsqueeze(2) * K * c.unsqueeze(1)


def select_anchors(shallow: torch.Tensor, deep: torch.Tensor, H: int, W: int, V: int,
                   global_ratio: float = 0.5, window: int = 9) -> torch.Tensor:
    """Boolean anchors ``[F, H*W]``: top-k of every ``window x window`` block of the shallow map,
    then the top global ones of the deep map outside those, frame by frame."""
    frames = shallow.shape[0]
    n_local = int(V * (1 - global_ratio))
    n_global = V - n_local
    blocks = (H // window) * (W // window)
    k = n_local // blocks
    mask = torch.zeros(frames, H * W, dtype=torch.bool, device=shallow.device)
    for f in range(frames):
        grid = shallow[f].reshape(H, W)
        for bi in range(H // window):
            for bj in range(W // window):
                block = grid[bi * window:(bi + 1) * window, bj * window:(bj + 1) * window].reshape(-1)
                for pos in block.topk(k).indices.tolist():
                    mask[f, (bi * window + pos // window) * W + bj * window + pos % window] = True
        rest = deep[f].clone()
        rest[mask[f]] = 0
        mask[f, rest.topk(n_global).indices] = True
    return mask


def intra_frame(x: torch.Tensor, mask: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Anchors absorb their frame's other tokens (OT update 0.9, nearest-anchor update 0.1)."""
    frames = x.shape[0]
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([cols.reshape(-1) / (W - 1), rows.reshape(-1) / (H - 1)], 1).float().to(x.device)
    costs = []
    for f in range(frames):
        a, u = x[f][mask[f]], x[f][~mask[f]]
        cos = F.normalize(u, dim=-1) @ F.normalize(a, dim=-1).T
        costs.append((1 - cos) + 0.5 * torch.cdist(pos[~mask[f]], pos[mask[f]]))
    plans = sinkhorn(torch.stack(costs))
    out = x.clone()
    for f in range(frames):
        a, u = x[f][mask[f]], x[f][~mask[f]]
        plan = plans[f]
        a_ot = (a + plan.T @ u) / (1 + plan.sum(0)).unsqueeze(1)
        nearest = (F.normalize(u, dim=-1) @ F.normalize(a, dim=-1).T).argmax(1)
        a_nn = torch.empty_like(a)
        for n in range(a.shape[0]):
            members = u[nearest == n]
            a_nn[n] = (a[n] + members.sum(0)) / (1 + members.shape[0])
        out[f][mask[f]] = 0.1 * a_nn + 0.9 * a_ot
    return out


def pool(x: torch.Tensor, mask: torch.Tensor, H: int, W: int) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Bilinear 2x pooling (ceil size) of every frame's tokens and anchor mask, frame by frame;
    returns per frame the pooled tokens ``[H2*W2, D]`` and the kept cells (pooled mask >= 0.5)."""
    size = (math.ceil(H / 2), math.ceil(W / 2))
    tokens, keep = [], []
    for f in range(x.shape[0]):
        img = x[f].reshape(H, W, -1).permute(2, 0, 1).unsqueeze(0)
        tokens.append(F.interpolate(img, size=size, mode="bilinear").squeeze(0).flatten(1).T)
        m = mask[f].float().reshape(1, 1, H, W)
        keep.append(F.interpolate(m, size=size, mode="bilinear").reshape(-1) >= 0.5)
    return tokens, keep


def inter_frame(tokens: List[torch.Tensor], keep: List[torch.Tensor], clip: int, keep_ratio: float,
                sigma: float = 1.5) -> Tuple[torch.Tensor, List[int], List[int]]:
    """Clip frames merge into the keyframe's tokens; returns tokens, source frame and kind
    (0 keyframe, 1 kept, 2 merged anchor) of every output token."""
    out, frame_of, kind_of = [], [], []
    frames = len(tokens)
    for start in range(0, frames, clip):
        Y = tokens[start][keep[start]]
        out.append(Y.clone())
        frame_of += [start] * len(Y)
        kind_of += [0] * len(Y)
        for t in range(1, min(clip, frames - start)):
            X = tokens[start + t][keep[start + t]]
            cos = (F.normalize(X, dim=-1) @ F.normalize(Y, dim=-1).T).clamp(-(1 - 1e-6), 1 - 1e-6)
            c_sim = (1 - cos) - (1 - cos).min()
            plan = sinkhorn((c_sim * (1 - math.exp(-t * t / (2 * sigma ** 2)))).unsqueeze(0))[0]
            p = plan / plan.sum(1, keepdim=True)
            pmax = p.max(1).values.double()
            stay = pmax < torch.quantile(pmax, keep_ratio)
            moved = ~stay
            Y = (Y + p[moved].T @ X[moved]) / (1 + p[moved].sum(0)).unsqueeze(1)
            out.append(X[stay])
            frame_of += [start + t] * int(stay.sum())
            kind_of += [1] * int(stay.sum())
        out.append(Y)
        frame_of += [start] * len(Y)
        kind_of += [2] * len(Y)
    return torch.cat(out), frame_of, kind_of


# ------------------------------------------------------------------------------ the pipeline

def load(model_dir: str, dtype: torch.dtype, device: torch.device):
    """The whole LLaVA-OneVision model with eager attention on ``device``, and its image processor."""
    from transformers import AutoImageProcessor, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, dtype=dtype,
                                                                   attn_implementation="eager").eval().to(device)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    return model, processor


def run_video(path: str, model, processor, frames: int, anchors: int, keep_ratio: float, clip: int,
              score_layers: Tuple[int, int], out_file: Path) -> Dict[str, float]:
    """One video through the five steps; returns per-step seconds and counts."""
    import decord

    times: Dict[str, float] = {}
    t0 = time.perf_counter()
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    indices = np.linspace(0, len(reader) - 1, frames, dtype=int)
    video = reader.get_batch(indices).asnumpy()
    t1 = time.perf_counter()
    pixels = processor(images=list(video), return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    sync(model.device)
    t2 = time.perf_counter()
    inner = model.model
    with torch.no_grad():
        out = inner.vision_tower(pixels, output_hidden_states=True, output_attentions=True)
        layer = model.config.vision_feature_layer
        features = out.hidden_states[layer] if isinstance(layer, int) else torch.cat(
            [out.hidden_states[i] for i in layer], dim=-1)
        x = inner.multi_modal_projector(features)
        shallow = out.attentions[score_layers[0]].float().sum(2).mean(1)
        deep = out.attentions[score_layers[1]].float().sum(2).mean(1)
        del out
    sync(model.device)
    t3 = time.perf_counter()
    with torch.no_grad():
        grid = int(math.isqrt(x.shape[1]))
        x = x.float()
        mask = select_anchors(shallow, deep, grid, grid, anchors)
        merged = intra_frame(x, mask, grid, grid)
        pooled, keep = pool(merged, mask, grid, grid)
        tokens, frame_of, kind_of = inter_frame(pooled, keep, clip, keep_ratio)
        tokens = torch.cat([tokens, inner.image_newline.float().unsqueeze(0)]).to(model.dtype)
    sync(model.device)
    t4 = time.perf_counter()
    torch.save({"tokens": tokens.cpu(), "frame": torch.tensor(frame_of + [-1]), "kind": torch.tensor(kind_of + [3]),
                "frame_indices": torch.as_tensor(indices)}, out_file)
    t5 = time.perf_counter()
    times.update(decode=t1 - t0, preprocess=t2 - t1, tower=t3 - t2, method=t4 - t3, write=t5 - t4)
    return {"stages_s": times, "seconds": t5 - t0, "frames": int(len(indices)), "tokens": int(len(tokens) - 1),
            "frame_indices": indices.tolist()}


def run_baseline(args) -> dict:
    dtype = DTYPES[args.dtype]
    t0 = time.perf_counter()
    device = torch.device(args.device)
    model, processor = load(args.model, dtype, device)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="aot-baseline-") as tmp:
        if args.warmup:
            run_video(args.video, model, processor, min(args.frames, 2), args.anchors, args.keep_ratio,
                      args.clip_length, (5, -2), Path(tmp) / "warmup.pt")
        best = None
        peak = None
        device_peak = None
        for _ in range(args.repeat):
            start_rss = reset_peak_rss()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                device_start = torch.cuda.memory_allocated(device)
            res = run_video(args.video, model, processor, args.frames, args.anchors, args.keep_ratio,
                            args.clip_length, (5, -2), Path(tmp) / "tokens.pt")
            hwm = _status_bytes("VmHWM")
            if device.type == "cuda":
                peak_now = torch.cuda.max_memory_allocated(device)
                if device_peak is None or peak_now > device_peak[1]:
                    device_peak = (device_start, peak_now)
            res["file_bytes"] = (Path(tmp) / "tokens.pt").stat().st_size
            if peak is None or (hwm or 0) > peak[1]:
                peak = (start_rss, hwm)
            if best is None or res["seconds"] < best["seconds"]:
                best = res
    import transformers

    return {
        "baseline": "decord + transformers processor + eager tower with output_attentions on all layers + "
                    "per-frame Python loops",
        "video": args.video, "model": args.model, "dtype": args.dtype, "anchors": args.anchors,
        "keep_ratio": args.keep_ratio, "clip_length": args.clip_length, "repeat": args.repeat,
        "load_s": load_s, **best,
        "frames_per_s": best["frames"] / best["seconds"],
        "peak_host_bytes": peak[1], "start_host_bytes": peak[0],
        "device": str(device),
        "peak_device_bytes": device_peak[1] if device_peak else None,
        "working_device_bytes": (device_peak[1] - device_peak[0]) if device_peak else None,
        "working_host_bytes": (peak[1] - peak[0]) if peak[0] is not None and peak[1] is not None else None,
        "machine": {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }


def run_aot(args) -> dict:
    """``aot bench`` on the same video and settings, in its own process."""
    with tempfile.TemporaryDirectory(prefix="aot-compare-") as tmp:
        out = Path(tmp) / "bench.json"
        cmd = shlex.split(args.aot_command) + ["bench", args.video, "--model", args.model,
               "--frames", str(args.frames), "--anchors", str(args.anchors), "--keep-ratio", str(args.keep_ratio),
               "--clip-length", str(args.clip_length), "--dtype", args.dtype,
               "--batch-frames", str(args.batch_frames), "--repeat", str(args.repeat), "--device", args.device,
               "--json", str(out), "-q"]
        print("running:", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        return json.loads(out.read_text())


def compare(base: dict, aot: dict) -> dict:
    e2e = aot["end_to_end"]
    aot_tree = e2e.get("peak_host_tree_bytes") or e2e["peak_host_bytes"]
    return {
        "speedup_end_to_end": base["seconds"] / e2e["seconds"],
        "memory_ratio_peak_rss": base["peak_host_bytes"] / aot_tree,
        "memory_ratio_peak_rss_main_process": base["peak_host_bytes"] / e2e["peak_host_bytes"],
        "baseline_seconds": base["seconds"], "aot_seconds": e2e["seconds"],
        "baseline_peak_host_bytes": base["peak_host_bytes"], "aot_peak_host_tree_bytes": aot_tree,
        "aot_peak_host_main_bytes": e2e["peak_host_bytes"],
        "memory_ratio_peak_device": (base["peak_device_bytes"] / e2e["peak_device_bytes"]
                                     if base.get("peak_device_bytes") and e2e.get("peak_device_bytes") else None),
        "tokens": {"baseline": base["tokens"], "aot": aot["totals"]["tokens"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Naive AOT baseline (papers' style) and comparison with aot.")
    parser.add_argument("video")
    parser.add_argument("--model", required=True, help="A transformers LLaVA-OneVision checkpoint directory.")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--anchors", type=int, default=126)
    parser.add_argument("--keep-ratio", type=float, default=0.3)
    parser.add_argument("--clip-length", type=int, default=4)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--batch-frames", type=int, default=32, help="aot side: frames per tower pass.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="Both sides run here (default: cuda when present).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per side; the best time counts.")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--compare", action="store_true", help="Also run `aot bench` and print the ratios.")
    parser.add_argument("--aot-command", default=f"{sys.executable} -m aot_cli.cli",
                        help="How to start aot for --compare (default: this Python's aot_cli.cli).")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args()
    result = {"baseline": run_baseline(args)}
    if args.compare:
        aot = run_aot(args)
        result["aot"] = {k: aot[k] for k in ("end_to_end", "stages_s", "tower_only", "scored_tower", "totals",
                                             "machine", "load_average", "model")}
        result["comparison"] = compare(result["baseline"], aot)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
