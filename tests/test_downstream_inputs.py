"""The shared loader `aot_cli.downstream.model_inputs` and what runs on its output: the README's
"Using a cache in LLM runs" snippets run as written (extracted from README.md, with a tiny local
checkpoint in place of the hub one), the loader dispatches on the cache's family and refuses
caches it cannot feed in one line, and batched generation and scoring (left padding) give what one
request at a time gives."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aot_cli.cache import CacheWriter, TokenCache
from aot_cli.cli import main
from aot_cli.downstream import (CONSUMERS, DownstreamError, build_inputs_embeds, generate_texts, model_inputs,
                                score_continuations)
from checkpoints import build_llava_hf, save_tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
HUB_CHECKPOINT = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def code_blocks(section: str, language: str):
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def snippet(tmp_path_factory):
    """The README snippets' working directory (samples/bikes.mp4 copied) after the README's
    `aot compress` command ran there with the tiny checkpoint; carphone added with the same
    configuration for the batching tests."""
    root = tmp_path_factory.mktemp("readme-llm")
    ckpt = save_tiny_tokenizer(build_llava_hf(root / "llava-tiny"))
    (root / "samples").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(ROOT / "samples" / name, root / "samples" / name)
    section = readme_section("Using a cache in LLM runs").split("\n### ")[0]  # the LLaVA part (Qwen: test_downstream_qwen)
    commands = [line for block in code_blocks(section, "bash") for line in block.splitlines() if line.strip()]
    assert len(commands) == 1 and commands[0].startswith("aot compress ") and HUB_CHECKPOINT in commands[0]
    args = shlex.split(commands[0].replace(HUB_CHECKPOINT, str(ckpt)))[1:]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for extra in ([], ["samples/carphone_pristine.mp4"]):
            result = CliRunner().invoke(main, [*args, *extra, "-q"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return {"root": root, "ckpt": ckpt, "python": code_blocks(section, "python")}


@pytest.fixture(scope="module")
def llm(snippet):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(snippet["ckpt"], dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(snippet["ckpt"])


def test_readme_llm_snippets_run_as_written_with_a_tiny_checkpoint(snippet, llm, monkeypatch, capsys):
    model, tokenizer = llm
    assert len(snippet["python"]) == 2 and HUB_CHECKPOINT in snippet["python"][0]
    monkeypatch.chdir(snippet["root"])
    namespace: dict = {}
    exec(compile(snippet["python"][0].replace(HUB_CHECKPOINT, str(snippet["ckpt"])), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    video = TokenCache(snippet["root"] / "llava-cache")["samples/bikes.mp4"]
    assert len(video.tokens) == round(0.1 * 32 * 25) + 1  # the aot compress defaults: ratio 0.1, 32 frames
    with torch.inference_mode():
        embeds, mask = build_inputs_embeds(model, tokenizer, "What happens in this video?", video)
        want = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=32, do_sample=False)
    assert torch.equal(namespace["inputs"]["inputs_embeds"], embeds)
    assert namespace["logits"].shape == (1, embeds.shape[1], model.config.text_config.vocab_size)
    assert printed == tokenizer.decode(want[0], skip_special_tokens=True) and printed
    exec(compile(snippet["python"][1], "README.md", "exec"), namespace)
    batch = namespace["batch"]
    assert sorted(batch["ids"]) == ["samples/bikes.mp4", "samples/carphone_pristine.mp4"]
    assert batch["tokens"].shape[:2] == batch["attention_mask"].shape and batch["tokens"].shape[2] == 48


def test_model_inputs_refuses_what_the_model_cannot_read_in_one_line(snippet, llm, tmp_path):
    model, tokenizer = llm
    video = TokenCache(snippet["root"] / "llava-cache")["samples/bikes.mp4"]
    assert set(model_inputs(model, tokenizer, "what ?", video)) == {"inputs_embeds", "attention_mask"}

    def cached(meta_changes):
        meta = {**video.meta, **meta_changes}
        return {"id": "v.mp4", "tokens": video.tokens, "kind": video.kind, "meta": meta}

    cases = [
        ({"model": {**video.meta["model"], "family": "siglip"}}, "tokens come from a siglip tower, not an LLM's projector"),
        ({"profile": {**video.meta["profile"], "name": "qwen9-vl"}}, "no consumer reads caches of the qwen9-vl profile"),
        ({"newline": "grid"}, "records newline convention 'grid', but llava-onevision places 'one_token'"),
    ]
    for changes, words in cases:
        with pytest.raises(DownstreamError) as err:
            model_inputs(model, tokenizer, "what ?", cached(changes))
        assert words in str(err.value) and "\n" not in str(err.value)

    class OtherModel:  # a checkpoint of another family: refused before any tensor is built
        config = type("Config", (), {"model_type": "qwen2_5_vl", "_name_or_path": "some/qwen"})()

    with pytest.raises(DownstreamError, match=r"made for llava-onevision \(model_type llava_onevision\), but "
                                              r"some/qwen is a 'qwen2_5_vl' model"):
        model_inputs(OtherModel(), tokenizer, "what ?", video)
    assert CONSUMERS["llava-video"].model_class == "LlavaOnevisionForConditionalGeneration"


def test_left_padded_batches_generate_and_score_as_single_requests(snippet, llm):
    """Three prompts of different lengths (two videos, one text-only) in one batch: greedy answers
    and continuation log-probabilities equal those of each prompt alone."""
    from aot_cli.downstream.evaluation import CachedVideoLLM

    llm_ = CachedVideoLLM(str(snippet["ckpt"]), snippet["root"] / "llava-cache", device="cpu", dtype="fp32")
    requests = [("what is in the video ?", str(snippet["root"] / "samples" / "bikes.mp4"), {}),
                ("a bike a car what is the video", "samples/carphone_pristine.mp4", {}),
                ("what ?", None, {})]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(snippet["root"])
        batched = llm_.generate_batch(requests, max_new_tokens=6)
        alone = [llm_.generate(prompt, ref, max_new_tokens=6) for prompt, ref, _ in requests]
        assert len({used.prompt_tokens for _, used in batched}) == 3  # padding was needed
        assert [text for text, _ in batched] == [text for text, _ in alone]
        assert all(text for text, _ in batched)
        scored = llm_.loglikelihood_batch([(p, " a bike", ref, {}) for p, ref, _ in requests])
        single = [llm_.loglikelihood(p, " a bike", ref) for p, ref, _ in requests]
    for (nll, greedy, _), (want_nll, want_greedy, _) in zip(scored, single):
        assert nll == pytest.approx(want_nll, abs=1e-5) and greedy == want_greedy
    # the generic helpers on the loader's output, directly
    model, tokenizer = llm
    video = TokenCache(snippet["root"] / "llava-cache")["samples/bikes.mp4"]
    inputs = model_inputs(model, tokenizer, "what is in the video ?", video)
    with torch.inference_mode():
        texts, ids = generate_texts(model, tokenizer, inputs, max_new_tokens=6)
        (logprobs, greedy), = score_continuations(model, [inputs], [ids[0]])
    assert texts[0] == batched[0][0] and logprobs.shape == ids[0].shape
    assert greedy  # the greedy answer is, token by token, the argmax of the scored forward pass


def test_a_family_without_collate_answers_one_request_at_a_time(snippet, monkeypatch):
    import dataclasses

    from aot_cli.downstream.evaluation import CachedVideoLLM

    monkeypatch.setitem(CONSUMERS, "llava-onevision", dataclasses.replace(CONSUMERS["llava-onevision"], collate=None))
    llm_ = CachedVideoLLM(str(snippet["ckpt"]), snippet["root"] / "llava-cache", device="cpu", dtype="fp32")
    assert not llm_.can_batch
    with pytest.raises(DownstreamError, match="llava-onevision models answer one request at a time"):
        llm_.generate_batch([("what ?", None, {}), ("what is in the video ?", None, {})], max_new_tokens=2)
    assert llm_.generate_batch([("what ?", None, {})], max_new_tokens=2)[0][1].video_id is None


def test_cache_with_an_unknown_tower_family_is_refused_before_a_model_loads(snippet, tmp_path):
    from aot_cli.downstream.evaluation import CachedVideoLLM

    video = TokenCache(snippet["root"] / "llava-cache")["samples/bikes.mp4"]
    with CacheWriter(tmp_path / "plain") as writer:
        writer.add("v.mp4", {"tokens": video.tokens, "kind": video.kind},
                   {**video.meta, "model": {**video.meta["model"], "family": "dinov2"}})
    with pytest.raises(DownstreamError, match="tokens come from a dinov2 tower"):
        CachedVideoLLM(str(tmp_path / "no-checkpoint"), tmp_path / "plain")
    other = tmp_path / "qwen-text"  # a checkpoint of another family: refused before its weights load
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 48}')
    with pytest.raises(DownstreamError, match=r"model_type 'qwen2' is not a llava-onevision checkpoint"):
        CachedVideoLLM(str(other), snippet["root"] / "llava-cache")
