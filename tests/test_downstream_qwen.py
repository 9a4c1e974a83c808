"""Qwen2.5-VL / Qwen3-VL / Qwen3.5 consumers of a cache: the prompt of ``qwen_inputs`` must be the
one the model's processor lays out (checked against transformers' own processor methods), with
compression off the model must give its own logits and greedy answer, and with compression the
kept tokens and the text must sit at their uncompressed positions, generation continuing by +1."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aot_cli.cache import TokenCache
from aot_cli.downstream import DownstreamError
from aot_cli.downstream.qwen import (QWEN_TENSORS, collate_qwen_inputs, extend_qwen_inputs, patch_timestamps,
                                     qwen_inputs, qwen_text_inputs)
from qwen_caches import kept_count, qwen_entry
from qwen_checkpoints import VIDEO_TOKEN_ID, qwen_model

QUESTION = "what is in the video ?"
FAMILIES = ("qwen2.5-vl", "qwen3-vl", "qwen3.5")
DIRS = {"qwen2.5-vl": "tiny_qwen2_5_vl_dir", "qwen3-vl": "tiny_qwen3_vl_dir", "qwen3.5": "tiny_qwen3_5_dir"}
WRAPPER = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def llms():
    return {family: qwen_model(family) for family in FAMILIES}


@pytest.fixture
def setup(request, llms, tmp_path):
    """(family, model, tokenizer, tmp dir) for the test's ``family`` parameter."""
    from transformers import AutoTokenizer

    family = request.param
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(DIRS[family]))
    return family, llms[family], tokenizer, tmp_path


def reference_prompt(family, model, tokenizer, entry):
    """The uncompressed prompt as transformers' processor builds it (its own ``replace_video_token``
    and, for Qwen2.5-VL, ``second_per_grid_ts = temporal_patch_size / VideoMetadata.sampled_fps``),
    and the model's own positions for it. Returns (ids [1, L], model kwargs, positions [3, 1, L])."""
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    cls = Qwen2_5_VLProcessor if family == "qwen2.5-vl" else Qwen3VLProcessor
    processor = cls.__new__(cls)  # the video processor needs torchvision: only its text rules are used
    processor.video_processor = SimpleNamespace(merge_size=2, temporal_patch_size=2)
    processor.video_token, processor.vision_start_token, processor.vision_end_token = (
        "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    metadata = VideoMetadata(total_num_frames=entry.total_frames, fps=entry.fps, frames_indices=list(entry.frame_indices))
    block = processor.replace_video_token({"video_grid_thw": entry.grid, "video_metadata": [metadata]}, 0)
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    text = text.replace(WRAPPER, block) if family != "qwen2.5-vl" else text.replace("<|video_pad|>", block)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    kwargs = {"input_ids": ids, "mm_token_type_ids": (ids == VIDEO_TOKEN_ID).int() * 2, "video_grid_thw": entry.grid}
    if family == "qwen2.5-vl":
        kwargs["second_per_grid_ts"] = torch.tensor([2 / metadata.sampled_fps])
    rope = {k: v for k, v in kwargs.items() if k != "input_ids"}
    positions, _ = model.model.get_rope_index(ids, **rope)
    return ids, kwargs, positions


def greedy_loop(model, inputs, steps):
    """Greedy decoding without a KV cache: each step runs the whole sequence again, the new token
    at the last position + 1 on every M-RoPE row."""
    ids, positions = inputs["input_ids"], inputs["position_ids"]
    for _ in range(steps):
        logits = model(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids),
                       mm_encoder_outputs=inputs["mm_encoder_outputs"]).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return ids[0, inputs["input_ids"].shape[1]:]


@pytest.mark.parametrize("setup", FAMILIES, indirect=True)
def test_ratio_one_gives_the_models_own_logits_and_greedy_answer(setup):
    """An odd frame count (7 frames in 4 temporal patches) at 29.97 fps: the processor's padding,
    timestamp and ``second_per_grid_ts`` rules all matter."""
    family, model, tokenizer, tmp = setup
    entry = qwen_entry(model, family, tmp / "off.safetensors", grid=(4, 4, 6), ratio=1.0, frames=7, fps=29.97,
                       total_frames=90)
    inputs = qwen_inputs(model, tokenizer, QUESTION, entry.video)
    ids, own, positions = reference_prompt(family, model, tokenizer, entry)
    assert torch.equal(inputs["input_ids"], ids)
    assert torch.equal(inputs["position_ids"], positions)
    with torch.no_grad():
        want = model(**own, mm_encoder_outputs={"video": entry.features}).logits
        got = model(**inputs).logits
        assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
        theirs = model.generate(**own, mm_encoder_outputs={"video": entry.features}, max_new_tokens=6, do_sample=False)
        ours = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("setup", FAMILIES, indirect=True)
def test_compressed_prompt_keeps_uncompressed_positions_and_generation_continues_by_one(setup):
    family, model, tokenizer, tmp = setup
    ratio = 0.1
    t, h, w = grid = (4, 8, 10)
    cells = (h // 2) * (w // 2)
    entry = qwen_entry(model, family, tmp / "aot.safetensors", grid=grid, ratio=ratio, seed=3)
    inputs = qwen_inputs(model, tokenizer, QUESTION, entry.video)
    full_ids, _, full_pos = reference_prompt(family, model, tokenizer, entry)
    ids, pos = inputs["input_ids"][0], inputs["position_ids"][:, 0]
    at_video = ids == VIDEO_TOKEN_ID
    assert int(at_video.sum()) == kept_count(ratio, t, cells) == len(entry.video.tokens)
    slots = torch.nonzero(full_ids[0] == VIDEO_TOKEN_ID).flatten()
    # every text token stays, in order, at its uncompressed position (the closing text included)
    text_slots = torch.nonzero(full_ids[0] != VIDEO_TOKEN_ID).flatten()
    assert torch.equal(ids[~at_video], full_ids[0, text_slots])
    assert torch.equal(pos[:, ~at_video], full_pos[:, 0, text_slots])
    closing = full_ids.shape[1] - 1 - int(slots[-1])  # text after the last uncompressed video pad
    assert torch.equal(pos[:, -closing:], full_pos[:, 0, -closing:])
    # each kept token at the position of its cell
    assert torch.equal(pos[:, at_video], full_pos[:, 0, slots[entry.kept]])
    assert inputs["mm_encoder_outputs"]["video"].pooler_output[0].shape[0] == len(entry.kept)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0, ids.numel():]
        assert torch.equal(generated, greedy_loop(model, inputs, 5))


@pytest.mark.parametrize("setup", ["qwen3-vl"], indirect=True)
def test_deepstack_rows_are_added_at_the_kept_video_positions(setup):
    """The cached DeepStack rows of the kept cells reach the decoder layers at the kept pads: the
    logits equal the language model run by hand with the model's own DeepStack features of those
    cells (and differ without them)."""
    family, model, tokenizer, tmp = setup
    entry = qwen_entry(model, family, tmp / "ds.safetensors", grid=(4, 8, 10), ratio=0.2, seed=5)
    inputs = qwen_inputs(model, tokenizer, QUESTION, entry.video)
    rows = inputs["mm_encoder_outputs"]["video"].deepstack_features
    assert len(rows) == len(model.config.vision_config.deepstack_visual_indexes) == 2
    ids = inputs["input_ids"]
    mask = ids == VIDEO_TOKEN_ID
    own = [layer[0][entry.kept] for layer in entry.features.deepstack_features]
    for got, want in zip(rows, own):
        assert torch.equal(got[0], want)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        embeds[mask] = entry.features.pooler_output[0][entry.kept]
        lm = model.model.language_model
        common = dict(inputs_embeds=embeds, position_ids=inputs["position_ids"], attention_mask=torch.ones_like(ids))
        by_hand = model.lm_head(lm(**common, visual_pos_masks=mask, deepstack_visual_embeds=own).last_hidden_state)
        without = model.lm_head(lm(**common).last_hidden_state)
        got = model(**inputs).logits
    assert torch.allclose(got, by_hand, atol=1e-5, rtol=0)
    assert (got - without).abs().max() > 1e-3


@pytest.mark.parametrize("setup", ["qwen3-vl", "qwen3.5"], indirect=True)
def test_timestamp_text_follows_the_processor_rule(setup):
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    family, model, tokenizer, tmp = setup
    entry = qwen_entry(model, family, tmp / "ts.safetensors", grid=(3, 4, 4), ratio=0.5, frames=5, fps=23.976,
                       total_frames=211, seed=2)
    want = Qwen3VLProcessor._calculate_timestamps(None, list(entry.frame_indices), entry.fps, 2)
    assert patch_timestamps(entry.frame_indices, entry.fps, 2) == want
    text = tokenizer.decode(qwen_inputs(model, tokenizer, QUESTION, entry.video)["input_ids"][0])
    blocks = [f"<{s:.1f} seconds><|vision_start|>" for s in want]
    assert [text.index(b) for b in blocks] == sorted(text.index(b) for b in blocks)
    assert text.count("<|vision_start|>") == 3 and text.count("<|vision_end|>") == 3


@pytest.mark.parametrize("setup", ["qwen2.5-vl"], indirect=True)
def test_two_tokens_at_one_cell_share_its_position(setup):
    family, model, tokenizer, tmp = setup
    entry = qwen_entry(model, family, tmp / "dup.safetensors", grid=(2, 4, 4), kept=[0, 3, 3, 5])
    inputs = qwen_inputs(model, tokenizer, QUESTION, entry.video)
    _, _, full_pos = reference_prompt(family, model, tokenizer, entry)
    at_video = inputs["input_ids"][0] == VIDEO_TOKEN_ID
    pos = inputs["position_ids"][:, 0, at_video]
    assert pos.shape[1] == 4 and torch.equal(pos[:, 1], pos[:, 2])
    slots = torch.nonzero(reference_prompt(family, model, tokenizer, entry)[0][0] == VIDEO_TOKEN_ID).flatten()
    assert torch.equal(pos, full_pos[:, 0, slots[torch.tensor([0, 3, 3, 5])]])


@pytest.mark.parametrize("setup", ["qwen3-vl"], indirect=True)
def test_batched_and_extended_inputs_score_as_one_prompt_does(setup):
    family, model, tokenizer, tmp = setup
    one = qwen_inputs(model, tokenizer, QUESTION, qwen_entry(model, family, tmp / "a.safetensors", grid=(2, 4, 6),
                                                             ratio=0.5, seed=1).video)
    two = qwen_inputs(model, tokenizer, "Describe this video", qwen_entry(model, family, tmp / "b.safetensors",
                                                                          grid=(4, 4, 4), ratio=0.3, seed=2).video)
    batch = collate_qwen_inputs([one, two], pad_token_id=tokenizer.pad_token_id)
    cont = torch.tensor([300, 301])
    longer = extend_qwen_inputs(model, one, cont)
    assert torch.equal(longer["position_ids"][..., -2:], one["position_ids"][..., -1:] + torch.tensor([1, 2]))
    with torch.no_grad():
        together = model(**batch).logits[:, -1]
        alone = [model(**one).logits[0, -1], model(**two).logits[0, -1]]
        extended = model(**longer).logits[0, -3]
    assert torch.allclose(together[0], alone[0], atol=1e-4) and torch.allclose(together[1], alone[1], atol=1e-4)
    assert torch.allclose(extended, alone[0], atol=1e-4)
    text = qwen_text_inputs(model, tokenizer, "what is a bike ?")
    assert torch.equal(text["position_ids"][0, 0], torch.arange(text["input_ids"].shape[1]))


@pytest.mark.parametrize("setup", ["qwen3-vl"], indirect=True)
def test_caches_that_do_not_fit_are_refused_in_one_line(setup, llms):
    family, model, tokenizer, tmp = setup

    def refused(pattern, video, on=model):
        with pytest.raises(DownstreamError, match=pattern) as err:
            qwen_inputs(on, tokenizer, QUESTION, video)
        assert "\n" not in str(err.value)

    good = qwen_entry(model, family, tmp / "good.safetensors", grid=(2, 4, 4), ratio=0.5).video
    refused("made by a qwen3-vl model, but .* is a qwen3.5 model", good, llms["qwen3.5"])
    refused("made by a qwen3-vl model, but .* is a qwen2.5-vl model", good, llms["qwen2.5-vl"])
    other = qwen_entry(llms["qwen3.5"], "qwen3.5", tmp / "other.safetensors", grid=(2, 4, 4)).video
    refused("made by a qwen3.5 model, but .* is a qwen3-vl model", other)

    def plain(meta):
        meta["model"] = {"family": "siglip", "model": "tiny/siglip"}
        meta["profile"] = {"name": "siglip"}
    refused("tokens come from a siglip model", qwen_entry(model, family, tmp / "p.safetensors", grid=(2, 4, 4),
                                                          meta_edit=plain).video)
    no_ds = qwen_entry(model, family, tmp / "nods.safetensors", grid=(2, 4, 4), drop=("deepstack",)).video
    refused("holds 0 DeepStack layers but .* takes 2", no_ds)
    refused("no 'video_grid_thw' tensor", qwen_entry(model, family, tmp / "ng.safetensors", grid=(2, 4, 4),
                                                     drop=("video_grid_thw",)).video)
    narrow = {"id": "x", "meta": good.meta, **{n: good[n] for n in QWEN_TENSORS + ("deepstack",)}}
    narrow["tokens"] = narrow["tokens"][:, :32]
    narrow["deepstack"] = narrow["deepstack"][..., :32]
    refused("32 wide but the LLM's hidden size is 64", narrow)
    shuffled = dict(narrow, tokens=good.tokens, deepstack=good["deepstack"], index=good["index"].flip(0))
    refused("not in sequence order", shuffled)

    def no_fps(meta):
        meta["video"].pop("fps")
    refused("records no frame rate", qwen_entry(model, family, tmp / "nf.safetensors", grid=(2, 4, 4),
                                                meta_edit=no_fps).video)
    with pytest.raises(DownstreamError, match="video placeholders|video pads") as err:
        qwen_inputs(model, tokenizer, "<|video_pad|> and <|video_pad|>", good)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("setup", ["qwen3-vl"], indirect=True)
def test_dataset_serves_qwen_videos_and_collates_their_tensors(setup):
    from torch.utils.data import DataLoader

    from aot_cli.cache import CacheWriter
    from aot_cli.downstream import CacheDataset, collate_videos

    family, model, tokenizer, tmp = setup
    with CacheWriter(tmp / "cache") as writer:
        for seed, grid, ratio in ((1, (2, 4, 6), 0.5), (2, (4, 4, 4), 0.3)):
            qwen_entry(model, family, None, grid=grid, ratio=ratio, seed=seed, video_id=f"v{seed}.mp4", writer=writer)
    names = QWEN_TENSORS + ("deepstack",)
    ds = CacheDataset(tmp / "cache", names=names)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate_videos)))
    lengths = batch["lengths"].tolist()
    assert lengths == [6, 5]  # floor(0.5 * 12 + 0.5), floor(0.3 * 16 + 0.5)
    assert batch["video_grid_thw"].tolist() == [[2, 4, 6], [4, 4, 4]]
    assert batch["deepstack"].shape == (2, 2, 6, 64) and batch["tokens"].shape == (2, 6, 64)
    for b in range(2):
        item = ds[b]
        assert torch.equal(batch["deepstack"][b, :, :lengths[b]], item["deepstack"])
        assert not batch["deepstack"][b, :, lengths[b]:].any()
        # a dataset item feeds the model as the cached video does
        with TokenCache(tmp / "cache") as cache:
            direct = qwen_inputs(model, tokenizer, QUESTION, cache[item["id"]])
        from_item = qwen_inputs(model, tokenizer, QUESTION, item)
        assert torch.equal(direct["input_ids"], from_item["input_ids"])
        assert torch.equal(direct["position_ids"], from_item["position_ids"])
    with pytest.raises(DownstreamError, match="no 'frame' tensor.*QWEN_TENSORS"):
        qwen_inputs(model, tokenizer, QUESTION, CacheDataset(tmp / "cache")[0])
