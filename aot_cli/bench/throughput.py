"""Decode-stage throughput, and which stage bounds the pipeline.

The ``aot compress`` pipeline has two concurrent sides: decode worker processes (each hashes a file
and decodes its frames, :func:`aot_cli.pipeline.workers.run_job`) and the main process, which runs
preprocess -> scored tower pass -> method -> write one group after another. The run goes at the
pace of the slower side. :func:`measure_decode` times the decode side alone, with the worker count
the run uses; :func:`throughput_block` sets it against the main process's stages (timed alone by
:mod:`.stages`) and names the bound.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..pipeline.inputs import VideoInput
from ..pipeline.run import RunConfig
from ..pipeline.workers import DecodeJob, DecodePool, decode_target

#: The main process's stages, in the order it runs them (a key of the report's "stages_s").
MAIN_STAGES = ("preprocess", "tower", "scores", "method", "write")
#: Jobs per worker in a timed decode run (the clips are cycled to reach it), so that every worker
#: stays busy for most of the run instead of the run timing one video per worker.
JOBS_PER_WORKER = 2


@dataclass
class DecodeRuns:
    """Timed decode-stage runs with one worker count: ``workers`` (0: in this process), ``jobs``
    (videos hashed and decoded per run: the clips cycled ``copies`` times), ``frames`` decoded
    per run, and the wall ``runs_s`` of each run (seconds, worker start-up excluded)."""

    workers: int
    jobs: int = 0
    copies: int = 1
    frames: int = 0
    runs_s: List[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The fastest run."""
        return min(self.runs_s)

    def to_dict(self) -> dict:
        best = self.seconds
        return {"workers": self.workers, "jobs": self.jobs, "copies": self.copies, "frames": self.frames,
                "seconds": best, "runs_s": [round(x, 6) for x in self.runs_s],
                "videos_per_s": self.jobs / best if best > 0 else None,
                "frames_per_s": self.frames / best if best > 0 else None}


def copies_for(videos: int, workers: int) -> int:
    """How many times to cycle ``videos`` clips so that ``workers`` processes get
    :data:`JOBS_PER_WORKER` jobs each (whole copies, so the mix of clips stays the same)."""
    return max(1, math.ceil(JOBS_PER_WORKER * max(1, workers) / max(1, videos)))


def _drain(pool: DecodePool) -> int:
    """Take every pending outcome; the frames decoded. RuntimeError on a failed video."""
    frames = 0
    while pool.pending():
        outcome = pool.next()
        if outcome.status != "ok":
            raise RuntimeError(outcome.error or f"the decode stage failed ({outcome.status})")
        frames += int(outcome.decoded.frames.shape[0])
    return frames


def measure_decode(items: List[VideoInput], adapter, cfg: RunConfig, workers: int,
                   into: Optional[DecodeRuns] = None) -> DecodeRuns:
    """One timed run of the decode stage as the pipeline runs it: ``workers`` processes (0: in
    this process) hash and decode the clips, cycled :func:`copies_for` times, at the tower's
    input size. The workers start and each runs one untimed job first (in the pipeline they start
    while the model loads); the clock runs from handing out the first timed job to receiving the
    last outcome. ``into``: earlier runs with the same workers, to add this run to. Raises
    RuntimeError when a video fails to decode."""
    runs = into if into is not None else DecodeRuns(workers=int(workers))
    copies = copies_for(len(items), workers)
    target = decode_target(adapter, cfg.decode)
    default_frames = adapter.profile.default_frames

    def job(item: VideoInput) -> DecodeJob:
        return DecodeJob(str(item.path), cfg.decode, default_frames, None, target)

    jobs = [job(item) for _ in range(copies) for item in items]
    with DecodePool(workers, timeout=cfg.decode.timeout, lookahead=len(jobs)) as pool:
        if workers:
            pool.submit([job(items[0])] * workers)  # start-up and a first job on every worker, untimed
            _drain(pool)
        t0 = time.perf_counter()
        pool.submit(jobs)
        frames = _drain(pool)
        seconds = time.perf_counter() - t0
    runs.jobs, runs.copies, runs.frames = len(jobs), copies, frames
    runs.runs_s.append(seconds)
    return runs


def _rate(count: float, seconds: Optional[float]) -> Optional[float]:
    return count / seconds if seconds and seconds > 0 else None


def name_bound(decode_frames_per_s: Optional[float], main_stages_s: Dict[str, float],
               frames: int) -> Dict[str, object]:
    """Which side bounds the pipeline, from the figures of the report: the decode side
    (``decode_frames_per_s``, its workers together) or the main process (``frames`` frames in
    the sum of ``main_stages_s``, run one after another); for the main process, its largest
    stage names the bound ("tower" covers the scored pass: plain tower + scores). Returns
    ``bound`` ("decode-bound", "tower-bound", "method-bound", "preprocess-bound" or
    "write-bound"), ``stage``, ``main_frames_per_s`` and ``decode_vs_main`` (decode throughput
    over main-process throughput: above 1, decoding keeps ahead)."""
    main_s = sum(main_stages_s.values())
    main_fps = _rate(frames, main_s)
    merged = {"preprocess": main_stages_s.get("preprocess", 0.0),
              "tower": main_stages_s.get("tower", 0.0) + main_stages_s.get("scores", 0.0),
              "method": main_stages_s.get("method", 0.0), "write": main_stages_s.get("write", 0.0)}
    if decode_frames_per_s is not None and main_fps is not None and decode_frames_per_s < main_fps:
        stage = "decode"
    else:
        stage = max(merged, key=lambda k: merged[k])
    ratio = decode_frames_per_s / main_fps if decode_frames_per_s is not None and main_fps else None
    return {"bound": f"{stage}-bound", "stage": stage, "main_frames_per_s": main_fps, "decode_vs_main": ratio,
            "main_stage_share": {k: (v / main_s if main_s > 0 else None) for k, v in merged.items()}}


def throughput_block(decode: DecodeRuns, stages_s: Dict[str, float], videos: int, frames: int,
                     plain_s: float, scored_s: float, end_to_end: dict, device: str) -> dict:
    """The report's "throughput": frames/s and videos/s of the decode stage (its workers
    together), the plain and the scored tower pass, the main process's chain of stages and the
    end-to-end run, and the bound (:func:`name_bound`)."""
    main = {k: float(stages_s.get(k, 0.0)) for k in MAIN_STAGES}
    main_s = sum(main.values())
    decode_block = decode.to_dict()
    note = "decode measured alone with its workers; the main process's stages timed alone, one after another"
    if device == "cpu":
        note += "; on CPU both sides share the cores, so each figure is what that side does with the machine to itself"

    def rates(seconds: float) -> dict:
        return {"seconds": seconds, "frames_per_s": _rate(frames, seconds), "videos_per_s": _rate(videos, seconds)}

    return {
        "decode": decode_block,
        "tower": rates(plain_s),
        "scored_tower": rates(scored_s),
        "main_process": {**rates(main_s), "stages": list(MAIN_STAGES)},
        "end_to_end": {"frames_per_s": end_to_end.get("frames_per_s"), "videos_per_s": end_to_end.get("videos_per_s")},
        **name_bound(decode_block["frames_per_s"], main, frames),
        "note": note,
    }


__all__ = ["DecodeRuns", "measure_decode", "name_bound", "throughput_block", "copies_for", "MAIN_STAGES",
           "JOBS_PER_WORKER"]
