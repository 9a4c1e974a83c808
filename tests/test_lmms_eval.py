"""lmms-eval's own CLI (``python -m lmms_eval``, a subprocess) with the aot plugin, offline, on local
tasks (YAMLs and JSONs of questions over sample clips) with the tiny random LLaVA-OneVision of
tests/checkpoints.py and its word-level tokenizer.

Checked, on the installed lmms-eval (CI: the current line, 0.7.x; by hand also 0.6.1):
- the models are registered (entry point and ``LMMS_EVAL_PLUGINS``);
- the README's evaluation route runs as written (its commands, extracted from README.md, with the
  tiny checkpoint in place of the hub one): the task's video list, ``aot compress --list``, then
  lmms-eval with ``--batch_size 4``; the batched answers equal the loader's one-request answers and
  the provenance file beside lmms-eval's results records the cache's fingerprint, method, ratio,
  frames, decoder, versions and the checkpoint's identity;
- a video missing from the cache is compressed once with ``on_miss=compress`` (with the cache's
  configuration) and found by the next run;
- a ``--method none --ratio 1.0`` cache gives the model's own greedy answers on pixel values of the
  same frames, also in a batch;
- a loglikelihood (multiple-choice) task: one error line on lmms-eval 0.7.x (whose evaluator turns
  the results into strings), the splice's scores on 0.6.x;
- a missing video with ``on_miss=error``, another family's cache and bad model arguments stop with
  one line;
- the video lister's unknown-task and unloadable-dataset errors are one line saying what to do.

Skipped only when lmms-eval is not installed and this is not CI (CI installs the extra).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shlex
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

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
HUB_CHECKPOINT = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
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
    """Offline, a private Hugging Face home (lmms-eval's datasets cache); the models are found
    through aot's entry point (no LMMS_EVAL_PLUGINS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LMMS_EVAL"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(setup["root"] / "hf-home"),
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    return env


def run(setup, args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=lmms_env(setup), capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)


def run_lmms_eval(setup, model_args: str, tasks: Path, out: Path, model: str = "aot_llava_onevision",
                  names=("aot_gen",), batch_size: int = 1, pretrained=None):
    return run(setup, ["-m", "lmms_eval", "--model", model,
                       "--model_args", f"pretrained={pretrained or setup['ckpt']},device=cpu,dtype=fp32,{model_args}",
                       "--include_path", str(tasks), "--tasks", ",".join(names), "--batch_size", str(batch_size),
                       "--output_path", str(out), "--log_samples"], setup["root"])


def logged(out: Path, task: str) -> List[dict]:
    """The logged samples of ``task`` (lmms-eval's own output file), in document order."""
    files = sorted(out.rglob(f"*_samples_{task}.jsonl"))
    assert len(files) == 1, f"{task}: {files}"
    rows = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def answers(out: Path, task: str = "aot_gen") -> List[str]:
    return [row["filtered_resps"][0] if isinstance(row["filtered_resps"], list) else row["filtered_resps"]
            for row in logged(out, task)]


def records(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ok_rows(cache: Path, video_id: str) -> int:
    rows = [json.loads(line) for part in (cache / "index").glob("*.jsonl") for line in part.read_text().splitlines()]
    return sum(1 for row in rows if row["id"] == video_id and row["status"] == "ok")


def one_error_line(result, model: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{model}: error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def loaded_llm(ckpt: Path):
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(ckpt)


def test_lmms_eval_registers_the_aot_models():
    from aot_cli.lmms_eval.models import MODELS

    names = {ep.name: ep for ep in importlib.metadata.entry_points(group="lmms_eval.models")}
    assert {m.model_id for m in names["aot"].load()()} == set(MODELS) >= {
        "aot_llava_onevision", "aot_llava_video", "aot_qwen2_5_vl", "aot_qwen3_vl", "aot_qwen3_5"}
    code = ("from lmms_eval.models import list_available_models, get_model; "
            "print(sorted(m for m in list_available_models() if m.startswith('aot'))); "
            "print([get_model(m).__module__ + '.' + get_model(m).__name__ for m in sorted(list_available_models()) "
            "if m.startswith('aot')])")
    for plugins in (None, "aot_cli.lmms_eval"):  # the entry point alone, and the legacy variable
        env = {k: v for k, v in os.environ.items() if k != "LMMS_EVAL_PLUGINS"}
        env.update({"LMMS_EVAL_PLUGINS": plugins} if plugins else {})
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-2000:]
        classes = [f"aot_cli.lmms_eval.models.{name}.{MODELS[name][0]}" for name in sorted(MODELS)]
        assert done.stdout.split("\n")[:2] == [str(sorted(MODELS)), str(classes)]
    if os.environ.get("CI"):  # CI tests the current lmms-eval line, which the extra resolves to
        version = tuple(int(p) for p in importlib.metadata.version("lmms_eval").split(".")[:3])
        assert version >= (0, 7, 3), version


def readme_route() -> List[List[str]]:
    """The commands of the README's evaluation route (between its test markers), as argv lists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("<!-- test:lmms-eval-route -->"):text.index("<!-- /test:lmms-eval-route -->")]
    commands = []
    for code in re.findall(r"```bash\n(.*?)```", block, flags=re.S):
        commands += [shlex.split(line) for line in code.replace("\\\n", " ").splitlines() if line.strip()]
    return commands


def test_readme_evaluation_route_runs_as_written_batched_and_records_its_provenance(setup, monkeypatch):
    """README: list the sample task's videos, compress them, evaluate from the cache (batch size 4)."""
    from aot_cli import __version__
    from aot_cli.downstream import generate_texts, model_inputs
    from aot_cli.models.source import checkpoint_identity, resolve_source

    work = setup["root"] / "readme"
    shutil.copytree(SAMPLES / "lmms-eval", work / "samples" / "lmms-eval")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(SAMPLES / name, work / "samples" / name)
    commands = [[str(setup["ckpt"]) if a == HUB_CHECKPOINT else a.replace(f"={HUB_CHECKPOINT},", f"={setup['ckpt']},")
                 for a in argv] for argv in readme_route()]
    assert [argv[:3] for argv in commands] == [["python", "-m", "aot_cli.lmms_eval.videos"], ["aot", "compress", "--list"],
                                               ["python", "-m", "lmms_eval"]]
    assert all(HUB_CHECKPOINT not in " ".join(argv) for argv in commands)  # substituted everywhere it was named
    listed = run(setup, commands[0][1:], work)
    assert listed.returncode == 0, listed.stderr[-3000:]
    questions = json.loads((work / "samples" / "lmms-eval" / "aot_samples.json").read_text())
    assert (work / "videos.txt").read_text().splitlines() == [q["video"] for q in questions]
    monkeypatch.chdir(work)
    compress_cli(commands[1][2:])
    evaluation = commands[2][1:]
    at = evaluation.index("--model_args") + 1
    evaluation[at] += f",record={work / 'record.jsonl'}"  # evidence of the batches
    done = run(setup, evaluation, work)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]

    # the batched answers are the loader's answers to each question alone
    cache = TokenCache(work / "eval-cache")
    log = records(work / "record.jsonl")
    assert [line["batch"] for line in log] == [2, 2] and [line["cache_id"] for line in log] == cache.ids()
    model, tokenizer = loaded_llm(setup["ckpt"])
    for question, got in zip(questions, answers(work / "results", "aot_samples")):
        with torch.inference_mode():
            inputs = model_inputs(model, tokenizer, question["question"], cache[question["video"]])
            (want,), _ = generate_texts(model, tokenizer, inputs, max_new_tokens=16)
        assert got == want.split("\n\n")[0] and got

    # the provenance file beside lmms-eval's results
    results = list((work / "results").rglob("*_results.json"))
    found = list((work / "results").rglob("*_aot_provenance.json"))
    assert len(results) == 1 and len(found) == 1 and found[0].parent == results[0].parent
    record = json.loads(found[0].read_text())
    metas = [cache[v].meta for v in cache.ids()]
    assert record["aot_version"] == __version__
    assert record["lmms_eval_version"] == importlib.metadata.version("lmms_eval")
    lmms = record["lmms_eval"]
    assert lmms["model"] == "aot_llava_onevision" and lmms["tasks"] == "aot_samples" and lmms["batch_size"] == 4
    assert lmms["model_args"] == json.loads(results[0].read_text())["config"]["model_args"]
    identity = checkpoint_identity(resolve_source(str(setup["ckpt"])))
    digest = hashlib.sha256(json.dumps(identity["files"], sort_keys=True).encode()).hexdigest()
    assert record["checkpoint"]["identity"] == {"source": "local", "files": len(identity["files"]), "sha256": digest}
    assert record["checkpoint"]["model_type"] == "llava_onevision" and record["checkpoint"]["dtype"] == "float32"
    assert record["cache"]["path"] == str((work / "eval-cache").resolve()) and record["cache"]["videos_read"] == 2
    assert record["config_fingerprints"] == [metas[0]["config_fingerprint"]]
    (group,) = record["configurations"]
    sampling = metas[0]["sampling"]
    assert group["videos"] == 2 and (group["method"], group["ratio"], group["achieved_ratios"]) == ("aot", 0.1, [0.1])
    assert group["frames"] == [32] and group["decoders"] == [f"{sampling['decoder']} ({sampling['read']})"]
    assert group["config"] == metas[0]["config"] and group["aot_versions"] == [__version__]
    assert record["requests"] == {"generate_until": 2, "video_tokens_mean": float(len(cache[cache.ids()[0]].tokens))}


def test_lmms_eval_compresses_a_missing_video_once_and_answers_from_the_cache(setup):
    from aot_cli.downstream import generate_texts, model_inputs

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
    assert [(line["cache_id"], line["video_tokens"]) for line in requests] == [(bikes_id, 21), (added.id, 21)]
    provenance = json.loads(next((root / "out-first").rglob("*_aot_provenance.json")).read_text())
    assert provenance["cache"]["compressed_during_run"] == [added.id]

    # the loader run here on the cached entries gives lmms-eval's answers
    texts = answers(root / "out-first")
    model, tokenizer = loaded_llm(setup["ckpt"])
    for doc, vid in enumerate([bikes_id, added.id]):
        with torch.inference_mode():
            (want,), _ = generate_texts(model, tokenizer, model_inputs(model, tokenizer, QUESTION, cache[vid]),
                                        max_new_tokens=NEW_TOKENS)
        assert texts[doc] == want

    second = run_lmms_eval(setup, f"cache={cache_dir},on_miss=compress,record={root / 'second.jsonl'}", tasks,
                           root / "out-second")
    assert second.returncode == 0, second.stderr[-3000:]
    log = records(root / "second.jsonl")
    assert not [line for line in log if line.get("event") == "compressed"]  # found this time
    assert {line["cache_id"] for line in log} == {bikes_id, added.id}
    assert ok_rows(cache_dir, added.id) == 1 and len(TokenCache(cache_dir)) == 2
    assert answers(root / "out-second") == texts


def test_lmms_eval_method_none_cache_gives_the_models_own_answers_in_a_batch(setup, monkeypatch):
    from aot_cli.models import load_model
    from aot_cli.video import decode_video

    root = setup["root"]
    clips = [root / "clips" / "bikes.mp4", root / "clips" / "carphone_pristine.mp4"]
    tasks = write_task(root / "tasks-none", [setup["bikes"], setup["carphone"], setup["bikes"]])
    monkeypatch.chdir(root)
    compress_cli([setup["bikes"], setup["carphone"], "--model", str(setup["ckpt"]), "--method", "none",
                  "--ratio", "1.0", "--frames", "4", "-o", str(root / "cache-none")])
    done = run_lmms_eval(setup, f"cache={root / 'cache-none'},record={root / 'none.jsonl'},"
                         f"provenance={root / 'none-provenance.json'}", tasks, root / "out-none", batch_size=3)
    assert done.returncode == 0, done.stderr[-3000:]
    provenance = json.loads((root / "none-provenance.json").read_text())  # provenance= instead of beside the results
    assert not list((root / "out-none").rglob("*_aot_provenance.json"))
    assert provenance["requests"]["generate_until"] == 3 and provenance["cache"]["videos_read"] == 2
    assert [(g["method"], g["ratio"], g["achieved_ratios"], g["frames"]) for g in provenance["configurations"]] == [
        ("none", None, [1.0], [4])]
    texts = answers(root / "out-none")
    assert [(line["video_tokens"], line["batch"]) for line in records(root / "none.jsonl")] == [(4 * 25 + 1, 3)] * 3

    # the model's own video path: pixel values of the same sampled frames, <video> repeated as the
    # processor repeats it, LlavaOnevisionForConditionalGeneration.generate, one video at a time
    model, tokenizer = loaded_llm(setup["ckpt"])
    adapter = load_model(ModelConfig(model=str(setup["ckpt"]), dtype="fp32"))
    cache = TokenCache(root / "cache-none")
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer(prompt.replace("<video>", "<video>" * (4 * 25 + 1)),
                                  add_special_tokens=False)["input_ids"]])
    for doc, clip in enumerate(clips + clips[:1]):
        decoded = decode_video(clip, DecodeConfig(frames=4), target_size=adapter.spec.resized_size)  # as compress reads
        cached = [cache[v] for v in cache.ids() if Path(cache[v].meta["video"]["path"]).name == clip.name][0]
        assert decoded.indices == cached["frame_indices"].tolist()
        pixels = adapter.preprocess(decoded.frames)[None]
        with torch.no_grad():
            out = model.generate(input_ids=ids, pixel_values_videos=pixels, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert texts[doc] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


QWEN_MODELS = {"qwen2.5-vl": "aot_qwen2_5_vl", "qwen3-vl": "aot_qwen3_vl", "qwen3.5": "aot_qwen3_5"}


def test_lmms_eval_qwen_models_give_the_models_own_answers_from_method_none_caches(setup, qwen_caches, tmp_path):
    """One lmms-eval CLI run (a ``--config`` list, one entry per family) of `aot_qwen2_5_vl`,
    `aot_qwen3_vl` and `aot_qwen3_5` on caches `aot compress` made with ``--method none --ratio
    1.0`` (bikes at 8 frames, carphone at 7), three documents in batches of two: each answer is the
    Qwen model's own greedy answer on its processor's prompt and pixel values of the same sampled
    frames, and each model's provenance file lands beside its results."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from qwen_caches import own_inputs

    every = {family: qwen_caches(family) for family in QWEN_MODELS}
    clips = [every["qwen2.5-vl"].clips / name for name in ("bikes.mp4", "carphone_pristine.mp4")]
    tasks = write_task(tmp_path / "tasks", [str(c) for c in clips + clips[:1]])
    runs = [{"model": QWEN_MODELS[family], "tasks": "aot_gen", "include_path": str(tasks), "batch_size": 2,
             "model_args": f"pretrained={caches.checkpoint},cache={caches.full},device=cpu,dtype=fp32,"
                           f"record={tmp_path / family}.jsonl",
             "output_path": str(tmp_path / "out" / family), "log_samples": True} for family, caches in every.items()]
    (tmp_path / "runs.yaml").write_text(json.dumps(runs))  # JSON is YAML
    done = run(setup, ["-m", "lmms_eval", "--config", str(tmp_path / "runs.yaml")], setup["root"])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]

    for family, caches in every.items():
        log = records(tmp_path / f"{family}.jsonl")
        assert [(line["cache_id"], line["batch"]) for line in log] == [
            ("clips/bikes.mp4", 2), ("clips/carphone_pristine.mp4", 2), ("clips/bikes.mp4", 1)]
        out = tmp_path / "out" / family
        texts = answers(out)
        model = AutoModelForImageTextToText.from_pretrained(caches.checkpoint, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(caches.checkpoint)
        cache = TokenCache(caches.full)
        for doc, clip in enumerate(clips + clips[:1]):
            video = cache[f"clips/{clip.name}"]
            own = own_inputs(family, model, tokenizer, QUESTION, video, clip, caches.checkpoint)
            with torch.no_grad():
                ids = model.generate(**own, max_new_tokens=NEW_TOKENS, do_sample=False)[0, own["input_ids"].shape[1]:]
            want = tokenizer.decode(ids, skip_special_tokens=True).strip()
            assert texts[doc] == want.split("\n\n")[0] and texts[doc], (family, doc)

        (found,) = out.rglob("*_aot_provenance.json")
        (results,) = out.rglob("*_results.json")
        record = json.loads(found.read_text())
        assert found.parent == results.parent and record["lmms_eval"]["model"] == QWEN_MODELS[family]
        assert record["lmms_eval"]["batch_size"] == 2 and record["cache"]["family"] == family
        assert record["checkpoint"]["class"].endswith("ForConditionalGeneration")
        fingerprints = {cache[v].meta["config_fingerprint"] for v in cache.ids()}
        assert sorted(record["config_fingerprints"]) == sorted(fingerprints)
        assert sorted(g["frames"] for g in record["configurations"]) == [[7], [8]]
        assert {(g["method"], tuple(g["achieved_ratios"])) for g in record["configurations"]} == {("none", (1.0,))}
        assert record["requests"]["generate_until"] == 3


def test_lmms_eval_models_refuse_a_cache_of_another_family_in_one_line(setup, qwen_caches, capsys):
    """A LLaVA-OneVision cache given to a Qwen model and a Qwen cache given to the LLaVA model: one
    line naming the model that reads it, before either model loads."""
    from aot_cli.lmms_eval.models.aot_llava_onevision import AotLlavaOneVision
    from aot_cli.lmms_eval.models.aot_qwen2_5_vl import AotQwen2_5_VL
    from aot_cli.lmms_eval.models.aot_qwen3_vl import AotQwen3VL
    from aot_cli.lmms_eval.models.base import EvaluationStopped

    qwen3 = qwen_caches("qwen3-vl")
    cases = [(AotQwen3VL, qwen3.checkpoint, setup["root"] / "cache", "aot_qwen3_vl",
              "made with the llava-onevision profile but this model reads qwen3-vl caches (use aot_llava_onevision"),
             (AotLlavaOneVision, setup["ckpt"], qwen3.pruned, "aot_llava_onevision",
              "made with the qwen3-vl profile but this model reads llava-onevision caches (use aot_qwen3_vl"),
             (AotQwen2_5_VL, qwen_caches("qwen2.5-vl").checkpoint, qwen3.pruned, "aot_qwen2_5_vl",
              "made with the qwen3-vl profile but this model reads qwen2.5-vl caches (use aot_qwen3_vl"),
             (AotQwen3VL, setup["ckpt"], qwen3.pruned, "aot_qwen3_vl",
              "model_type 'llava_onevision' is not a qwen3-vl checkpoint")]
    for cls, pretrained, cache, name, words in cases:
        with pytest.raises(EvaluationStopped) as stop:
            cls(pretrained=str(pretrained), cache=str(cache), device="cpu", dtype="fp32")
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and line.startswith(f"{name}: error: ") and words in line, line


def test_lmms_eval_loglikelihood_task_is_scored_on_0_6_and_refused_in_one_line_on_0_7(setup):
    from aot_cli.downstream import continuation_scores
    from aot_cli.downstream.llava import build_inputs_embeds
    from aot_cli.lmms_eval.models.base import loglikelihood_problem

    root = setup["root"]
    tasks = write_task(root / "tasks-mc", [setup["bikes"]])
    done = run_lmms_eval(setup, f"cache={root / 'cache'}", tasks, root / "out-mc", names=("aot_mc",), batch_size=2)
    version = importlib.metadata.version("lmms_eval")
    if loglikelihood_problem() is not None:  # lmms-eval 0.7.x: never a wrong score
        assert version.startswith("0.7.")
        line = one_error_line(done, "aot_llava_onevision")
        for words in ("task(s) aot_mc ask for loglikelihood scores", f"lmms-eval {version}",
                      "unwrap_generation_output in lmms_eval/evaluator.py", "lmms-eval>=0.6,<0.7"):
            assert words in line, line
        assert not list((root / "out-mc").rglob("*_results.json"))
        return
    assert version.startswith("0.6."), version  # lmms-eval 0.6.x keeps the scores
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (row,) = logged(root / "out-mc", "aot_mc")
    scores = [(float(r[0]), r[1] in (True, "True")) for r in row["filtered_resps"]]
    model, tokenizer = loaded_llm(setup["ckpt"])
    cache = TokenCache(root / "cache")
    with torch.inference_mode():
        embeds, mask = build_inputs_embeds(model, tokenizer, QUESTION, cache[cache.ids()[0]])
        for choice, (nll, greedy) in zip(CHOICES, scores):
            cont = torch.tensor(tokenizer(" " + choice, add_special_tokens=False)["input_ids"])
            logprobs, want_greedy = continuation_scores(model, embeds, mask, cont)
            assert nll == pytest.approx(-logprobs.mean().item(), abs=1e-5) and greedy == want_greedy


def test_lmms_eval_stops_with_one_line_for_a_missing_video(setup, tmp_path):
    root = setup["root"]
    absent = str(root / "clips" / "absent.mp4")
    tasks = write_task(tmp_path / "tasks", [setup["bikes"], absent])
    before = len(TokenCache(root / "cache"))
    line = one_error_line(run_lmms_eval(setup, f"cache={root / 'cache'}", tasks, tmp_path / "out"),
                          "aot_llava_onevision")
    assert absent in line and "not in the cache" in line
    assert len(TokenCache(root / "cache")) == before  # nothing added


def test_lmms_eval_model_arguments_are_checked_in_one_line_before_loading(setup, capsys, monkeypatch):
    import dataclasses

    from aot_cli.downstream.inputs import CONSUMERS
    from aot_cli.lmms_eval.models.aot_llava_onevision import AotLlavaOneVision
    from aot_cli.lmms_eval.models.aot_llava_video import AotLlavaVideo
    from aot_cli.lmms_eval.models.base import EvaluationStopped

    missing = str(setup["root"] / "no-checkpoint")  # never loaded: every case stops before
    blocked = setup["root"] / "a-file"
    blocked.write_text("not a directory")
    base = {"pretrained": missing, "cache": str(setup["root"] / "cache"), "device": "cpu"}
    cases = [({**base, "colour": "red"}, "unknown model argument(s) colour"),
             ({"pretrained": base["pretrained"]}, "needs pretrained=CHECKPOINT and cache=CACHE_DIR"),
             ({**base, "decode_workers": "many"}, "decode_workers=many: must be an integer"),
             ({**base, "max_new_tokens": 0}, "max_new_tokens=0: must be an integer of at least 1"),
             ({**base, "batch_size": "auto"}, "--batch_size auto: give a number of at least 1"),
             ({**base, "batch_size": "0"}, "--batch_size 0: give a number"),
             ({**base, "on_miss": "maybe"}, "on_miss=maybe: choose one of error, compress"),
             ({**base, "dtype": "fp8"}, "--dtype fp8: unknown dtype"),
             ({**base, "provenance": str(blocked / "p.json")}, "cannot write the provenance file there")]
    for kwargs, words in cases:
        with pytest.raises(EvaluationStopped) as stop:
            AotLlavaOneVision(**kwargs)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("aot_llava_onevision: error: ") and words in lines[0]
    with pytest.raises(EvaluationStopped):  # a LLaVA-OneVision cache given to the LLaVA-Video model
        AotLlavaVideo(**base)
    line = capsys.readouterr().err.strip()
    assert line.startswith("aot_llava_video: error: ") and "\n" not in line
    assert "made with the llava-onevision profile" in line and "use aot_llava_onevision" in line
    # a family whose inputs cannot be batched refuses --batch_size > 1 instead of ignoring it
    monkeypatch.setitem(CONSUMERS, "llava-onevision", dataclasses.replace(CONSUMERS["llava-onevision"], collate=None))
    with pytest.raises(EvaluationStopped):
        AotLlavaOneVision(**base, batch_size=2)
    assert "--batch_size 2: llava-onevision models answer one request at a time" in capsys.readouterr().err


def test_video_lister_says_where_tasks_come_from_in_one_line(capsys, tmp_path):
    from aot_cli.lmms_eval.videos import main as list_videos, ships_tasks

    assert list_videos(["--tasks", "no_such_task"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("aot_cli.lmms_eval.videos: error: unknown lmms-eval task(s): no_such_task; ")
    version = importlib.metadata.version("lmms_eval")
    if ships_tasks():  # 0.7.x wheels carry every task
        assert version.startswith("0.7.") and "lmms-eval tasks list" in line
    else:  # 0.6.x wheels carry none
        assert "install lmms-eval>=0.7.3" in line and "--include_path" in line
    # a task whose documents cannot be loaded: one line naming it and its dataset, no traceback
    folder = tmp_path / "broken"
    folder.mkdir()
    config = {"task": "aot_broken", "dataset_path": "json", "test_split": "test", "output_type": "generate_until",
              "dataset_kwargs": {"data_files": {"test": str(folder / "missing.json")}},
              "doc_to_visual": "video", "doc_to_text": "question", "doc_to_target": "answer"}
    (folder / "aot_broken.yaml").write_text(json.dumps(config))
    assert list_videos(["--include_path", str(folder), "--tasks", "aot_broken"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("aot_cli.lmms_eval.videos: error: task aot_broken (dataset json): lmms-eval cannot load "
                           "its documents (") and "--include_path" in line
