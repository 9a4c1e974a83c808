"""lmms-eval's own CLI (``python -m lmms_eval``, a subprocess) with the aot plugin, offline, on a local
task (a YAML and a JSON of questions over two sample clips) with the tiny random LLaVA-OneVision of
tests/checkpoints.py and its word-level tokenizer.

Checked: the answers and loglikelihoods come from the cached tokens (the plugin's per-request
record names the cache id and the spliced token count, and the same splice run here gives the
same numbers); a video missing from the cache is compressed once with ``on_miss=compress`` (with
the cache's configuration) and found by the next run; a ``--method none --ratio 1.0`` cache gives
the model's own greedy answers and loglikelihoods on pixel values of the same frames; a missing
video with ``on_miss=error`` and a cache of the other LLaVA family stop with one line.

Skipped only when lmms-eval is not installed and this is not CI (CI installs the extra).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from click.testing import CliRunner

from aot_cli.cache import TokenCache
from aot_cli.cli import main
from aot_cli.config import DecodeConfig, ModelConfig
from checkpoints import build_llava_hf, save_tiny_tokenizer

if os.environ.get("CI"):
    import lmms_eval  # noqa: F401 - CI must run these tests: a missing extra fails here
else:
    pytest.importorskip("lmms_eval")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
QUESTION = "what is in the video ?"
CHOICES = ["a bike", "a car"]
NEW_TOKENS = 4
TASKS = {
    "aot_gen": {"output_type": "generate_until", "doc_to_target": "answer",
                "generation_kwargs": {"max_new_tokens": NEW_TOKENS, "do_sample": False},
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]},
    "aot_mc": {"output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "label",
               "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]},
}


def write_task(folder: Path, videos: List[str]) -> Path:
    """Both tasks over one question per video (lmms-eval reads the JSON with `datasets`)."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = [{"video": v, "question": QUESTION, "answer": CHOICES[i % 2], "choices": CHOICES, "label": i % 2}
            for i, v in enumerate(videos)]
    (folder / "questions.json").write_text(json.dumps(docs))
    for name, fields in TASKS.items():
        config = {"task": name, "dataset_path": "json",
                  "dataset_kwargs": {"data_files": {"test": str(folder / "questions.json")}},
                  "test_split": "test", "doc_to_visual": "video", "doc_to_text": "question", **fields}
        (folder / f"{name}.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The checkpoint, the clips (bikes: cached; carphone: not), the working directory of the
    lmms-eval runs, and a compressed cache (ratio 0.1, 8 frames) of bikes made by `aot compress`."""
    root = tmp_path_factory.mktemp("lmms_eval")
    ckpt = save_tiny_tokenizer(build_llava_hf(root / "llava-tiny"))
    (root / "clips").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(SAMPLES / name, root / "clips" / name)
    compress_cli([str(root / "clips" / "bikes.mp4"), "--model", str(ckpt), "--ratio", "0.1", "--frames", "8",
                  "-o", str(root / "cache")])
    return {"root": root, "ckpt": ckpt, "bikes": "clips/bikes.mp4",  # relative to the runs' directory
            "carphone": str(root / "clips" / "carphone_pristine.mp4")}


def compress_cli(args: List[str]) -> None:
    result = CliRunner().invoke(main, ["compress", *args, "--dtype", "fp32", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def lmms_env(setup) -> Dict[str, str]:
    """Offline, the plugin named, a private Hugging Face home (lmms-eval's datasets cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LMMS_EVAL"))}
    env.update(LMMS_EVAL_PLUGINS="aot_cli.lmms_eval", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(setup["root"] / "hf-home"), TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    return env


def run_lmms_eval(setup, model_args: str, tasks: Path, out: Path, model: str = "aot_llava_onevision"):
    env = lmms_env(setup)
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model,
           "--model_args", f"pretrained={setup['ckpt']},device=cpu,dtype=fp32,{model_args}",
           "--include_path", str(tasks), "--tasks", ",".join(TASKS), "--batch_size", "1",
           "--output_path", str(out), "--log_samples"]
    return subprocess.run(cmd, cwd=setup["root"], env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def outputs(out: Path) -> Dict[str, List[dict]]:
    """task -> the logged samples (lmms-eval's own output files), in document order."""
    found = {}
    for name in TASKS:
        files = sorted(out.rglob(f"*_samples_{name}.jsonl"))
        assert len(files) == 1, f"{name}: {files}"
        rows = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
        found[name] = sorted(rows, key=lambda r: r["doc_id"])
    return found


def answers_and_scores(samples: Dict[str, List[dict]]):
    """([generated text per doc], [[(nll, greedy) per choice] per doc]) from lmms-eval's outputs."""
    texts = [row["filtered_resps"][0] for row in samples["aot_gen"]]
    scores = [[(float(r[0]), r[1] in (True, "True")) for r in row["filtered_resps"]] for row in samples["aot_mc"]]
    return texts, scores


def records(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ok_rows(cache: Path, video_id: str) -> int:
    rows = [json.loads(line) for part in (cache / "index").glob("*.jsonl") for line in part.read_text().splitlines()]
    return sum(1 for row in rows if row["id"] == video_id and row["status"] == "ok")


def test_lmms_eval_registers_the_aot_models():
    names = {ep.name: ep for ep in importlib.metadata.entry_points(group="lmms_eval.models")}
    assert {m.model_id for m in names["aot"].load()()} == {"aot_llava_onevision", "aot_llava_video"}
    env = dict(os.environ, LMMS_EVAL_PLUGINS="aot_cli.lmms_eval")
    code = ("from lmms_eval.models import list_available_models, get_model; "
            "print(sorted(m for m in list_available_models() if m.startswith('aot'))); "
            "print(get_model('aot_llava_onevision').__module__)")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["['aot_llava_onevision', 'aot_llava_video']",
                                           "aot_cli.lmms_eval.models.aot_llava_onevision"]


def test_lmms_eval_answers_from_the_cache_and_compresses_a_missing_video_once(setup):
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    from aot_cli.downstream import build_inputs_embeds, generate_answer
    from aot_cli.downstream.llava import continuation_scores

    root, cache_dir = setup["root"], setup["root"] / "cache"
    tasks = write_task(root / "tasks-compress", [setup["bikes"], setup["carphone"]])
    args = f"cache={cache_dir},on_miss=compress,record={root / 'first.jsonl'}"
    first = run_lmms_eval(setup, args, tasks, root / "out-first")
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr[-3000:]
    cache = TokenCache(cache_dir)
    assert len(cache) == 2
    bikes_id = cache.ids()[0]
    log = records(root / "first.jsonl")
    compressed = [line for line in log if line.get("event") == "compressed"]
    assert [line["video"] for line in compressed] == [setup["carphone"]]
    added = cache[compressed[0]["cache_id"]]
    assert added.meta["config_fingerprint"] == cache[bikes_id].meta["config_fingerprint"]
    requests = [line for line in log if "request" in line]
    assert len(requests) == 2 * len(CHOICES) + 2  # two docs: one answer and one score per choice each
    for line in requests:  # every request spliced a cached video, by its cached token count
        want_id = bikes_id if line["video"] == setup["bikes"] else added.id
        assert line["cache_id"] == want_id and line["video_tokens"] == len(cache[want_id].tokens) == 21

    # the same splice, run here on the cached entries, gives lmms-eval's answers and scores
    texts, scores = answers_and_scores(outputs(root / "out-first"))
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(setup["ckpt"], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(setup["ckpt"])
    for doc, vid in enumerate([bikes_id, added.id]):
        with torch.inference_mode():
            embeds, mask = build_inputs_embeds(model, tokenizer, QUESTION, cache[vid])
            want, _ = generate_answer(model, tokenizer, embeds, mask, max_new_tokens=NEW_TOKENS)
            for choice, (nll, greedy) in zip(CHOICES, scores[doc]):
                cont = torch.tensor(tokenizer(" " + choice, add_special_tokens=False)["input_ids"])
                logprobs, want_greedy = continuation_scores(model, embeds, mask, cont)
                assert nll == pytest.approx(-logprobs.mean().item(), abs=1e-5) and greedy == want_greedy
        assert texts[doc] == want

    second = run_lmms_eval(setup, f"cache={cache_dir},on_miss=compress,record={root / 'second.jsonl'}", tasks,
                           root / "out-second")
    assert second.returncode == 0, second.stderr[-3000:]
    log = records(root / "second.jsonl")
    assert not [line for line in log if line.get("event") == "compressed"]  # found this time
    assert {line["cache_id"] for line in log} == {bikes_id, added.id}
    assert ok_rows(cache_dir, added.id) == 1 and len(TokenCache(cache_dir)) == 2
    assert answers_and_scores(outputs(root / "out-second")) == (texts, scores)


def test_lmms_eval_method_none_cache_from_the_task_list_reproduces_the_models_own_results(setup, monkeypatch):
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    from aot_cli.models import load_model
    from aot_cli.video import decode_video

    root = setup["root"]
    clips = [root / "clips" / "bikes.mp4", root / "clips" / "carphone_pristine.mp4"]
    tasks = write_task(root / "tasks-none", [setup["bikes"], setup["carphone"], setup["bikes"]])
    # the documented way to fill a cache before an evaluation: the task's video list, then aot compress --list
    listed = subprocess.run([sys.executable, "-m", "aot_cli.lmms_eval.videos", "--include_path", str(tasks),
                             "--tasks", ",".join(TASKS), "-o", str(root / "videos.txt")], cwd=root,
                            env=lmms_env(setup), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert (root / "videos.txt").read_text().splitlines() == [setup["bikes"], setup["carphone"]]  # each once
    monkeypatch.chdir(root)  # the list holds a path relative to the evaluation's directory
    compress_cli(["--list", "videos.txt", "--model", str(setup["ckpt"]), "--method", "none", "--ratio", "1.0",
                  "--frames", "4", "-o", str(root / "cache-none")])
    done = run_lmms_eval(setup, f"cache={root / 'cache-none'},record={root / 'none.jsonl'}", tasks, root / "out-none")
    assert done.returncode == 0, done.stderr[-3000:]
    texts, scores = answers_and_scores(outputs(root / "out-none"))
    assert all(line["video_tokens"] == 4 * 25 + 1 for line in records(root / "none.jsonl"))

    # the model's own video path: pixel values of the same sampled frames, <video> repeated as the
    # processor repeats it, LlavaOnevisionForConditionalGeneration's generate / forward
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(setup["ckpt"], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(setup["ckpt"])
    adapter = load_model(ModelConfig(model=str(setup["ckpt"]), dtype="fp32"))
    cache = TokenCache(root / "cache-none")
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer(prompt.replace("<video>", "<video>" * (4 * 25 + 1)),
                                  add_special_tokens=False)["input_ids"]])
    for doc, clip in enumerate(clips):
        decoded = decode_video(clip, DecodeConfig(frames=4), target_size=adapter.spec.resized_size)  # as compress reads
        cached = [cache[v] for v in cache.ids() if Path(cache[v].meta["video"]["path"]).name == clip.name][0]
        assert decoded.indices == cached["frame_indices"].tolist()
        pixels = adapter.preprocess(decoded.frames)[None]
        with torch.no_grad():
            out = model.generate(input_ids=ids, pixel_values_videos=pixels, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            assert texts[doc] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
            for choice, (nll, greedy) in zip(CHOICES, scores[doc]):
                cont = torch.tensor([tokenizer(" " + choice, add_special_tokens=False)["input_ids"]])
                logits = model(input_ids=torch.cat([ids, cont], 1), pixel_values_videos=pixels).logits[0]
                scored = logits[ids.shape[1] - 1:-1].log_softmax(-1)
                assert nll == pytest.approx(-scored.gather(1, cont[0, :, None]).mean().item(), abs=1e-4)
                assert greedy == bool((scored.argmax(-1) == cont[0]).all())


def one_error_line(result, model: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{model}: error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def test_lmms_eval_stops_with_one_line_for_a_missing_video_or_another_models_cache(setup, tmp_path):
    root = setup["root"]
    compress_cli([str(root / "clips" / "bikes.mp4"), "--model", str(setup["ckpt"]), "--frames", "4",
                  "-o", str(tmp_path / "cache")])
    absent = str(root / "clips" / "absent.mp4")
    tasks = write_task(tmp_path / "tasks", [setup["bikes"], absent])
    line = one_error_line(run_lmms_eval(setup, f"cache={tmp_path / 'cache'}", tasks, tmp_path / "out"),
                          "aot_llava_onevision")
    assert absent in line and "not in the cache" in line
    line = one_error_line(run_lmms_eval(setup, f"cache={tmp_path / 'cache'}", tasks, tmp_path / "out2",
                                        model="aot_llava_video"), "aot_llava_video")
    assert "llava-onevision" in line and "aot_llava_onevision" in line
    assert len(TokenCache(tmp_path / "cache")) == 1  # nothing added


def test_lmms_eval_model_arguments_are_checked_in_one_line_before_loading(setup, capsys):
    from aot_cli.lmms_eval.models.aot_llava_onevision import AotLlavaOneVision, EvaluationStopped

    base = {"pretrained": str(setup["ckpt"]), "cache": str(setup["root"] / "cache"), "device": "cpu"}
    cases = [({**base, "colour": "red"}, "unknown model argument(s) colour"),
             ({"pretrained": base["pretrained"]}, "needs pretrained=CHECKPOINT and cache=CACHE_DIR"),
             ({**base, "decode_workers": "many"}, "decode_workers=many: must be an integer"),
             ({**base, "max_new_tokens": 0}, "max_new_tokens=0: must be at least 1"),
             ({**base, "on_miss": "maybe"}, "on_miss=maybe: choose one of error, compress"),
             ({**base, "dtype": "fp8"}, "--dtype fp8: unknown dtype")]
    for kwargs, words in cases:
        with pytest.raises(EvaluationStopped) as stop:
            AotLlavaOneVision(**kwargs)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("aot_llava_onevision: error: ") and words in lines[0]
