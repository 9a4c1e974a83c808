"""``aot bench``: how fast the pipeline runs, where the time goes, how much memory and disk it
needs, and how that compares with the vision tower alone (issue 6).

    from aot_cli.bench import run_bench, render_report
    report = run_bench(items, adapter, cfg, repeat=3)      # JSON-ready dict
    print(render_report(report))

Report keys: ``machine`` (CPU, cores, RAM, GPUs, torch/transformers versions), ``load_average``
(other work on the machine at start/end), ``model``, ``config``, ``videos`` (per video),
``totals``, ``stages_s`` (decode, preprocess, tower, scores, method, write: seconds summed over
videos, each stage timed alone), ``tower_only`` / ``scored_tower`` (the plain SDPA pass and the
pass with scores captured, on the same pixels: seconds, frames/s, memory), ``end_to_end`` (the
``aot compress`` pipeline: seconds, videos/s, frames/s, tokens/s, peak host/device memory, its own
stage sums, bytes on disk), ``throughput`` (frames/s and videos/s of the decode stage with the
run's decode workers, of the plain and scored tower pass, of the main process's stages in turn and
end to end, and ``bound``: "decode-bound", "tower-bound", "method-bound", ... with the figures that
name it), ``cache`` (bytes per video with the method on and with every token), ``ratios`` and
``targets``.
"""
from .machine import machine_info
from .memory import MemoryPeak, PeakMemory
from .report import human_bytes, render_report
from .runner import STAGES, TARGETS, Target, build_report, run_bench

__all__ = ["run_bench", "build_report", "render_report", "machine_info", "PeakMemory", "MemoryPeak",
           "human_bytes", "STAGES", "TARGETS", "Target"]
