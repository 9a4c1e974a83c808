"""The tiny Qwen-family checkpoints the Qwen tests stand on: they load as the released ones do."""
from __future__ import annotations

import json

import pytest
import torch

import qwen_checkpoints as qc


def test_builder_is_deterministic(tmp_path):
    a = qc.build_qwen(tmp_path / "a", "qwen3-vl")
    b = qc.build_qwen(tmp_path / "b", "qwen3-vl")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "video_preprocessor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_checkpoint_facts(tiny_qwen_dir, request):
    family = request.node.callspec.params["tiny_qwen_dir"]
    config = json.loads((tiny_qwen_dir / "config.json").read_text())
    assert config["model_type"] == {"qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl", "qwen3.5": "qwen3_5"}[family]
    vision = config["vision_config"]
    assert vision["temporal_patch_size"] == 2 and vision["spatial_merge_size"] == 2
    assert vision["patch_size"] == (14 if family == "qwen2.5-vl" else 16)
    assert vision["out_hidden_size"] == config["text_config"]["hidden_size"]
    if family == "qwen2.5-vl":
        assert vision["fullatt_block_indexes"] == [1, 3]
        assert (tiny_qwen_dir / "model.safetensors.index.json").exists()
    if family == "qwen3-vl":
        assert vision["deepstack_visual_indexes"] == [1, 2]
    assert "deepstack_visual_indexes" not in vision or family == "qwen3-vl"
    for ids_key, token in (("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
                           ("vision_end_token_id", "<|vision_end|>"), ("image_token_id", "<|image_pad|>")):
        assert config[ids_key] == qc.SPECIAL_IDS[token]
    video = json.loads((tiny_qwen_dir / "video_preprocessor_config.json").read_text())
    assert video["patch_size"] == vision["patch_size"] and video["merge_size"] == 2
    assert video["size"]["shortest_edge"] < video["size"]["longest_edge"]


def test_tokenizer_and_template(tiny_qwen_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what is in the video?"}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>what is in the video?<|im_end|>\n" in text
    assert "<|im_start|>assistant\n" in text
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert ids.count(qc.VIDEO_TOKEN_ID) == 1 and ids.count(qc.VISION_START_ID) == 1
    stamp = tokenizer("<1.5 seconds>")["input_ids"]
    assert tokenizer.decode(stamp) == "<1.5 seconds>" and max(stamp) < qc.SPECIAL_BASE
    assert tokenizer.eos_token_id == qc.SPECIAL_IDS["<|im_end|>"]


@pytest.mark.parametrize("family", qc.FAMILIES)
def test_model_runs_a_video(family):
    model = qc.qwen_model(family)
    patch = model.config.vision_config.patch_size
    grid = torch.tensor([[2, 4, 6]])
    pixels = torch.randn(2 * 4 * 6, 3 * 2 * patch * patch)
    with torch.no_grad():
        out = model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid)
    assert out.pooler_output[0].shape == (2 * 2 * 3, qc.TEXT_HIDDEN)
    deepstack = getattr(out, "deepstack_features", None)
    if family == "qwen3-vl":
        assert len(deepstack) == 2
    else:
        assert deepstack is None
