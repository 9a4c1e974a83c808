"""Qwen2.5-VL / Qwen3-VL / Qwen3.5 caches written by `aot compress` (tests/qwen_caches.py: two
sample clips, tiny random checkpoints) fed to the whole model through ``model_inputs``.

With ``--method none --ratio 1.0`` the model must give what it gives on its own: its forward on the
processor's prompt with pixel values of the same sampled frames (its own tower, its own positions).
At ``--ratio 0.1`` the prompt holds exactly the budget's video pads, every kept token and all the
text sit at their uncompressed positions, and ``generate`` continues by +1 as an explicit greedy
loop does. Also: DeepStack rows at the kept positions, two tokens at one cell, batches and text-only
prompts, refusals, ``CacheDataset`` on a cache directory, ``aot ask``, and the docs' example."""
from __future__ import annotations

import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aot_cli.cache import TokenCache
from aot_cli.cli import main
from aot_cli.downstream import CONSUMERS, DownstreamError, generate_texts, model_inputs
from aot_cli.downstream.qwen import QWEN_TENSORS, patch_timestamps
from qwen_caches import (CHECKPOINT_FIXTURES, FAMILIES, ROOT, clip_of, compress, greedy_loop, kept_count, own_inputs,
                         own_positions, processor_prompt)

QUESTION = "what is in the video ?"
NEW = 6


@pytest.fixture(scope="module")
def llms(request):
    """family -> (model, tokenizer), loaded from the tiny checkpoint as a user loads it."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    out = {}
    for family in FAMILIES:
        path = request.getfixturevalue(CHECKPOINT_FIXTURES[family])
        out[family] = (AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval(),
                       AutoTokenizer.from_pretrained(path))
    return out


def videos(path: Path):
    cache = TokenCache(path)
    return [cache[vid] for vid in sorted(cache.ids())]


@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_one_cache_gives_the_models_own_logits_and_greedy_answer(family, llms, qwen_caches):
    """bikes at 8 frames (25 fps) and carphone at 7 frames (29.97 fps, non-square pixels): the
    processor's odd-count, timestamp and ``second_per_grid_ts`` rules all matter."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    model, tokenizer = llms[family]
    caches = qwen_caches(family)
    for video in videos(caches.full):
        t, h, w = video["video_grid_thw"].tolist()
        assert len(video.tokens) == t * (h // 2) * (w // 2)
        inputs = model_inputs(model, tokenizer, QUESTION, video)
        own = own_inputs(family, model, tokenizer, QUESTION, video, clip_of(caches, video), caches.checkpoint)
        assert torch.equal(inputs["input_ids"], own["input_ids"])  # the processor's prompt, timestamps included
        assert torch.equal(inputs["position_ids"], own_positions(model, own))
        if family != "qwen2.5-vl":
            indices = video["frame_indices"].tolist()
            fps = video.meta["video"]["fps"]
            assert patch_timestamps(indices, fps) == Qwen3VLProcessor._calculate_timestamps(None, indices, fps, 2)
        with torch.no_grad():
            want = model(**own).logits
            got = model(**inputs).logits
            assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
            theirs = model.generate(**own, max_new_tokens=NEW, do_sample=False)
            ours = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_cache_keeps_uncompressed_positions_and_generation_continues_by_one(family, llms, qwen_caches):
    from transformers.video_utils import VideoMetadata

    model, tokenizer = llms[family]
    pad = model.config.video_token_id
    for video in videos(qwen_caches(family).pruned):
        t, h, w = video["video_grid_thw"].tolist()
        cells = (h // 2) * (w // 2)
        inputs = model_inputs(model, tokenizer, QUESTION, video)
        ids, pos = inputs["input_ids"][0], inputs["position_ids"][:, 0]
        at_video = ids == pad
        assert int(at_video.sum()) == len(video.tokens) == kept_count(0.1, t, cells) == video.meta["counts"]["total"]
        meta = video.meta
        metadata = VideoMetadata(total_num_frames=meta["video"]["num_frames"], fps=meta["video"]["fps"],
                                 frames_indices=video["frame_indices"].tolist())
        full_ids = processor_prompt(family, tokenizer, QUESTION, (t, h, w), metadata)
        rope = {"mm_token_type_ids": (full_ids == pad).int() * 2, "video_grid_thw": torch.tensor([[t, h, w]])}
        if family == "qwen2.5-vl":
            sampled = len(video["frame_indices"]) / meta["video"]["num_frames"] * meta["video"]["fps"]
            rope["second_per_grid_ts"] = torch.tensor([2 / sampled])
        full_pos = own_positions(model, {"input_ids": full_ids, **rope})[:, 0]
        slots = torch.nonzero(full_ids[0] == pad).flatten()
        # every text token stays, in order, at its uncompressed position (the closing text included)
        text_slots = torch.nonzero(full_ids[0] != pad).flatten()
        assert torch.equal(ids[~at_video], full_ids[0, text_slots])
        assert torch.equal(pos[:, ~at_video], full_pos[:, text_slots])
        closing = full_ids.shape[1] - 1 - int(slots[-1])
        assert closing > 3 and torch.equal(pos[:, -closing:], full_pos[:, -closing:])
        # each kept token at the position of its (temporal patch, cell)
        cell = (video["frame"].long() * cells + video["index"].long())
        assert torch.equal(pos[:, at_video], full_pos[:, slots[cell]])
        assert torch.equal(inputs["mm_encoder_outputs"]["video"].pooler_output[0], video.tokens)
        if family != "qwen2.5-vl":  # one block per temporal patch holding that patch's kept pads
            start, end = model.config.vision_start_token_id, model.config.vision_end_token_id
            blocks = [ids[a + 1:b] for a, b in zip(torch.nonzero(ids == start).flatten(),
                                                   torch.nonzero(ids == end).flatten())]
            per_patch = torch.bincount(video["frame"].long(), minlength=t).tolist()
            assert [int((b == pad).sum()) for b in blocks] == per_patch
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)[0, ids.numel():]
        assert torch.equal(generated, greedy_loop(model, inputs, NEW))


def test_deepstack_rows_are_added_at_the_kept_video_positions(llms, qwen_caches):
    """The cached DeepStack rows reach the decoder layers at the kept pads: the logits equal the
    language model run by hand with those rows at those positions (and differ without them)."""
    model, tokenizer = llms["qwen3-vl"]
    video = videos(qwen_caches("qwen3-vl").pruned)[0]
    inputs = model_inputs(model, tokenizer, QUESTION, video)
    rows = inputs["mm_encoder_outputs"]["video"].deepstack_features
    depth = len(model.config.vision_config.deepstack_visual_indexes)
    assert video["deepstack"].shape == (depth, len(video.tokens), model.config.text_config.hidden_size)
    assert len(rows) == depth and all(torch.equal(r[0], video["deepstack"][i]) for i, r in enumerate(rows))
    ids = inputs["input_ids"]
    mask = ids == model.config.video_token_id
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        embeds[mask] = video.tokens
        lm = model.model.language_model
        common = dict(inputs_embeds=embeds, position_ids=inputs["position_ids"], attention_mask=torch.ones_like(ids))
        by_hand = model.lm_head(lm(**common, visual_pos_masks=mask,
                                   deepstack_visual_embeds=list(video["deepstack"])).last_hidden_state)
        without = model.lm_head(lm(**common).last_hidden_state)
        got = model(**inputs).logits
    assert torch.allclose(got, by_hand, atol=1e-5, rtol=0)
    assert (got - without).abs().max() > 1e-3


def test_keyframe_twice_puts_two_tokens_at_one_cell(llms, qwen_caches, tmp_path):
    """``--keyframe-twice`` stores a keyframe's raw token and its merged anchor at one cell: both
    pads sit at that cell's uncompressed position."""
    caches = qwen_caches("qwen2.5-vl")
    model, tokenizer = llms["qwen2.5-vl"]
    compress(["clips/bikes.mp4", "--model", caches.checkpoint, "--ratio", "0.1", "--frames", "8", "--keyframe-twice",
              "-o", tmp_path / "twice"], caches.root)
    (video,) = videos(tmp_path / "twice")
    cells = video["frame"].long() * 10_000 + video["index"].long()
    shared = cells[1:] == cells[:-1]
    assert bool(shared.any())  # a keyframe's cells hold two tokens
    inputs = model_inputs(model, tokenizer, QUESTION, video)
    pos = inputs["position_ids"][:, 0, inputs["input_ids"][0] == model.config.video_token_id]
    assert pos.shape[1] == len(video.tokens)
    assert torch.equal(pos[:, 1:][:, shared], pos[:, :-1][:, shared])
    assert bool((pos[:, 1:][:, ~shared] != pos[:, :-1][:, ~shared]).any(0).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_batches_with_text_prompts_answer_and_score_as_one_request_does(family, qwen_caches):
    """Three prompts of different lengths (two videos, one text-only) as one left-padded batch:
    the greedy answers and continuation scores equal those of each prompt alone."""
    from aot_cli.downstream.evaluation import CachedVideoLLM

    caches = qwen_caches(family)
    llm = CachedVideoLLM(str(caches.checkpoint), caches.pruned, family=family, device="cpu", dtype="fp32")
    assert llm.can_batch and CONSUMERS[family].model_class == "AutoModelForImageTextToText"
    requests = [(QUESTION, str(caches.clips / "bikes.mp4"), {}),
                ("a bike a car what is the long question about this video",
                 str(caches.clips / "carphone_pristine.mp4"), {}),
                ("what ?", None, {})]
    batched = llm.generate_batch(requests, max_new_tokens=NEW)
    alone = [llm.generate(prompt, ref, max_new_tokens=NEW) for prompt, ref, _ in requests]
    assert len({used.prompt_tokens for _, used in batched}) == 3  # padding was needed
    assert [text for text, _ in batched] == [text for text, _ in alone] and all(text for text, _ in batched)
    assert [used.video_id for _, used in batched] == ["clips/bikes.mp4", "clips/carphone_pristine.mp4", None]
    scored = llm.loglikelihood_batch([(p, " a bike", ref, {}) for p, ref, _ in requests])
    single = [llm.loglikelihood(p, " a bike", ref) for p, ref, _ in requests]
    for (nll, greedy, _), (want_nll, want_greedy, _) in zip(scored, single):
        assert nll == pytest.approx(want_nll, abs=1e-5) and greedy == want_greedy
    llm.close()


def test_a_missing_video_is_compressed_with_the_caches_configuration(llms, qwen_caches, tmp_path):
    """``on_miss="compress"`` (the lmms-eval models' ``on_miss=compress``) on a Qwen cache: the new
    video gets the cached videos' configuration (same fingerprint, ratio 0.1 of its own grid) and
    is answered from the cache."""
    from aot_cli.downstream.evaluation import CachedVideoLLM

    caches = qwen_caches("qwen3-vl")
    cache_dir = Path(shutil.copytree(caches.pruned, tmp_path / "cache"))
    clip = Path(shutil.copy(ROOT / "samples" / "realshort.mp4", tmp_path / "realshort.mp4"))
    llm = CachedVideoLLM(str(caches.checkpoint), cache_dir, family="qwen3-vl", on_miss="compress", device="cpu",
                         dtype="fp32", decode_workers=0)
    text, used = llm.generate(QUESTION, str(clip), max_new_tokens=NEW)
    assert llm.compressed_ids == [used.video_id] and text
    cache = TokenCache(cache_dir)
    added, old = cache[used.video_id], cache["clips/bikes.mp4"]
    assert added.meta["config_fingerprint"] == old.meta["config_fingerprint"]
    t, h, w = added["video_grid_thw"].tolist()
    assert used.video_tokens == len(added.tokens) == kept_count(0.1, t, (h // 2) * (w // 2))
    assert len(added["frame_indices"]) == 8 and added["deepstack"].shape[:2] == (2, len(added.tokens))
    model, tokenizer = llms["qwen3-vl"]
    with torch.inference_mode():
        (want,), _ = generate_texts(model, tokenizer, model_inputs(model, tokenizer, QUESTION, added),
                                    max_new_tokens=NEW)
    assert text == want
    llm.close()


def test_caches_that_do_not_fit_are_refused_in_one_line(llms, qwen_caches, tiny_llava_hf_dir, tmp_path):
    from checkpoints import save_tiny_tokenizer
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    model, tokenizer = llms["qwen3-vl"]

    def refused(pattern, video, on=model, tok=tokenizer, question=QUESTION):
        with pytest.raises(DownstreamError, match=pattern) as err:
            model_inputs(on, tok, question, video)
        assert "\n" not in str(err.value)

    qwen3 = videos(qwen_caches("qwen3-vl").pruned)[0]
    qwen35 = videos(qwen_caches("qwen3.5").pruned)[0]
    refused(r"made for qwen3-vl \(model_type qwen3_vl, qwen3_vl_moe\), but .* is a 'qwen3_5' model", qwen3,
            *llms["qwen3.5"])
    refused(r"made for qwen3-vl .* is a 'qwen2_5_vl' model", qwen3, *llms["qwen2.5-vl"])
    refused(r"made for qwen3.5 .* is a 'qwen3_vl' model", qwen35)

    # a LLaVA cache given to a Qwen model, and a Qwen cache given to a LLaVA model
    llava_dir = save_tiny_tokenizer(Path(shutil.copytree(tiny_llava_hf_dir, tmp_path / "llava-tiny")))
    compress([qwen_caches("qwen3-vl").clips / "bikes.mp4", "--model", llava_dir, "--frames", "4",
              "-o", tmp_path / "llava"], tmp_path)
    llava_video = videos(tmp_path / "llava")[0]
    refused(r"made for llava-onevision \(model_type llava_onevision\), but .* is a 'qwen3_vl' model", llava_video)
    llava = LlavaOnevisionForConditionalGeneration.from_pretrained(llava_dir, dtype=torch.float32).eval()
    refused(r"made for qwen3-vl .* is a 'llava_onevision' model", qwen3, llava,
            AutoTokenizer.from_pretrained(llava_dir))

    item = {"id": "x", "meta": qwen3.meta, **{n: qwen3[n] for n in QWEN_TENSORS + ("deepstack",)}}

    def edited(**changes):
        return {**item, **changes}

    refused("tokens come from a siglip tower", edited(meta={**qwen3.meta, "model": {**qwen3.meta["model"],
                                                                                    "family": "siglip"}}))
    deeper = {**qwen3.meta["model"], "vision_tower": {**qwen3.meta["model"]["vision_tower"], "depth": 27}}
    refused(r"made by a vision tower with depth 27 \(of .*\), but .*'s has 4", edited(meta={**qwen3.meta,
                                                                                           "model": deeper}))
    no_fps = {**qwen3.meta, "video": {k: v for k, v in qwen3.meta["video"].items() if k != "fps"}}
    refused("records no frame rate", edited(meta=no_fps))
    refused("holds 0 DeepStack layers but .* takes 2", {k: v for k, v in item.items() if k != "deepstack"})
    refused("no 'video_grid_thw' tensor", {k: v for k, v in item.items() if k != "video_grid_thw"})
    refused("32 wide but the LLM's hidden size is 64", edited(tokens=item["tokens"][:, :32],
                                                             deepstack=item["deepstack"][..., :32]))
    refused("not in sequence order", edited(index=item["index"].flip(0), frame=item["frame"].flip(0)))
    refused("video pads where the video needs", item, question="<|video_pad|> and <|video_pad|>")
    from aot_cli.downstream import CacheDataset

    refused(r"no 'frame' tensor.*QWEN_TENSORS", CacheDataset(qwen_caches("qwen3-vl").pruned)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_dataset_serves_a_qwen_cache_directory(family, llms, qwen_caches):
    from torch.utils.data import DataLoader

    from aot_cli.downstream import CacheDataset, collate_videos

    model, tokenizer = llms[family]
    caches = qwen_caches(family)
    names = QWEN_TENSORS + (("deepstack",) if family == "qwen3-vl" else ())
    ds = CacheDataset(caches.pruned, names=names)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate_videos)))
    cache = TokenCache(caches.pruned)
    want = [cache[vid] for vid in batch["ids"]]
    assert sorted(batch["ids"]) == ["clips/bikes.mp4", "clips/carphone_pristine.mp4"]
    assert batch["lengths"].tolist() == [len(v.tokens) for v in want]
    assert batch["video_grid_thw"].tolist() == [v["video_grid_thw"].tolist() for v in want]
    longest = max(batch["lengths"].tolist())
    assert batch["tokens"].shape == (2, longest, 64)
    assert batch["attention_mask"].sum(1).tolist() == batch["lengths"].tolist()
    for b, video in enumerate(want):
        n = len(video.tokens)
        assert torch.equal(batch["tokens"][b, :n], video.tokens) and torch.equal(batch["frame"][b, :n], video["frame"])
        if family == "qwen3-vl":
            assert batch["deepstack"].shape == (2, 2, longest, 64)
            assert torch.equal(batch["deepstack"][b, :, :n], video["deepstack"])
            assert not batch["deepstack"][b, :, n:].any()
        # a dataset item feeds the model as the cached video does
        item = ds[ds.ids.index(video.id)]
        direct, from_item = (model_inputs(model, tokenizer, QUESTION, v) for v in (video, item))
        assert torch.equal(direct["input_ids"], from_item["input_ids"])
        assert torch.equal(direct["position_ids"], from_item["position_ids"])


@pytest.mark.parametrize("family", FAMILIES)
def test_ask_answers_from_a_qwen_cache(family, llms, qwen_caches, tiny_llava_hf_dir):
    model, tokenizer = llms[family]
    caches = qwen_caches(family)
    args = ["ask", str(caches.pruned), "--video", "clips/bikes.mp4", "--model", str(caches.checkpoint), QUESTION,
            "--max-new-tokens", str(NEW), "--device", "cpu", "--dtype", "fp32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    video = TokenCache(caches.pruned)["clips/bikes.mp4"]
    with torch.inference_mode():
        (want,), _ = generate_texts(model, tokenizer, model_inputs(model, tokenizer, QUESTION, video),
                                    max_new_tokens=NEW)
    assert result.stdout.strip() == want and want
    if family == "qwen3-vl":  # another family's checkpoint: one line, exit 2, before the model loads
        bad = CliRunner().invoke(main, [*args[:5], str(tiny_llava_hf_dir), *args[6:]])
        assert bad.exit_code == 2 and "Traceback" not in bad.output
        (line,) = bad.output.strip().splitlines()
        assert "model_type 'llava_onevision' is not a qwen3-vl checkpoint" in line


def test_consumers_doc_qwen_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/consumers.md section 5: its shell commands (build a tiny checkpoint, compress) and its
    Python, run in a scratch directory holding samples/bikes.mp4."""
    text = (ROOT / "docs" / "consumers.md").read_text(encoding="utf-8")
    section = text[text.index("## 5. "):]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (tmp_path / "samples").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "samples" / "bikes.mp4", tmp_path / "samples" / "bikes.mp4")
    shutil.copy(ROOT / "tests" / "qwen_checkpoints.py", tmp_path / "tests" / "qwen_checkpoints.py")
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line.split("#")[0]) for line in shell.splitlines() if line.strip()]
    assert [argv[:2] for argv in commands] == [["python", "tests/qwen_checkpoints.py"], ["aot", "compress"]]
    monkeypatch.setattr(sys, "argv", commands[0][1:])
    with pytest.raises(SystemExit) as done:  # python tests/qwen_checkpoints.py ..., in this process
        runpy.run_path(commands[0][1], run_name="__main__")
    assert done.value.code in (0, None) and capsys.readouterr().out.strip() == "tiny-qwen3-vl"
    compress(commands[1][2:], tmp_path)
    namespace: dict = {}
    exec(compile(python, "docs/consumers.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    model, tokenizer, inputs = namespace["model"], namespace["tokenizer"], namespace["inputs"]
    video = TokenCache(tmp_path / "qwen-cache")["samples/bikes.mp4"]
    assert inputs["input_ids"].shape[1] > len(video.tokens) and printed
    with torch.inference_mode():
        inputs = model_inputs(model, tokenizer, "What happens in the video?", video)
        (want,), _ = generate_texts(model, tokenizer, inputs, max_new_tokens=8)
    assert printed == want


def test_readme_qwen_example_runs_as_written_with_a_tiny_checkpoint(qwen_caches, tmp_path, monkeypatch, capsys):
    """README "Using a cache in LLM runs", its Qwen part: the `aot compress` command and the Python,
    with the tiny Qwen3-VL checkpoint in place of the hub one."""
    hub = "Qwen/Qwen3-VL-2B-Instruct"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Qwen2.5-VL, Qwen3-VL and Qwen3.5 caches\n")
    section = text[start:text.index("\n## ", start)]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    checkpoint = str(qwen_caches("qwen3-vl").checkpoint)
    assert hub in shell and hub in python
    (tmp_path / "samples").mkdir()
    shutil.copy(ROOT / "samples" / "bikes.mp4", tmp_path / "samples" / "bikes.mp4")
    (command,) = [shlex.split(line) for line in shell.splitlines() if line.strip()]
    assert command[:2] == ["aot", "compress"]
    compress([checkpoint if arg == hub else arg for arg in command[2:]], tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python.replace(hub, checkpoint), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    model, processor, video = namespace["model"], namespace["processor"], namespace["video"]
    assert video["video_grid_thw"][0] == 8  # --frames 16: 8 temporal patches
    with torch.inference_mode():
        (want,), _ = generate_texts(model, processor, model_inputs(model, processor, "What happens in this video?",
                                                                   video), max_new_tokens=32)
    assert printed == want and printed


def _templates_only_for_the_processor(src: Path, dst: Path) -> Path:
    """A copy of checkpoint ``src`` whose tokenizer has no chat template: the template is moved to a
    processor's legacy ``chat_template.json`` (as many released Qwen checkpoints keep it)."""
    import json

    shutil.copytree(src, dst)
    template = (dst / "chat_template.jinja").read_text(encoding="utf-8")
    (dst / "chat_template.jinja").unlink()
    config = json.loads((dst / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    return dst


def test_text_side_reads_the_chat_template_from_the_processors_files(llms, qwen_caches, tmp_path):
    """A tokenizer without a template, the template in chat_template.json: load_text_side gives a
    tokenizer carrying it (the processor cannot be built here), and the prompt equals the one made
    with the original checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    from aot_cli.downstream import load_text_side

    model, tokenizer = llms["qwen3-vl"]
    caches = qwen_caches("qwen3-vl")
    video = videos(caches.pruned)[0]
    checkpoint = _templates_only_for_the_processor(caches.checkpoint, tmp_path / "ckpt")
    bare = AutoTokenizer.from_pretrained(checkpoint)
    assert not bare.chat_template
    with pytest.raises(DownstreamError, match="no chat template.*load_text_side"):
        model_inputs(model, bare, QUESTION, video)
    side = load_text_side(str(checkpoint))
    assert getattr(side, "tokenizer", None) is None  # the tokenizer, not a processor
    got, want = model_inputs(model, side, QUESTION, video), model_inputs(model, tokenizer, QUESTION, video)
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["position_ids"], want["position_ids"])


def test_processor_chat_template_follows_transformers_order(tmp_path):
    """processor_config.json's chat_template key, else chat_template.json, else chat_template.jinja
    (ProcessorMixin.get_processor_dict); none -> None; an unreadable file -> one line."""
    import json

    from aot_cli.downstream.ask import processor_chat_template

    (tmp_path / "chat_template.jinja").write_text("jinja", encoding="utf-8")
    assert processor_chat_template(str(tmp_path)) == "jinja"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "json"}), encoding="utf-8")
    assert processor_chat_template(str(tmp_path)) == "json"
    (tmp_path / "processor_config.json").write_text(json.dumps({"chat_template": "config"}), encoding="utf-8")
    assert processor_chat_template(str(tmp_path)) == "config"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert processor_chat_template(str(empty)) is None
    (empty / "chat_template.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DownstreamError) as error:
        processor_chat_template(str(empty))
    assert "\n" not in str(error.value) and str(empty) in str(error.value)
