"""``run_bench``: the figures behind ``aot bench``.

Three measurements on the same videos and the same loaded model:

1. stages (:mod:`.stages`): each video through decode, preprocess, plain tower, scored tower,
   method and write, one stage at a time -> per-stage seconds, the tower-only time (the plain
   SDPA pass on the same pixels), scored-vs-plain time and memory, cache sizes with the method
   on and off;
2. the decode stage alone (:mod:`.throughput`): the pipeline's decode workers (as many as the
   end-to-end run uses) hashing and decoding the videos -> decode frames/s and videos/s against
   the main process's stages, and which side bounds the run;
3. end to end: :func:`aot_cli.pipeline.batch.run_batch`, the code ``aot compress`` runs (its
   prefetching and overlap included), into a fresh cache directory -> wall time, videos/s,
   frames/s, tokens/s, peak host/device memory, bytes on disk per video;

then the ratios of (1) and (3), and the targets of issue 6 (:data:`TARGETS`).

The measurements alternate ``repeat`` times (stages of every video, the decode stage, then one
pipeline run), so that load from other processes on a shared machine hits them alike; times are
the best run, memory the highest peak seen.
"""
from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..config import to_dict
from ..pipeline.batch import DEFAULT_FLUSH_EVERY
from ..pipeline.inputs import VideoInput
from ..pipeline.run import RunConfig, resolve_method
from .machine import load_average, machine_info
from .memory import MemoryPeak, PeakMemory
from .stages import STAGES, VideoStages, measure_video, sum_stages, warm_up, worst_memory
from .throughput import DecodeRuns, measure_decode, throughput_block

FORMAT = 1


@dataclass(frozen=True)
class Target:
    """A promised figure: ``ratio`` (a key of the report's "ratios") ``op`` ("<=" or ">=") ``limit``;
    ``where`` says on which device the promise is made."""

    name: str
    ratio: str
    op: str
    limit: float
    where: str

    def met(self, value: Optional[float]) -> Optional[bool]:
        if value is None:
            return None
        return value >= self.limit if self.op == ">=" else value <= self.limit


TARGETS = (
    Target("end-to-end throughput / tower-only throughput", "end_to_end_vs_tower", ">=", 0.9, "any"),
    Target("scored tower time / plain SDPA tower time", "scored_vs_plain_time", "<=", 1.10, "cuda, batch 32"),
    Target("scored tower peak memory / plain SDPA peak memory", "scored_vs_plain_memory", "<=", 1.15,
           "cuda, batch 32"),
)


def _rate(count: float, seconds: float) -> Optional[float]:
    return count / seconds if seconds > 0 else None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def paired_median(numerators: List[float], denominators: List[float]) -> Optional[float]:
    """Median over runs of ``numerators[r] / denominators[r]``: each quotient compares two
    measurements taken back to back, so slow changes in machine load cancel out."""
    ratios = sorted(n / d for n, d in zip(numerators, denominators) if d > 0)
    if not ratios:
        return None
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def _per_run_totals(videos: List[VideoStages], which: str) -> List[float]:
    """Seconds of the plain or scored pass summed over videos, one value per run."""
    runs = len(getattr(videos[0], which).runs)
    return [sum(getattr(v, which).runs[r] for v in videos) for r in range(runs)]


def _dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (the whole cache: shards, index, manifest)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_pipeline(items: List[VideoInput], adapter, cfg: RunConfig, out: Path, *, decode_workers: Optional[int] = None,
                 flush_every: float = DEFAULT_FLUSH_EVERY) -> Tuple[float, object, MemoryPeak]:
    """One ``run_batch`` over ``items`` into the new cache directory ``out`` (``decode_workers``
    and ``flush_every`` as for ``aot compress``): (wall seconds, its Summary, memory of this
    process and its decode workers)."""
    from ..pipeline.batch import run_batch

    if out.exists():
        shutil.rmtree(out)
    with PeakMemory(adapter.device, tree=True) as mem:
        t0 = time.perf_counter()
        summary = run_batch(items, out, cfg, adapter=adapter, overwrite=True, decode_workers=decode_workers,
                            flush_every=flush_every)
        wall = time.perf_counter() - t0
    if summary.failed:
        first = summary.failures[0]
        raise RuntimeError(f"{first['path']}: the pipeline failed on this video ({first['error']})")
    return wall, summary, mem.result


def end_to_end_block(runs: List[Tuple[float, object, MemoryPeak, Path]]) -> dict:
    """Figures of the fastest pipeline run (memory: the highest peak of all runs)."""
    wall, summary, _, out = min(runs, key=lambda run: run[0])
    peaks = [run[2] for run in runs]
    disk = _dir_bytes(out)
    host_peak = max((m.host_peak for m in peaks if m.host_peak is not None), default=None)
    tree_peak = max((m.tree_peak for m in peaks if m.tree_peak is not None), default=None)
    device_peak = max((m.device_peak for m in peaks if m.device_peak is not None), default=None)
    return {
        "seconds": wall,
        "runs_s": [round(run[0], 6) for run in runs],
        "videos": summary.done,
        "frames": summary.frames,
        "tokens": summary.tokens,
        "videos_per_s": _rate(summary.done, wall),
        "frames_per_s": _rate(summary.frames, wall),
        "tokens_per_s": _rate(summary.tokens, wall),
        "peak_host_bytes": host_peak,
        "peak_host_tree_bytes": tree_peak,
        "peak_device_bytes": device_peak,
        "memory_method": peaks[0].method,
        "stage_seconds": dict(summary.stage_seconds),
        "cache_bytes": disk,
        "bytes_per_video": disk / summary.done if summary.done else None,
        "cache_dir": str(out),
    }


def _tower_block(seconds: float, videos: int, frames: int, memory: MemoryPeak) -> dict:
    return {"seconds": seconds, "videos_per_s": _rate(videos, seconds), "frames_per_s": _rate(frames, seconds),
            **memory.to_dict()}


def _cache_block(videos: List[VideoStages], end_to_end: dict) -> dict:
    n = len(videos)
    single = sum(v.bytes for v in videos) / n
    full = sum(v.all_tokens_bytes for v in videos) / n
    return {
        "bytes_per_video": end_to_end["bytes_per_video"],
        "single_file_bytes_per_video": single,
        "all_tokens_bytes_per_video": full,
        "tokens_per_video": sum(v.tokens for v in videos) / n,
        "all_tokens_per_video": sum(v.all_tokens for v in videos) / n,
        "token_dim": videos[0].token_dim,
        "token_dtype": videos[0].token_dtype,
        "note": "bytes_per_video: the cache directory aot compress wrote, divided by its videos; "
                "single_file / all_tokens: one-video .safetensors with the method on / off (--method none)",
    }


def run_bench(items: List[VideoInput], adapter, cfg: RunConfig, *, repeat: int = 1, warmup: bool = True,
              workdir: Optional[Path] = None, decode_workers: Optional[int] = None,
              flush_every: float = DEFAULT_FLUSH_EVERY, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Benchmark ``cfg`` with the loaded ``adapter`` on ``items``; returns the JSON-ready report
    (see the package docstring). ``workdir`` keeps the caches written (default: a temporary
    directory, removed afterwards). ``decode_workers`` / ``flush_every``: the end-to-end
    pipeline's, as for ``aot compress`` (None: its default worker count for the adapter's
    device); the decode stage is also timed alone with those workers. ``log`` receives one line
    per step."""
    if not items:
        raise ValueError("no videos to benchmark")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    method = resolve_method(cfg, adapter.profile)
    workers_default = decode_workers is None
    if workers_default:
        from ..pipeline.workers import default_workers

        decode_workers = default_workers(adapter.device.type == "cpu")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = load_average()
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="aot-bench-")) if own_dir else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        if warmup:
            log("warm-up: one plain and one scored tower pass")
            warm_up(items[0], adapter, cfg)
        # what lives now (modules, the model) is not garbage: the collections that start each memory
        # measurement then skip it (a full collection of a process with transformers loaded takes
        # ~0.2 s of CPU, nine of them most of a small benchmark)
        gc.freeze()
        videos: List[Optional[VideoStages]] = [None] * len(items)
        decode: Optional[DecodeRuns] = None
        runs = []
        for r in range(repeat):
            for i, item in enumerate(items):
                log(f"run {r + 1}/{repeat}, stages {i + 1}/{len(items)}: {item.video_id}")
                videos[i] = measure_video(item, adapter, cfg, method, root / "stages" / str(i), into=videos[i])
            log(f"run {r + 1}/{repeat}, decode stage: {decode_workers} worker(s) on {len(items)} video(s)")
            decode = measure_decode(items, adapter, cfg, decode_workers, into=decode)
            log(f"run {r + 1}/{repeat}, end to end: the aot compress pipeline on {len(items)} video(s)")
            out = root / "pipeline" / f"cache-{r}"
            runs.append((*run_pipeline(items, adapter, cfg, out, decode_workers=decode_workers,
                                       flush_every=flush_every), out))
        end_to_end = end_to_end_block(runs)
    finally:
        gc.unfreeze()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
    if own_dir:
        end_to_end.pop("cache_dir")
    pipeline = {"decode_workers": decode_workers, "decode_workers_default": workers_default,
                "flush_every": flush_every}
    return build_report(videos, end_to_end, adapter, cfg, method, repeat, started, load_start, pipeline, decode)


def build_report(videos: List[VideoStages], end_to_end: dict, adapter, cfg: RunConfig, method, repeat: int,
                 started: str, load_start, pipeline: Optional[dict] = None,
                 decode: Optional[DecodeRuns] = None) -> dict:
    """Assemble the report: stages, tower passes, end to end, decode against the main process
    (when ``decode`` was measured), cache, ratios, targets."""
    frames = sum(v.frames for v in videos)
    stages = sum_stages(videos)
    plain_s = sum(v.plain.seconds for v in videos)
    scored_s = sum(v.scored.seconds for v in videos)
    plain_mem = worst_memory([v.plain for v in videos])
    scored_mem = worst_memory([v.scored for v in videos])
    on_device = adapter.device.type == "cuda"
    ratios = {
        "end_to_end_vs_tower": _ratio(plain_s, end_to_end["seconds"]),
        "end_to_end_vs_scored_tower": _ratio(scored_s, end_to_end["seconds"]),
        "end_to_end_vs_tower_paired": paired_median(_per_run_totals(videos, "plain"), end_to_end["runs_s"]),
        "scored_vs_plain_time_paired": paired_median(_per_run_totals(videos, "scored"),
                                                     _per_run_totals(videos, "plain")),
        "scored_vs_plain_time": _ratio(scored_s, plain_s),
        "scored_vs_plain_memory": _ratio(scored_mem.working, plain_mem.working),
        "cache_vs_all_tokens": None,
    }
    cache = _cache_block(videos, end_to_end)
    ratios["cache_vs_all_tokens"] = _ratio(cache["bytes_per_video"], cache["all_tokens_bytes_per_video"])
    desc = adapter.describe()
    report = {
        "aot_bench": FORMAT,
        "created_at": started,
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": load_average()},
        "model": {k: desc.get(k) for k in ("model", "family", "checkpoint_format", "dtype", "device", "grid",
                                          "hidden_size", "tower_hidden_size", "batch_frames")},
        "layers_run": adapter.layers_run,
        "score_layers": desc.get("score_layers", {}).get("resolved"),
        "config": {"decode": to_dict(cfg.decode), "model": to_dict(cfg.model), "method": to_dict(method),
                   "storage": to_dict(cfg.storage), "pipeline": dict(pipeline or {})},
        "repeat": repeat,
        "videos": [v.to_dict() for v in videos],
        "totals": {"videos": len(videos), "frames": frames, "tokens": sum(v.tokens for v in videos),
                   "all_tokens": sum(v.all_tokens for v in videos)},
        "stages_s": stages,
        "tower_only": _tower_block(plain_s, len(videos), frames, plain_mem),
        "scored_tower": _tower_block(scored_s, len(videos), frames, scored_mem),
        "end_to_end": end_to_end,
        "cache": cache,
        "ratios": ratios,
        "memory_basis": "device allocator working bytes" if on_device else "host RSS working bytes (peak - start)",
    }
    if decode is not None:
        report["throughput"] = throughput_block(decode, stages, len(videos), frames, plain_s, scored_s, end_to_end,
                                                adapter.device.type)
    report["targets"] = [
        {"name": t.name, "ratio": t.ratio, "value": ratios[t.ratio], "op": t.op, "limit": t.limit, "where": t.where,
         "measured_on": adapter.device.type, "met": t.met(ratios[t.ratio])}
        for t in TARGETS
    ]
    return report


__all__ = ["run_bench", "build_report", "run_pipeline", "end_to_end_block", "TARGETS", "Target", "STAGES"]
