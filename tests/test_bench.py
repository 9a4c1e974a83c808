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
from aot_cli.cli import main
from checkpoints import build_llava_hf

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FRAMES = 4


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One `aot bench --json --repeat 2` run: tiny LLaVA-OneVision (9x9 tower grid -> 5x5 pooled), 4 frames."""
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
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


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
    assert abs(e2e["seconds"] - min(e2e["runs_s"])) < 1e-5
    assert abs(report["tower_only"]["seconds"] - min(video["tower_runs_s"])) < 1e-5
    assert abs(report["scored_tower"]["seconds"] - min(video["scored_runs_s"])) < 1e-5


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
    video, e2e_runs = report["videos"][0], report["end_to_end"]["runs_s"]
    per_run = sorted(p / e for p, e in zip(video["tower_runs_s"], e2e_runs))
    assert abs(r["end_to_end_vs_tower_paired"] - sum(per_run) / 2) < 1e-4  # median of two runs
    per_run = sorted(s / p for s, p in zip(video["scored_runs_s"], video["tower_runs_s"]))
    assert abs(r["scored_vs_plain_time_paired"] - sum(per_run) / 2) < 1e-4
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


def test_text_output_names_every_figure(report):
    text = report["_stdout"]
    for word in ("machine:", "decode", "preprocess", "tower (plain SDPA)", "scores", "method", "write",
                 "videos/s", "frames/s", "tokens/s", "peak memory", "per video on disk", "targets"):
        assert word in text, word
    assert render_report(report).splitlines()[0] == text.splitlines()[0]


def test_pipeline_options_reach_the_end_to_end_run(report, tmp_path, monkeypatch):
    assert report["config"]["pipeline"] == {"decode_workers": 0, "flush_every": 0}
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
