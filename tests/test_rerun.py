"""Reruns never replace cached videos by themselves: another configuration stops before anything
runs (exit 2, one line naming the settings and the two ways on), ``--overwrite`` replaces, and a
file aot did not write is never replaced, whatever the flags."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict

import pytest
import torch
from click.testing import CliRunner

from aot_cli import TokenCache
from aot_cli.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def files_of(path: Path) -> Dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) and the sha256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("output", ["cache", "one.safetensors"])
def test_another_ratio_stops_before_anything_runs_and_overwrite_replaces(tiny_siglip_dir, tmp_path, output,
                                                                        nothing_runs):
    out = tmp_path / output
    clips = [SAMPLES / "realshort.mp4"] if output.endswith(".safetensors") else \
        [SAMPLES / "realshort.mp4", SAMPLES / "bikes.mp4"]
    base = ["compress", *clips, "-o", out, "--model", tiny_siglip_dir, "--frames", "8", "--dtype", "fp32",
            "--decode-workers", "0"]
    assert run(base + ["--ratio", "0.1"]).exit_code == 0
    cached = files_of(out)
    tokens = {vid: TokenCache(out)[vid].tokens.clone() for vid in TokenCache(out).ids()}
    nothing_runs.clear()
    r = run(base + ["--ratio", "0.2", "--frames", "8"])
    line = one_line(r)
    assert r.exit_code == 2 and nothing_runs == []
    count = "2 of the 2 videos are" if len(clips) == 2 else "the video is"
    assert line.startswith(f"aot: error: {out}: {count} cached with other settings: --ratio 0.1 -> 0.2;"), line
    assert "--overwrite" in line and "another -o" in line
    assert files_of(out) == cached  # not a byte changed
    for vid, t in tokens.items():
        assert torch.equal(TokenCache(out)[vid].tokens, t)
    # several settings at once are all named, in flag terms
    line = one_line(run(base + ["--ratio", "0.2", "--sinkhorn-iters", "7", "--no-inter"]))
    assert "--ratio 0.1 -> 0.2" in line and "--sinkhorn-iters 100 -> 7" in line and "--no-inter off -> on" in line
    # --overwrite replaces them
    r = run(base + ["--ratio", "0.2", "--overwrite"])
    assert r.exit_code == 0 and "wrote" in r.stderr
    cache = TokenCache(out)
    assert sorted(cache.ids()) == sorted(tokens)
    for vid in tokens:
        assert cache[vid].meta["config"]["method"]["ratio"] == 0.2
        assert cache[vid].tokens.shape[0] > tokens[vid].shape[0]
    # and the rerun of that is a rerun with nothing to do
    r = run(base + ["--ratio", "0.2"])
    assert r.exit_code == 0 and "nothing to do" in r.stderr
    if out.is_dir():  # the replaced videos' old bytes are reclaimable, and aot compact frees them
        storage = json.loads(run(["inspect", out, "--json"]).stdout)["storage"]
        assert storage["reclaimable_bytes"] > 0 and storage["superseded_rows"] == 2
        assert run(["compact", out]).exit_code == 0
        assert json.loads(run(["inspect", out, "--json"]).stdout)["storage"]["reclaimable_bytes"] == 0


def test_a_changed_file_with_the_same_settings_is_computed_again(tiny_siglip_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLES / "realshort.mp4", data / "clip.mp4")
    out = tmp_path / "cache"
    base = ["compress", data, "-o", out, "--model", tiny_siglip_dir, "--frames", "8", "--dtype", "fp32",
            "--decode-workers", "0", "--jsonl"]
    assert run(base).exit_code == 0
    shutil.copy(SAMPLES / "bikes.mp4", data / "clip.mp4")  # same id, other content
    r = run(base)
    assert r.exit_code == 0 and [json.loads(x)["status"] for x in r.stdout.splitlines()] == ["ok"]
    sha = hashlib.sha256((SAMPLES / "bikes.mp4").read_bytes()).hexdigest()
    assert TokenCache(out)["clip.mp4"].meta["sha256"] == sha


def test_overwrite_never_replaces_a_file_aot_did_not_write(tiny_siglip_dir, tmp_path, nothing_runs):
    from safetensors.torch import save_file

    weights = tmp_path / "model.safetensors"
    save_file({"layer.weight": torch.randn(4, 4)}, weights, metadata={"format": "pt"})
    text = tmp_path / "notes.safetensors"
    text.write_text("my notes\n")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for target in (weights, text, empty):
        before = files_of(target)
        for extra in ([], ["--overwrite"]):
            r = run(["compress", SAMPLES / "realshort.mp4", "-o", target, "--model", tiny_siglip_dir, *extra])
            line = one_line(r)
            assert r.exit_code == 2 and line.startswith(f"aot: error: -o {target}: exists and is not an aot output")
            assert "--overwrite" not in line  # nothing to suggest: it is never replaced
            assert files_of(target) == before
    assert nothing_runs == []
    # a shard inside a cache directory is refused as an output file too
    cache = tmp_path / "cache"
    assert run(["compress", SAMPLES / "realshort.mp4", "-o", cache, "--model", tiny_siglip_dir, "--frames", "4",
                "--decode-workers", "0"]).exit_code == 0
    (shard,) = (cache / "shards").iterdir()
    before = files_of(cache)
    line = one_line(run(["compress", SAMPLES / "bikes.mp4", "-o", shard, "--model", tiny_siglip_dir, "--overwrite"]))
    assert "is a shard inside an aot cache directory" in line and files_of(cache) == before
    # an aot output that is damaged is aot's own: the message says how to replace it
    single = tmp_path / "one.safetensors"
    assert run(["compress", SAMPLES / "realshort.mp4", "-o", single, "--model", tiny_siglip_dir, "--frames", "4",
                "--decode-workers", "0"]).exit_code == 0
    single.write_bytes(single.read_bytes()[:-64])
    line = one_line(run(["compress", SAMPLES / "realshort.mp4", "-o", single, "--model", tiny_siglip_dir,
                         "--frames", "4"]))
    assert "--overwrite replaces it" in line
    r = run(["compress", SAMPLES / "realshort.mp4", "-o", single, "--model", tiny_siglip_dir, "--frames", "4",
             "--decode-workers", "0", "--overwrite"])
    assert r.exit_code == 0 and len(TokenCache(single)) == 1


def test_a_video_made_by_an_older_aot_is_named_as_such_not_by_settings_it_lacked():
    """A cache entry from before the configuration format was recorded (and before ``--seek``
    existed) is refused as made by another aot-cli version, not as '--seek not recorded -> exact';
    real setting changes are still named beside it."""
    from aot_cli.pipeline.changes import cached_settings, differences, run_settings
    from aot_cli.pipeline.runconfig import FINGERPRINT_FORMAT, RunConfig
    from aot_cli.config import to_dict

    cfg = RunConfig()
    identity = {"dtype": "float32", "profile": {"name": "siglip"}}
    current = run_settings(cfg, identity)
    recorded = {k: to_dict(v) for k, v in (("decode", cfg.decode), ("model", cfg.model), ("method", cfg.method),
                                            ("storage", cfg.storage))}
    meta = {"config": json.loads(json.dumps(recorded)), "model": {"dtype": "float32"}, "profile": {"name": "siglip"},
            "config_format": FINGERPRINT_FORMAT}
    assert differences(cached_settings(meta), current) == []

    old = json.loads(json.dumps(meta))
    del old["config_format"]
    del old["config"]["decode"]["seek"]
    old["config"]["method"]["ratio"] = 0.2
    diffs = differences(cached_settings(old), current)
    assert diffs[0].startswith("made by another aot-cli version (configuration format 3 or older -> "
                               f"{FINGERPRINT_FORMAT}")
    assert any(d.startswith("--ratio 0.2 -> ") for d in diffs)
    assert not any("seek" in d for d in diffs)


def test_adding_another_models_videos_to_a_cache_says_so_in_one_note(tiny_siglip_dir, tiny_clip_dir, tmp_path):
    out = tmp_path / "cache"
    common = ["--frames", "4", "--dtype", "fp32", "--decode-workers", "0"]
    assert run(["compress", SAMPLES / "realshort.mp4", "-o", out, "--model", tiny_siglip_dir, *common]).exit_code == 0
    # the same model adds a video without a note
    same = run(["compress", SAMPLES / "bikes.mp4", "-o", out, "--model", tiny_siglip_dir, *common])
    assert same.exit_code == 0 and "another model" not in same.stderr
    other = run(["compress", SAMPLES / "carphone_pristine.mp4", "-o", out, "--model", tiny_clip_dir, *common])
    assert other.exit_code == 0  # allowed: the videos are new; nothing cached is touched
    notes = [line for line in other.stderr.splitlines() if "another model" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {out} also holds 2 video(s) made with another model "
                                                   f"({tiny_siglip_dir})"), other.stderr
    assert "another -o" in notes[0]
    assert len(TokenCache(out)) == 3
    # -q keeps it quiet, as every note
    quiet = run(["compress", SAMPLES / "motion.mov", "-o", out, "--model", tiny_clip_dir, *common, "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
