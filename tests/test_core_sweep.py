"""Methods and fidelity end to end: `aot sweep --methods ...` (table, JSON, plot) and `aot compress`
with the baselines and the quality preset, on a real clip with a tiny random LLaVA-OneVision
checkpoint (9x9 tower grid, 5x5 output grid)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aot_cli import TokenCache
from aot_cli.cli import main
from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.core import AOTConfig, compress
from aot_cli.core.fidelity import fidelity, full_scores, full_tokens
from aot_cli.inspect.sweep import (SWEEP_METHODS, method_config, parse_methods, print_sweep, run_sweep,
                                   sweep_ratios)
from aot_cli.models import load_model
from aot_cli.pipeline.run import RunConfig
from aot_cli.video import decode_video

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIP = SAMPLES / "carphone_pristine.mp4"
FIGURES = ("coverage", "salient_coverage", "ot_error")


@pytest.fixture(scope="module")
def adapter(tiny_llava_hf_dir):
    return load_model(ModelConfig(model=str(tiny_llava_hf_dir), dtype="fp32", device="cpu"))


def test_sweep_points_carry_the_figures_of_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    x, sh, dp = torch.randn(8, 81, 16, generator=g), torch.rand(8, 81, generator=g), torch.rand(8, 81, generator=g)
    base = AOTConfig(ratio=0.1, clip_length=4, seed=3)
    points = sweep_ratios(x, sh, dp, (9, 9), base, [0.1, 0.3], list(SWEEP_METHODS), fidelity=True)
    assert [(p.method, p.requested) for p in points] == [(m, r) for m in SWEEP_METHODS for r in (0.1, 0.3)]
    full, sal = full_tokens(x, (9, 9)), full_scores(dp, (9, 9))
    for p in points:
        assert p.error is None and p.achieved == p.planned == round(p.requested * 8 * 25)
        kept = compress(x, sh, dp, (9, 9), method_config(base, p.method, p.requested)).tokens
        want = fidelity(full, kept, sal)
        assert (p.coverage, p.salient_coverage, p.ot_error) == pytest.approx(
            (want.coverage, want.salient_coverage, want.ot_error), abs=1e-9)
    assert method_config(base, "random", 0.1).seed == 3
    assert method_config(AOTConfig(ratio=0.1, keyframe_once=True), "quality", 0.2).keyframe_once is False
    assert method_config(AOTConfig(ratio=0.1, keyframe_once=True), "aot", 0.2).keyframe_once is True
    assert sweep_ratios(x, sh, dp, (9, 9), base, [0.1])[0].coverage is None  # fidelity off by default here


def test_run_sweep_json_has_every_figure_for_every_point(adapter):
    cfg = RunConfig(decode=DecodeConfig(frames=8), model=ModelConfig(model="tiny", dtype="fp32"),
                    method=AOTConfig(ratio=0.1, seed=7))
    methods = ["aot", "quality", "random", "pool", "attention"]
    report = run_sweep(CLIP, [0.2, 0.4], cfg, adapter=adapter, methods=methods)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["methods"] == methods and data["seed"] == 7 and data["fidelity"] is True
    assert data["config"]["seed"] == 7
    ratio_pts = [p for p in data["points"] if p["rule"] == "ratio"]
    assert len(ratio_pts) == 10 and len([p for p in data["points"] if p["rule"] == "reference"]) == 2
    for p in data["points"]:
        assert p["error"] is None
        for key in FIGURES:
            assert isinstance(p[key], float) and (0.0 <= p[key] <= 1.0 + 1e-9)
        assert p["fidelity_seconds"] >= 0
    # the figures are those of the uncompressed tokens of this very tower run
    decoded = decode_video(CLIP, DecodeConfig(frames=8))
    out = adapter.encode(adapter.preprocess(decoded.frames))
    method = dataclasses.replace(AOTConfig(ratio=0.2, seed=7), pooling="bilinear", clip_length=4)
    full, sal = full_tokens(out.tokens, out.grid), full_scores(out.deep, out.grid)
    for p in ratio_pts[:2] + ratio_pts[4:6]:
        kept = compress(out.tokens, out.shallow, out.deep, out.grid, method_config(method, p["method"], p["requested"])).tokens
        assert p["coverage"] == pytest.approx(fidelity(full, kept, sal, ot=False).coverage, abs=1e-6)
    assert data["timings_s"]["fidelity"] > 0


def test_cli_sweep_methods_table_json_and_plot(tiny_llava_hf_dir, tmp_path):
    args = ["sweep", str(CLIP), "--model", str(tiny_llava_hf_dir), "--frames", "8", "--dtype", "fp32",
            "--ratios", "0.2,0.4", "--methods", "aot,quality,random,pool,attention", "--seed", "4"]
    r = CliRunner().invoke(main, args + ["--json", "--plot", str(tmp_path / "sweep.png")])
    assert r.exit_code == 0, r.output
    (data,) = json.loads(r.stdout)["videos"]
    assert data["seed"] == 4 and {p["method"] for p in data["points"]} == set(SWEEP_METHODS)
    assert all(p[k] is not None for p in data["points"] for k in FIGURES)
    image = Image.open(tmp_path / "sweep.png")
    assert image.format == "PNG" and image.size[0] > 1000  # four panels
    table = CliRunner().invoke(main, args + ["--reference", "none"])
    assert table.exit_code == 0, table.output
    for word in ("coverage", "salient", "OT error", "quality", "attention", "random seed 4"):
        assert word in table.stdout
    off = CliRunner().invoke(main, args[:-4] + ["--no-fidelity", "--json"])
    assert off.exit_code == 0 and all(p["coverage"] is None for p in json.loads(off.stdout)["videos"][0]["points"])


def test_cli_sweep_bad_methods_fail_in_one_line(tiny_llava_hf_dir):
    r = CliRunner().invoke(main, ["sweep", str(CLIP), "--model", str(tiny_llava_hf_dir), "--methods", "aot,best"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "--methods" in r.stderr
    with pytest.raises(ValueError):
        parse_methods("")
    r = CliRunner().invoke(main, ["sweep", str(SAMPLES / "nothing-here"), "--model", str(tiny_llava_hf_dir)])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "nothing-here" in r.stderr


def test_cli_sweep_of_a_directory_summarises_and_marks_the_leaders(tiny_llava_hf_dir, tmp_path, monkeypatch):
    import shutil

    data = tmp_path / "videos"
    data.mkdir()
    for name in ("carphone_pristine.mp4", "realshort.mp4"):
        shutil.copy(SAMPLES / name, data / name)
    (data / "broken.mp4").write_bytes(b"not a video")
    args = ["sweep", str(data), "--model", str(tiny_llava_hf_dir), "--frames", "8", "--dtype", "fp32",
            "--ratios", "0.2,0.4", "--methods", "aot,quality,pool", "--reference", "126:0.3"]
    r = CliRunner().invoke(main, args + ["--json", "--plot", str(tmp_path / "mean.png")])
    assert r.exit_code == 1, r.output  # one video could not be read; the others are swept
    report = json.loads(r.stdout)
    assert sorted(Path(v["video"]).name for v in report["videos"]) == ["carphone_pristine.mp4", "realshort.mp4"]
    assert [f["video"] for f in report["failed"]] == ["broken.mp4"] and report["ot_error"] is True
    assert Image.open(tmp_path / "mean.png").format == "PNG"
    rows = {(row["method"], row["setting"]): row for row in report["summary"]}
    assert len(rows) == 3 * 2 + 1 and all(row["videos"] == 2 for row in rows.values())
    for (method, setting), row in rows.items():  # the means of the per-video points
        points = [p for v in report["videos"] for p in v["points"]
                  if p["method"] == method and (p["label"] == setting or f"reference {p['label']}" == setting
                                                or setting.startswith("reference"))]
        points = [p for p in points if (p["rule"] == "ratio") == (row["rule"] == "ratio")]
        for key in FIGURES:
            assert row[key] == pytest.approx(sum(p[key] for p in points) / len(points), abs=1e-9)
    for ratio in ("ratio 0.2", "ratio 0.4"):  # each figure led by the best method at that ratio
        group = [rows[(m, ratio)] for m in ("aot", "quality", "pool")]
        for key, higher in (("coverage", True), ("salient_coverage", True), ("ot_error", False)):
            best = (max if higher else min)(row[key] for row in group)
            assert [row[key] == best for row in group] == [key in row["leads"] for row in group]
    assert rows[("aot", "reference V=126, keep 0.3")]["leads"] == []  # another budget: never compared
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 1
    for text in ("mean over 2 videos", "carphone_pristine.mp4", "realshort.mp4", "failed: broken.mp4", "*"):
        assert text in table.stdout
    # without POT the sweep still runs: one note, the OT column left out
    import sys

    monkeypatch.setitem(sys.modules, "ot", None)
    r = CliRunner().invoke(main, args[:1] + [str(data / "realshort.mp4")] + args[2:])
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "aot-cli[fidelity]" in notes[0] and "OT error" not in r.stdout
    assert "coverage" in r.stdout


@pytest.mark.parametrize("flags,method,preset,seed", [
    (["--method", "random", "--seed", "5"], "random", "reference", 5),
    (["--method", "pool"], "pool", "reference", 0),
    (["--method", "attention"], "attention", "reference", 0),
    (["--preset", "quality"], "aot", "quality", 0),
])
def test_cli_compress_methods_exact_and_recorded(tiny_llava_hf_dir, tmp_path, flags, method, preset, seed):
    out = tmp_path / "out.safetensors"
    r = CliRunner().invoke(main, ["compress", str(CLIP), "--model", str(tiny_llava_hf_dir), "--frames", "8",
                                  "--dtype", "fp32", "--ratio", "0.3", "-o", str(out), "-q"] + flags)
    assert r.exit_code == 0, r.output
    v = TokenCache(out)[TokenCache(out).ids()[0]]
    recorded = v.meta["config"]["method"]
    assert (recorded["method"], recorded["preset"], recorded["seed"]) == (method, preset, seed)
    assert v.meta["counts"]["achieved"] == v.meta["counts"]["planned"] == round(0.3 * 8 * 25)
    assert int((v.kind != 3).sum()) == round(0.3 * 8 * 25) and int((v.kind == 3).sum()) == 1  # OneVision newline
    stats = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    assert json.loads(stats.stdout)["videos"][0]["method"] == method


@pytest.mark.parametrize("flags,named", [
    (["--preset", "quality", "--anchors", "126", "--keep-ratio", "0.3"], "--anchors"),
    (["--method", "random", "--keep-ratio", "0.3"], "--keep-ratio"),
    (["--method", "pool", "--preset", "quality"], "--preset"),
    (["--preset", "quality", "--keyframe-once"], "--keyframe-once"),
])
def test_cli_compress_rejects_bad_combinations_before_work(tiny_llava_hf_dir, tmp_path, flags, named):
    out = tmp_path / "out.safetensors"
    r = CliRunner().invoke(main, ["compress", str(CLIP), "--model", str(tiny_llava_hf_dir), "--frames", "8",
                                  "-o", str(out)] + flags)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in r.output
    assert not out.exists()


def test_print_sweep_lists_unmet_settings():
    from rich.console import Console

    g = torch.Generator().manual_seed(1)
    x, sh, dp = torch.randn(8, 81, 8, generator=g), torch.rand(8, 81, generator=g), torch.rand(8, 81, generator=g)
    points = sweep_ratios(x, sh, dp, (9, 9), AOTConfig(ratio=0.1), [0.001, 0.2], ["aot", "pool"], fidelity=True)
    from aot_cli.inspect.sweep import SweepReport

    report = SweepReport("v.mp4", 8, (9, 9), (5, 5), 25, "m", points, methods=("aot", "pool"), fidelity=True)
    console = Console(record=True, width=160)
    print_sweep(report, console)
    text = console.export_text()
    assert "aot ratio 0.001: not met" in text and "pool" in text and "coverage" in text


@pytest.mark.parametrize("method", [AOTConfig(method="random", ratio=0.3, seed=2), AOTConfig(method="pool", ratio=0.3),
                                    AOTConfig.preset("quality", ratio=0.3)], ids=["random", "pool", "quality"])
def test_inspect_reads_baseline_and_quality_caches(adapter, tmp_path, method):
    from aot_cli.cache import write_single
    from aot_cli.inspect import cache_stats
    from aot_cli.inspect.pictures import frame_marks, plot_tokens_per_frame, render_overlay
    from aot_cli.pipeline.run import compress_video

    cfg = RunConfig(decode=DecodeConfig(frames=8), model=ModelConfig(model="tiny", dtype="fp32"), method=method)
    res = compress_video(CLIP, cfg, adapter=adapter)
    path = write_single(tmp_path / "v.safetensors", res.video_id, res.tensors, res.meta)
    cache = TokenCache(path)
    video = cache[cache.ids()[0]]
    stats = cache_stats(cache)["videos"][0]
    assert stats["tokens"] == video.meta["counts"]["planned"] == round(0.3 * 8 * 25)
    marks = frame_marks(video)
    assert sum(len(m.kept) + len(m.anchors) + len(m.raw) for m in marks) == stats["tokens"]
    sheet = render_overlay(cache, None, tmp_path / "sheet.png")
    assert len(sheet.picture_boxes) == 8 and Image.open(sheet.path).format == "PNG"
    assert Image.open(plot_tokens_per_frame(cache, None, tmp_path / "t.png")).format == "PNG"
