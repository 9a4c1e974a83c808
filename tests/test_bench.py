"""`aot bench` on a real short clip with a tiny LLaVA-OneVision tower: every promised figure is
present, positive where it is a time or a size, and every ratio is the quotient of its parts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aot_cli.bench import STAGES, PeakMemory, human_bytes, render_report
from aot_cli.bench.memory import tree_rss
from aot_cli.bench.throughput import JOBS_PER_WORKER, MAIN_STAGES, copies_for, measure_decode, name_bound
from aot_cli.cli import main
from checkpoints import build_llava_hf

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FRAMES = 4


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One `aot bench --json --repeat 2` run: tiny LLaVA-OneVision (9x9 tower grid -> 5x5 pooled), 4 frames,
    decoding in the main process (the worker pool's path: test_default_decode_workers_follow_the_device)."""
    root = tmp_path_factory.mktemp("bench")
    model = build_llava_hf(root / "llava")
    out = root / "bench.json"
    result = CliRunner().invoke(main, [
        "bench", str(SAMPLES / "realshort.mp4"), "--model", str(model), "--frames", str(FRAMES),
        "--dtype", "fp32", "--ratio", "0.2", "--repeat", "2", "--decode-workers", "0", "--flush-every", "0",
        "--json", str(out), "-q",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    data["_stdout"] = result.stdout
    return data


def close(a: float, b: float) -> bool:
    """Equal up to float rounding (both sides computed from the same unrounded seconds)."""
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


#: The report rounds per-run seconds (``runs_s``) to 6 decimals: the unrounded value lies within
#: half a unit of the last decimal of what it shows.
HALF_UNIT = 0.5e-6


def quotient_bounds(num: float, den: float) -> tuple:
    """The range of ``a / b`` over every unrounded pair that rounds to (``num``, ``den``)."""
    return (num - HALF_UNIT) / (den + HALF_UNIT), (num + HALF_UNIT) / (den - HALF_UNIT)


def median_of_two_within(value: float, pairs) -> bool:
    """``value`` is the median (the mean, for two runs) of the quotients of two rounded
    (numerator, denominator) pairs, whatever the unrounded seconds behind them were."""
    (lo1, hi1), (lo2, hi2) = (quotient_bounds(n, d) for n, d in pairs)
    lo, hi = (lo1 + lo2) / 2, (hi1 + hi2) / 2
    slack = 1e-12 * max(1.0, abs(value))  # float rounding of the report's own arithmetic
    return lo - slack <= value <= hi + slack


def test_machine_and_versions(report):
    m = report["machine"]
    assert m["cpu"] and m["usable_cores"] >= 1 and m["logical_cores"] >= 1
    assert m["torch"] == torch.__version__
    import transformers
    assert m["transformers"] == transformers.__version__
    assert m["gpus"] == [] if not torch.cuda.is_available() else len(m["gpus"]) >= 1
    assert report["model"]["device"] == "cpu" and report["model"]["dtype"] == "fp32"


def test_stage_times_are_positive_and_add_up(report):
    stages = report["stages_s"]
    assert tuple(stages) == STAGES == ("decode", "preprocess", "tower", "scores", "method", "write")
    for name in ("decode", "preprocess", "tower", "method", "write"):
        assert stages[name] > 0, name
    assert close(stages["tower"], report["tower_only"]["seconds"])
    assert close(stages["scores"], report["scored_tower"]["seconds"] - report["tower_only"]["seconds"])
    per_video = report["videos"][0]["stages_s"]
    assert set(per_video) == set(STAGES)


def test_repeats_alternate_and_keep_the_best(report):
    e2e, video = report["end_to_end"], report["videos"][0]
    assert report["repeat"] == 2 and len(e2e["runs_s"]) == 2 and len(video["tower_runs_s"]) == 2
    # runs_s are rounded to 6 decimals and rounding keeps the order: the best, rounded, is their minimum
    assert round(e2e["seconds"], 6) == min(e2e["runs_s"])
    assert round(report["tower_only"]["seconds"], 6) == min(video["tower_runs_s"])
    assert round(report["scored_tower"]["seconds"], 6) == min(video["scored_runs_s"])


def test_throughput_from_its_parts(report):
    e2e, totals = report["end_to_end"], report["totals"]
    assert totals == {"videos": 1, "frames": FRAMES, "tokens": round(0.2 * FRAMES * 25), "all_tokens": FRAMES * 25}
    assert e2e["seconds"] > 0 and e2e["videos"] == 1 and e2e["frames"] == FRAMES
    assert close(e2e["videos_per_s"], 1 / e2e["seconds"])
    assert close(e2e["frames_per_s"], FRAMES / e2e["seconds"])
    assert close(e2e["tokens_per_s"], totals["tokens"] / e2e["seconds"])
    assert set(e2e["stage_seconds"]) >= {"decode", "tower", "method", "write"}
    plain, scored = report["tower_only"], report["scored_tower"]
    assert plain["seconds"] > 0 and scored["seconds"] > 0
    assert close(plain["frames_per_s"], FRAMES / plain["seconds"])
    assert close(scored["frames_per_s"], FRAMES / scored["seconds"])


def test_memory_figures(report):
    e2e = report["end_to_end"]
    assert e2e["peak_host_bytes"] > 50 * 2**20  # a Python process with torch loaded
    assert e2e["peak_host_tree_bytes"] >= e2e["peak_host_bytes"]
    assert e2e["peak_device_bytes"] is None  # CPU run
    for block in (report["tower_only"], report["scored_tower"]):
        assert block["host_peak_bytes"] >= block["host_start_bytes"] > 0
        assert block["host_working_bytes"] == block["host_peak_bytes"] - block["host_start_bytes"]


def test_cache_sizes(report):
    c = report["cache"]
    tokens, full = report["totals"]["tokens"], report["totals"]["all_tokens"]
    assert c["tokens_per_video"] == tokens and c["all_tokens_per_video"] == full
    assert c["token_dim"] == 48 and c["token_dtype"] == "float32"
    # on disk: at least the tokens themselves (+1 newline each), less with the method on
    assert c["single_file_bytes_per_video"] >= (tokens + 1) * 48 * 4
    assert c["all_tokens_bytes_per_video"] >= (full + 1) * 48 * 4
    assert c["bytes_per_video"] > (tokens + 1) * 48 * 4
    assert c["bytes_per_video"] < c["all_tokens_bytes_per_video"]


def test_ratios_are_quotients_of_parts(report):
    r = report["ratios"]
    assert close(r["end_to_end_vs_tower"], report["tower_only"]["seconds"] / report["end_to_end"]["seconds"])
    assert close(r["end_to_end_vs_scored_tower"], report["scored_tower"]["seconds"] / report["end_to_end"]["seconds"])
    # paired ratios: the median of per-run quotients, recomputed from the rounded per-run seconds the
    # report shows; the bound follows from that rounding (relative, so a ratio of 35 is held as
    # tightly as one of 0.9: see test_paired_ratio_check_is_tight_for_large_ratios)
    video, e2e_runs = report["videos"][0], report["end_to_end"]["runs_s"]
    assert median_of_two_within(r["end_to_end_vs_tower_paired"], list(zip(video["tower_runs_s"], e2e_runs)))
    assert median_of_two_within(r["scored_vs_plain_time_paired"],
                                list(zip(video["scored_runs_s"], video["tower_runs_s"])))
    assert close(r["scored_vs_plain_time"], report["scored_tower"]["seconds"] / report["tower_only"]["seconds"])
    plain_mem = report["tower_only"]["host_working_bytes"]
    scored_mem = report["scored_tower"]["host_working_bytes"]
    assert r["scored_vs_plain_memory"] is None if plain_mem == 0 else close(r["scored_vs_plain_memory"],
                                                                          scored_mem / plain_mem)
    assert close(r["cache_vs_all_tokens"], report["cache"]["bytes_per_video"] / report["cache"]["all_tokens_bytes_per_video"])
    targets = {t["ratio"]: t for t in report["targets"]}
    assert set(targets) == {"end_to_end_vs_tower", "scored_vs_plain_time", "scored_vs_plain_memory"}
    for key, t in targets.items():
        assert t["value"] == r[key] and t["measured_on"] == "cpu"
        expected = t["value"] >= t["limit"] if t["op"] == ">=" else t["value"] <= t["limit"]
        assert t["met"] is (None if t["value"] is None else expected)


def test_decode_throughput_from_its_parts(report):
    d = report["throughput"]["decode"]
    assert d["workers"] == report["config"]["pipeline"]["decode_workers"] == 0
    assert len(d["runs_s"]) == 2 and round(d["seconds"], 6) == min(d["runs_s"]) and d["seconds"] > 0
    # one clip decoded in this process: cycled to JOBS_PER_WORKER jobs, each decoding every frame
    assert d["copies"] == copies_for(1, 0) == JOBS_PER_WORKER
    assert d["jobs"] == d["copies"] and d["frames"] == d["copies"] * FRAMES
    assert close(d["frames_per_s"], d["frames"] / d["seconds"])
    assert close(d["videos_per_s"], d["jobs"] / d["seconds"])


def test_throughput_names_the_bound_its_numbers_give(report):
    """The bound follows from the report's own figures (whichever side is slower here)."""
    t, stages = report["throughput"], report["stages_s"]
    main_s = sum(stages[k] for k in MAIN_STAGES)
    assert set(MAIN_STAGES) == set(STAGES) - {"decode"}
    assert close(t["main_process"]["seconds"], main_s)
    assert close(t["main_process"]["frames_per_s"], FRAMES / main_s)
    assert close(t["main_frames_per_s"], t["main_process"]["frames_per_s"])
    assert close(t["tower"]["frames_per_s"], report["tower_only"]["frames_per_s"])
    assert close(t["scored_tower"]["frames_per_s"], report["scored_tower"]["frames_per_s"])
    assert close(t["end_to_end"]["frames_per_s"], report["end_to_end"]["frames_per_s"])
    decode_fps = t["decode"]["frames_per_s"]
    assert close(t["decode_vs_main"], decode_fps / t["main_process"]["frames_per_s"])
    parts = {"preprocess": stages["preprocess"], "tower": stages["tower"] + stages["scores"],
             "method": stages["method"], "write": stages["write"]}
    expected = "decode" if decode_fps < t["main_process"]["frames_per_s"] else max(parts, key=parts.get)
    assert t["stage"] == expected and t["bound"] == f"{expected}-bound"
    assert (t["decode_vs_main"] < 1) == (t["bound"] == "decode-bound")
    assert close(sum(t["main_stage_share"].values()), 1.0)
    assert f"bound: {t['bound']}" in report["_stdout"]


def test_name_bound_follows_the_figures():
    stages = {"preprocess": 0.1, "tower": 2.0, "scores": 0.2, "method": 0.5, "write": 0.05}
    # 32 frames in 2.85 s: 11.2 frames/s in the main process
    assert name_bound(10.0, stages, 32)["bound"] == "decode-bound"
    fast = name_bound(100.0, stages, 32)
    assert fast["bound"] == "tower-bound" and close(fast["decode_vs_main"], 100.0 / (32 / 2.85))
    heavy_method = dict(stages, method=3.0)
    assert name_bound(100.0, heavy_method, 32)["bound"] == "method-bound"
    # the tower stage of the bound is the scored pass: plain tower + scores together
    split = {"preprocess": 0.0, "tower": 0.6, "scores": 0.6, "method": 1.0, "write": 0.0}
    assert name_bound(None, split, 32)["bound"] == "tower-bound"


def test_decode_runs_cycle_the_clips_for_every_worker():
    """Two workers, one clip: the clip is decoded copies_for(1, 2) times per timed run, through the pool."""
    from types import SimpleNamespace

    from aot_cli.config import DecodeConfig
    from aot_cli.pipeline.inputs import VideoInput
    from aot_cli.pipeline.run import RunConfig

    adapter = SimpleNamespace(profile=SimpleNamespace(default_frames=3))
    cfg = RunConfig(decode=DecodeConfig(frames=2))
    item = VideoInput(SAMPLES / "realshort.mp4", "realshort.mp4")
    runs = measure_decode([item], adapter, cfg, 2)
    assert runs.copies == copies_for(1, 2) == 2 * JOBS_PER_WORKER and runs.jobs == runs.copies
    assert runs.frames == 2 * runs.jobs and len(runs.runs_s) == 1 and runs.seconds > 0
    inline = measure_decode([item, item], adapter, cfg, 0)  # in this process: each clip once
    assert (inline.workers, inline.copies, inline.jobs, inline.frames) == (0, 1, 2, 4)
    assert measure_decode([item, item], adapter, cfg, 0, into=inline) is inline and len(inline.runs_s) == 2


def test_paired_ratio_check_is_tight_for_large_ratios():
    """The case that failed with an absolute 1e-4: a ratio near 35 from millisecond denominators.
    The rounding bound accepts the true median and rejects values 0.5 % off or a single run's quotient."""
    from aot_cli.bench.runner import paired_median

    num, den = [0.0349871234, 0.0361112349], [0.0010034567, 0.0010398761]
    value = paired_median(num, den)
    shown = [(round(n, 6), round(d, 6)) for n, d in zip(num, den)]
    assert abs(value - sum(n / d for n, d in shown) / 2) > 1e-4  # the old absolute check failed here
    assert median_of_two_within(value, shown)
    assert not median_of_two_within(value * 1.005, shown) and not median_of_two_within(value * 0.995, shown)
    assert not median_of_two_within(num[0] / den[0], shown)  # one run's quotient is not the median


def test_text_output_names_every_figure(report):
    text = report["_stdout"]
    for word in ("machine:", "decode", "preprocess", "tower (plain SDPA)", "scores", "method", "write",
                 "videos/s", "frames/s", "tokens/s", "peak memory", "per video on disk", "targets",
                 "decode stage (in this process)", "main process", "bound: "):
        assert word in text, word
    assert render_report(report).splitlines()[0] == text.splitlines()[0]


def test_pipeline_options_reach_the_end_to_end_run(report, tmp_path, monkeypatch):
    assert report["config"]["pipeline"] == {"decode_workers": 0, "decode_workers_default": False, "flush_every": 0}
    import aot_cli.pipeline.batch as batch

    seen = []
    real = batch.run_batch

    def spy(*args, **kwargs):
        seen.append((kwargs.get("decode_workers"), kwargs.get("flush_every")))
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "run_batch", spy)
    model = build_llava_hf(tmp_path / "llava")
    result = CliRunner().invoke(main, [
        "bench", str(SAMPLES / "realshort.mp4"), "--model", str(model), "--frames", "2", "--dtype", "fp32",
        "--decode-workers", "0", "--flush-every", "3", "--no-warmup", "-q", "--json", str(tmp_path / "b.json"),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen == [(0, 3.0)]


def test_default_decode_workers_follow_the_device(tmp_path):
    """Without --decode-workers, bench times the decode stage and the pipeline with the count
    `aot compress` would use for a CPU tower."""
    from aot_cli.pipeline.workers import default_workers

    model = build_llava_hf(tmp_path / "llava")
    out = tmp_path / "b.json"
    result = CliRunner().invoke(main, [
        "bench", str(SAMPLES / "realshort.mp4"), "--model", str(model), "--frames", "2", "--dtype", "fp32",
        "--device", "cpu", "--no-warmup", "-q", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    expected = default_workers(on_cpu=True)
    assert data["config"]["pipeline"]["decode_workers"] == expected >= 1
    assert data["config"]["pipeline"]["decode_workers_default"] is True
    decode = data["throughput"]["decode"]
    assert decode["workers"] == expected and decode["jobs"] == copies_for(1, expected)
    assert decode["frames"] == 2 * decode["jobs"] and decode["frames_per_s"] > 0
    worker_label = f"decode stage ({expected} worker{'s' if expected > 1 else ''})"
    assert worker_label in render_report(data)


def test_negative_pipeline_options_are_one_line_usage_errors(tmp_path):
    for flag, value in (("--decode-workers", "-1"), ("--flush-every", "-2")):
        result = CliRunner().invoke(main, ["bench", str(SAMPLES / "realshort.mp4"), "--model", str(tmp_path), flag, value])
        assert result.exit_code == 2
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and flag in lines[0], lines


def test_missing_video_is_a_one_line_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "nope.mp4"), "--model", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.mp4" in lines[0]


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert mem.result.method in ("vmhwm", "sampled")
    assert mem.result.host_working >= 48 * 2**20


def test_tree_peak_includes_child_processes():
    """A child holds 96 MiB until the sampler has seen it (polled, with a generous deadline: no
    fixed sleep that a busy machine could outlast)."""
    import time

    code = "import sys; b = bytearray(96 * 2**20); print('ready', flush=True); sys.stdin.read()"
    with PeakMemory(torch.device("cpu"), tree=True) as mem:
        start = mem._tree_peak
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline().strip() == b"ready"
            deadline = time.monotonic() + 120
            while mem._tree_peak - start < 80 * 2**20 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            child.stdin.close()
            child.wait(60)
            child.stdout.close()
    assert mem.result.tree_peak - mem.result.host_peak >= 80 * 2**20
    assert tree_rss() > 0


def test_paired_median():
    from aot_cli.bench.runner import paired_median

    assert paired_median([2.0, 9.0, 3.0], [1.0, 3.0, 1.0]) == 3.0
    assert paired_median([1.0, 3.0], [1.0, 1.0]) == 2.0
    assert paired_median([], []) is None


def test_human_bytes():
    assert human_bytes(None) == "-" and human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(3 * 2**30) == "3.0 GiB"
