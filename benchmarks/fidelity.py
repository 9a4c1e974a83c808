"""Fidelity of every method at equal budgets on real clips with real DINOv2-S/14 features
(docs/method.md §10): coverage, salient coverage and OT error against the uncompressed tokens.

    python benchmarks/fidelity.py                       # the sample clips (samples/*.mp4, *.mov)
    python benchmarks/fidelity.py clip1.mp4 clip2.avi   # other clips
    python benchmarks/fidelity.py --json fidelity.json --cache-dir /tmp/feats
    python benchmarks/fidelity.py --ablations           # the quality preset's design choices, at T

Setting (the issue 13 measurement): the offline DINOv2-S/14 (`--model dinov2-small-offline`, needs
the `[offline]` extra) at 378x378 input (shortest edge 378, centre crop 378: a 27x27 patch grid;
DINOv2 interpolates its position embeddings), 32 frames, fp32. The full set is the 27x27 tokens
bilinearly pooled to 14x14 (196 per frame), as LLaVA-OneVision pools. Budgets: the released AOT's
own count T on each clip (reference rules V=126, keep ratio 0.3, which are data-dependent) and
`--ratio` 0.05, 0.1, 0.2. Methods: `aot` (reference preset, exact budget; at T the released rules
themselves), `quality` (the quality preset), `random` (mean of 5 seeds), `pool`, `attention`.

`--model DIR` runs the same measurement on another tower: for a Qwen-family checkpoint (e.g. a tiny
random one from `python tests/qwen_checkpoints.py qwen3-vl DIR`) the full set is the model's own
merged tokens (no pooling; one frame of the method per temporal patch, the merged grid of each clip)
and the methods use the Qwen profile (clips of 4 temporal patches, keyframe once); T is the count of
the released rules with V scaled from 126 of 27x27 cells to the clip's grid.

Prints one markdown table per budget: per clip coverage / salient / OT error, then the means, and
the median time of `compress` per method. `--ablations` instead measures the quality preset with one
design choice changed at a time (docs/method.md §10.3), at T, next to random and the released AOT.
Needs POT (`pip install 'aot-cli[fidelity]'`). The exact EMDs dominate the run time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.core import AOTConfig, compress, target_tokens
from aot_cli.core.fidelity import fidelity, full_scores, full_tokens

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 32
SIZE = 378  # 27 x 14 px patches
CELLS = 14 * 14
RATIOS = (0.05, 0.1, 0.2)
SEEDS = range(5)
METHODS = ("aot", "quality", "random", "pool", "attention")


def sample_clips():
    return sorted(p for p in (ROOT / "samples").iterdir() if p.suffix.lower() in (".mp4", ".mov"))


@dataclasses.dataclass
class Setting:
    """How one clip's tokens are laid out for the method: the tower grid, the model's pooling
    (None: the tokens are the full set), clip length and keyframe rule of the profile."""

    grid: tuple = (27, 27)
    pooling: object = "bilinear"
    clip_length: int = 4
    keyframe_once: bool = False

    @property
    def cells(self) -> int:
        if self.pooling is None:
            return self.grid[0] * self.grid[1]
        return ((self.grid[0] + 1) // 2) * ((self.grid[1] + 1) // 2)

    @property
    def anchors(self) -> int:
        """V of the released rules (126 on 27x27) on this grid."""
        return max(1, round(126 * self.grid[0] * self.grid[1] / 729))


DINOV2 = "dinov2-small-offline"


def load_tower(model: str = DINOV2):
    from transformers.utils import logging as hf_logging

    from aot_cli.models import load_model

    hf_logging.disable_progress_bar()
    if model != DINOV2:
        return load_model(ModelConfig(model=model, dtype="fp32", device="cpu", batch_frames=8))
    adapter = load_model(ModelConfig(model=DINOV2, dtype="fp32", device="cpu", batch_frames=8))
    # A script-level preprocessing override: the adapter keeps its ImageSpec in `spec`.
    adapter.spec = dataclasses.replace(adapter.spec, resize="shortest_edge", shortest_edge=SIZE, crop=(SIZE, SIZE))
    assert adapter.grid == (27, 27), adapter.grid
    return adapter


def features(path: Path, adapter, cache_dir):
    """tokens [F, N, D], shallow, deep [F, N] of one clip (DINOv2: N = 729, D = 384; cached in
    cache_dir when given) and its :class:`Setting`."""
    from aot_cli.pipeline.run import RunConfig, resolve_method
    from aot_cli.video import decode_video

    dinov2 = adapter is None or adapter.profile.token_order == "method"
    cached = Path(cache_dir) / f"{path.name}.{FRAMES}f.{SIZE}px.pt" if cache_dir and dinov2 else None
    if cached is not None and cached.exists():
        d = torch.load(cached)
        return d["tokens"], d["shallow"], d["deep"], Setting()
    decoded = decode_video(path, DecodeConfig(frames=FRAMES))
    out = adapter.encode(adapter.preprocess(decoded.frames))
    setting = Setting()
    if adapter.profile.token_order == "grid":  # a Qwen tower: the merged tokens are the full set
        method = resolve_method(RunConfig(method=AOTConfig(ratio=0.1)), adapter.profile)
        setting = Setting(tuple(out.grid), None, method.clip_length, method.keyframe_once)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        torch.save({"tokens": out.tokens.float(), "shallow": out.shallow, "deep": out.deep}, tmp)
        tmp.replace(cached)
    return out.tokens.float(), out.shallow, out.deep, setting


#: The quality preset with one design choice changed (docs/method.md §10.3).
ABLATIONS = {
    "quality (preset)": {},
    "no salient weight (salient_weight=0)": {"salient_weight": 0.0},
    "no attention anchors (attention_share=0)": {"attention_share": 0.0},
    "one round (merge_rounds=1)": {"merge_rounds": 1},
    "sharper plan (merge_eps=0.02)": {"merge_eps": 0.02},
    "clips of 8 frames (clip_length=8)": {"clip_length": 8},
    "one clip per frame (clip_length=1)": {"clip_length": 1},
}


def config(method: str, ratio: float, seed: int = 0, setting: Setting = Setting()) -> AOTConfig:
    layout = dict(pooling=setting.pooling, clip_length=setting.clip_length)
    if method == "quality":
        return AOTConfig.preset("quality", ratio=ratio, **layout)
    if method == "aot":
        return AOTConfig(ratio=ratio, keyframe_once=setting.keyframe_once, **layout)
    return AOTConfig(method=method, ratio=ratio, seed=seed, **layout)


def released(setting: Setting, **overrides) -> AOTConfig:
    """The released rules (V = 126 on 27x27, keep ratio 0.3) on ``setting``."""
    return AOTConfig(num_anchors=setting.anchors, keep_ratio=0.3, pooling=setting.pooling,
                     clip_length=setting.clip_length, keyframe_once=setting.keyframe_once, **overrides)


def figures(x, sh, dp, times=None, setting: Setting = Setting()):
    """A function: AOTConfig -> (token count, (coverage, salient, OT error)) on this clip; the
    seconds of each ``compress`` go into ``times[(method, preset)]`` when given."""
    grid = setting.grid
    full, sal = full_tokens(x, grid, setting.pooling), full_scores(dp, grid, setting.pooling)

    def fig(cfg):
        t0 = time.perf_counter()
        out = compress(x, sh, dp, grid, cfg)
        if times is not None:
            times.setdefault(cfg.preset if cfg.method == "aot" else cfg.method, []).append(time.perf_counter() - t0)
        f = fidelity(full, out.tokens, sal)
        return len(out), (f.coverage, f.salient_coverage, f.ot_error)

    return fig


def ablations(x, sh, dp, setting: Setting = Setting()):
    """{variant: (coverage, salient, ot)} at this clip's T, with random (5 seeds) and the release."""
    fig = figures(x, sh, dp, setting=setting)
    T, release = fig(released(setting))
    ratio = T / (x.shape[0] * setting.cells)
    row = {"AOT, released rules": release,
           "random (mean of 5 seeds)": tuple(np.mean([fig(config("random", ratio, s, setting))[1] for s in SEEDS],
                                                     axis=0))}
    for name, overrides in ABLATIONS.items():
        overrides = {"pooling": setting.pooling, "clip_length": setting.clip_length, **overrides}
        n, row[name] = fig(AOTConfig.preset("quality", ratio=ratio, **overrides))
        assert n == T
    return T, {k: tuple(float(v) for v in f) for k, f in row.items()}


def measure(x, sh, dp, times=None, setting: Setting = Setting()):
    """{budget label: {method: (coverage, salient, ot)}} and T for one clip."""
    F_ = x.shape[0]
    fig = figures(x, sh, dp, times, setting)
    T, release = fig(released(setting))
    rows = {}
    for label, ratio in [("T", T / (F_ * setting.cells))] + [(f"{r:g}", r) for r in RATIOS]:
        row = {}
        for method in METHODS:
            if method == "aot" and label == "T":
                row["aot"] = release  # the released rules themselves at their own count
                continue
            seeds = SEEDS if method == "random" else [0]
            figs = []
            for s in seeds:
                n, f = fig(config(method, ratio, s, setting))
                assert n == target_tokens(ratio, F_, setting.cells), (method, n)
                figs.append(f)
            row[method] = tuple(float(v) for v in np.mean(figs, axis=0))
            if method == "random":
                row["random_seeds"] = [list(f) for f in figs]
        rows[label] = row
    return T, rows


def table(label, names, results) -> str:
    head = f"budget {'T (released AOT count per clip)' if label == 'T' else 'ratio ' + label}"
    lines = [f"**{head}** — coverage / salient / OT error\n",
             "| method | " + " | ".join(names) + " | mean coverage | mean salient | mean OT error |",
             "|---" * (len(names) + 4) + "|"]
    for method in METHODS:
        cells, figs = [], []
        for name in names:
            f = results[name]["rows"][label][method]
            figs.append(f)
            cells.append("{:.4f} / {:.4f} / {:.4f}".format(*f))
        mean = np.mean(figs, axis=0)
        shown = {"aot": "AOT, released rules" if label == "T" else "aot (reference, --ratio)",
                 "random": "random (mean of 5 seeds)"}.get(method, method)
        lines.append(f"| {shown} | " + " | ".join(cells) + " | {:.4f} | {:.4f} | {:.4f} |".format(*mean))
    return "\n".join(lines)


def ablation_table(names, results) -> str:
    variants = list(next(iter(results.values()))["ablations"])
    lines = ["**quality preset, one choice changed at a time, budget T** — coverage / salient / OT error\n",
             "| variant | " + " | ".join(names) + " | mean coverage | mean salient | mean OT error |",
             "|---" * (len(names) + 4) + "|"]
    for v in variants:
        figs = [results[n]["ablations"][v] for n in names]
        mean = np.mean(figs, axis=0)
        lines.append(f"| {v} | " + " | ".join("{:.4f} / {:.4f} / {:.4f}".format(*f) for f in figs)
                     + " | {:.4f} | {:.4f} | {:.4f} |".format(*mean))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", type=Path, help="videos (default: samples/*.mp4, *.mov)")
    ap.add_argument("--cache-dir", help="keep the DINOv2 features of each clip here (reused when present)")
    ap.add_argument("--json", dest="json_path", help="also write every figure as JSON to this file")
    ap.add_argument("--ablations", action="store_true", help="the quality preset's design choices, at T")
    ap.add_argument("--model", default=DINOV2, help=f"the tower (default {DINOV2}; e.g. a Qwen-family directory)")
    args = ap.parse_args()
    clips = args.clips or sample_clips()
    torch.manual_seed(0)
    adapter = None
    results = {}
    times = {}
    start = time.perf_counter()
    for path in clips:
        t0 = time.perf_counter()
        cached = args.model == DINOV2 and args.cache_dir and (
            Path(args.cache_dir) / f"{path.name}.{FRAMES}f.{SIZE}px.pt").exists()
        if adapter is None and not cached:
            adapter = load_tower(args.model)
        x, sh, dp, setting = features(path, adapter if not cached else None, args.cache_dir)
        if args.ablations:
            T, row = ablations(x, sh, dp, setting)
            results[path.name] = {"T": T, "frames": int(x.shape[0]), "ablations": row}
        else:
            T, rows = measure(x, sh, dp, times, setting)
            results[path.name] = {"T": T, "frames": int(x.shape[0]), "rows": rows}
        print(f"{path.name}: T = {T}, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    names = list(results)
    tower = (f"DINOv2-S/14 at {SIZE} px (27x27 -> 14x14 bilinear)" if args.model == DINOV2
             else f"{args.model} ({adapter.profile.name}: merged grid, one method frame per temporal patch)")
    print(f"{len(names)} clips, {FRAMES} frames, {tower}; "
          "T per clip: " + ", ".join(f"{n} {results[n]['T']}" for n in names) + "\n")
    if args.ablations:
        print(ablation_table(names, results))
    else:
        for label in ["T"] + [f"{r:g}" for r in RATIOS]:
            print(table(label, names, results) + "\n")
        shape = "27x27 -> 14x14, D=384, 32 frames; includes pooling" if args.model == DINOV2 else tower
        print(f"median seconds of `compress` per call ({shape}): "
              + ", ".join(f"{k} {np.median(v):.3f}" for k, v in times.items()))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"clips": results, "frames": FRAMES, "size": SIZE,
                                                    "compress_seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
                                                    "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
