"""Tiny random Qwen-family video LLM checkpoints for tests (no model hub needed).

Each builder writes a complete ``...ForConditionalGeneration`` checkpoint with ``save_pretrained``
(config, weights), a tiny byte-level BPE tokenizer holding the family's special tokens, a chat template
that lays a ``{"type": "video"}`` item out as ``<|vision_start|><|video_pad|><|vision_end|>`` (as the
released templates do), and hand-written ``preprocessor_config.json`` /
``video_preprocessor_config.json`` with the keys the released checkpoints carry (pixel budgets,
patch / merge / temporal patch sizes, mean / std, resample), scaled down so a test video gives a few
dozen merged tokens per temporal patch.

=============  ===================  =====  ==========================================================
family         model_type           patch  tower
=============  ===================  =====  ==========================================================
qwen2.5-vl     ``qwen2_5_vl``       14     4 blocks, window attention (window 56 px = 2x2 merged
                                           cells) except ``fullatt_block_indexes`` [1, 3]
qwen3-vl       ``qwen3_vl``         16     4 blocks, per-frame attention, ``deepstack_visual_indexes``
                                           [1, 2], learned 8x8 position table
qwen3.5        ``qwen3_5``          16     4 blocks, per-frame attention, no DeepStack
=============  ===================  =====  ==========================================================

All: tower width 32 (2 heads of 16), ``temporal_patch_size`` 2, ``spatial_merge_size`` 2, merger to
the LLM width 64; a 2-layer LLM with 3-D M-RoPE (``mrope_section`` summing to half the rotary width;
Qwen3-VL / Qwen3.5 interleaved; Qwen3.5 one linear-attention and one full-attention layer). Seeds are
fixed: the same call gives the same bytes of weights. A checkpoint is ~1 MB and builds in about a
second.

Command line (builds one checkpoint into DIR)::

    python tests/qwen_checkpoints.py {qwen2.5-vl,qwen3-vl,qwen3.5} DIR [--shard-size 200KB]

Session fixtures (``tests/conftest.py``): ``tiny_qwen2_5_vl_dir``, ``tiny_qwen3_vl_dir``,
``tiny_qwen3_5_dir`` and ``tiny_qwen_dir`` (parametrised over the three families, its ``param`` is
the family name).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

FAMILIES = ("qwen2.5-vl", "qwen3-vl", "qwen3.5")

VISION_HIDDEN = 32
VISION_HEADS = 2
VISION_DEPTH = 4
TEXT_HIDDEN = 64
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
TEXT_LAYERS = 2

#: Words the tiny tokenizer holds whole (alone and after a space); anything else still encodes,
#: byte by byte, as with the released byte-level BPE tokenizers.
WORDS: List[str] = [
    "system", "user", "assistant", "You", "are", "a", "helpful", "what", "is", "in", "the", "video",
    "Describe", "this", "seconds", "bike", "car", "dog", "cat", "Video", "Picture", "yes", "no", "Answer",
    "with", "letter", "from", "given", "choices", "directly", "option",
]


def _byte_level_vocab() -> tuple:
    """(vocab, merges): the 256 byte symbols (sorted), then for every word of :data:`WORDS`, alone
    and with the byte-level space marker in front, the left-to-right prefixes that build it, each
    with the merge that makes it. Deterministic."""
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: Dict[str, int] = {s: i for i, s in enumerate(symbols)}
    merges: List[tuple] = []
    for word in WORDS:
        for form in (word, "\u0120" + word):
            for end in range(2, len(form) + 1):
                piece = form[:end]
                if piece not in vocab:
                    vocab[piece] = len(vocab)
                    merges.append((form[:end - 1], form[end - 1]))
    return vocab, merges


_VOCAB, _MERGES = _byte_level_vocab()

#: The family's special tokens, in the released tokenizers' order, right after the regular
#: vocabulary (as in the released ones); Qwen3.5's thinking markers last.
SPECIAL_TOKENS: List[str] = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
]
SPECIAL_BASE = len(_VOCAB)
SPECIAL_IDS: Dict[str, int] = {token: SPECIAL_BASE + i for i, token in enumerate(SPECIAL_TOKENS)}
VOCAB = -(-(SPECIAL_BASE + len(SPECIAL_TOKENS)) // 64) * 64  # the LLM's embedding rows (padded, as released)
IMAGE_TOKEN_ID = SPECIAL_IDS["<|image_pad|>"]
VIDEO_TOKEN_ID = SPECIAL_IDS["<|video_pad|>"]
VISION_START_ID = SPECIAL_IDS["<|vision_start|>"]
VISION_END_ID = SPECIAL_IDS["<|vision_end|>"]

def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# chat templates (own wording; they render a video item the way the released templates do)

_NL = "{{ '\\n' }}"


def _chat_template(family: str) -> str:
    """The turns as ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``; a video item renders as
    ``<|vision_start|><|video_pad|><|vision_end|>`` (``add_vision_id``: ``Video N: `` first), an
    image item likewise with ``<|image_pad|>``, a text item as its text. Qwen2.5-VL adds a default
    system turn; Qwen3-VL does not; Qwen3.5 follows the generation prompt with an empty thinking
    block unless ``enable_thinking`` is true."""
    parts = ["{% set counts = namespace(image=0, video=0) %}"]
    if family == "qwen2.5-vl":
        parts.append("{% if messages[0]['role'] != 'system' %}<|im_start|>system" + _NL
                     + "You are a helpful assistant.<|im_end|>" + _NL + "{% endif %}")
    parts.append(
        "{% for message in messages %}<|im_start|>{{ message['role'] }}" + _NL
        + "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for item in message['content'] %}"
        "{% if item['type'] == 'video' or 'video' in item %}{% set counts.video = counts.video + 1 %}"
        "{% if add_vision_id %}Video {{ counts.video }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
        "{% elif item['type'] == 'image' or 'image' in item %}{% set counts.image = counts.image + 1 %}"
        "{% if add_vision_id %}Picture {{ counts.image }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif 'text' in item %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>" + _NL + "{% endfor %}"
    )
    prompt = "{% if add_generation_prompt %}<|im_start|>assistant" + _NL
    if family == "qwen3.5":
        prompt += ("{% if enable_thinking is defined and enable_thinking %}<think>" + _NL + "{% else %}<think>"
                   + _NL + _NL + "</think>" + _NL + _NL + "{% endif %}")
    parts.append(prompt + "{% endif %}")
    return "".join(parts)


def save_qwen_tokenizer(out: Path, family: str) -> Path:
    """A tiny byte-level BPE tokenizer built like the released Qwen ones (the Qwen split pattern,
    byte-level symbols, NFC): every text encodes and decodes back exactly; the words of
    :data:`WORDS` are single tokens; the special tokens of :data:`SPECIAL_TOKENS` sit at
    :data:`SPECIAL_IDS`; the family's chat template is saved with it. ``eos`` is ``<|im_end|>``,
    ``pad`` ``<|endoftext|>``. ``AutoTokenizer.from_pretrained(out)`` loads it for all three model
    types (Qwen3.5's tokenizer class rebuilds the backend from vocab and merges, which is why this
    is BPE and not word-level)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX  # the released split rule

    backend = Tokenizer(models.BPE(vocab=dict(_VOCAB), merges=list(_MERGES), fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])  # in id order
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<|endoftext|>", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
    )
    got = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert got == [SPECIAL_IDS[t] for t in SPECIAL_TOKENS], got
    tokenizer.chat_template = _chat_template(family)
    tokenizer.save_pretrained(out)
    return Path(out)


# --------------------------------------------------------------------------------------------------
# processor configs (keys as the released checkpoints carry them; budgets scaled down)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def processor_configs(family: str) -> Dict[str, dict]:
    """``{"preprocessor_config.json": ..., "video_preprocessor_config.json": ...}`` for ``family``.

    Qwen2.5-VL (patch 14, factor 28, CLIP mean/std): per-frame budget 4..64 merged cells
    (``size.shortest_edge`` / ``longest_edge`` = 4*28*28 / 64*28*28 px; the image config keeps
    ``min_pixels`` / ``max_pixels`` as the released file does). Qwen3-VL / Qwen3.5 (patch 16, factor
    32, mean = std = 0.5): the video budget counts every sampled frame (the Qwen3-VL video
    processor's ``smart_resize`` multiplies by the frame count): 4096 .. 16 frames x 64 cells x 32^2
    px. All bicubic (``resample`` 3), rescale 1/255."""
    if family == "qwen2.5-vl":
        factor = 28
        image = {
            "min_pixels": 4 * factor * factor, "max_pixels": 256 * factor * factor, "patch_size": 14,
            "temporal_patch_size": 2, "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        }
        video = {
            "size": {"shortest_edge": 4 * factor * factor, "longest_edge": 64 * factor * factor},
            "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD, "do_resize": True, "resample": 3, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True, "do_sample_frames": False,
            "min_frames": 4, "max_frames": 768,
            "video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2_5_VLProcessor",
        }
        return {"preprocessor_config.json": image, "video_preprocessor_config.json": video}
    factor = 32
    processor_class = "Qwen3VLProcessor"
    image = {
        "size": {"longest_edge": 256 * factor * factor, "shortest_edge": 4 * factor * factor},
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "processor_class": processor_class,
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }
    video = {
        "size": {"longest_edge": 16 * 64 * factor * factor, "shortest_edge": 4096},
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "do_resize": True, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True, "do_sample_frames": True,
        "fps": 2, "min_frames": 4, "max_frames": 768,
        "processor_class": processor_class, "video_processor_type": "Qwen3VLVideoProcessor",
    }
    return {"preprocessor_config.json": image, "video_preprocessor_config.json": video}


# --------------------------------------------------------------------------------------------------
# models

def _common_ids() -> dict:
    return dict(image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID,
                vision_start_token_id=VISION_START_ID, vision_end_token_id=VISION_END_ID)


def _text_ids() -> dict:
    return dict(vocab_size=VOCAB, bos_token_id=SPECIAL_IDS["<|endoftext|>"], eos_token_id=SPECIAL_IDS["<|im_end|>"],
                pad_token_id=SPECIAL_IDS["<|endoftext|>"])


def qwen_model(family: str, *, seed: int = 0, attn_implementation: Optional[str] = None):
    """A tiny random ``...ForConditionalGeneration`` of ``family`` (see the module table), in eval mode."""
    torch.manual_seed(seed)
    vision_common = dict(hidden_size=VISION_HIDDEN, intermediate_size=2 * VISION_HIDDEN, num_heads=VISION_HEADS,
                         depth=VISION_DEPTH, in_channels=3, spatial_merge_size=2, temporal_patch_size=2,
                         out_hidden_size=TEXT_HIDDEN, initializer_range=0.02)
    text_common = dict(hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN, num_hidden_layers=TEXT_LAYERS,
                       num_attention_heads=TEXT_HEADS, num_key_value_heads=TEXT_KV_HEADS,
                       max_position_embeddings=4096, **_text_ids())
    if family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model

        vision = dict(vision_common, patch_size=14, window_size=56, fullatt_block_indexes=[1, 3],
                      tokens_per_second=2, hidden_act="silu")
        text = dict(text_common, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                  "mrope_section": [2, 3, 3]})  # head_dim 16 -> 8 pairs
        config = Config(vision_config=vision, text_config=text, **_common_ids())
    elif family == "qwen3-vl":
        from transformers import Qwen3VLConfig as Config, Qwen3VLForConditionalGeneration as Model

        vision = dict(vision_common, patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[1, 2],
                      hidden_act="gelu_pytorch_tanh")
        text = dict(text_common, head_dim=16, rope_parameters={
            "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True})
        config = Config(vision_config=vision, text_config=text, **_common_ids())
    elif family == "qwen3.5":
        from transformers import Qwen3_5Config as Config, Qwen3_5ForConditionalGeneration as Model

        vision = dict(vision_common, patch_size=16, num_position_embeddings=64, hidden_act="gelu_pytorch_tanh")
        text = dict(text_common, head_dim=32, layer_types=["linear_attention", "full_attention"],
                    linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8,
                    linear_num_key_heads=2, linear_num_value_heads=4,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                     "mrope_section": [2, 1, 1], "mrope_interleaved": True})  # 32*0.25/2 = 4
        config = Config(vision_config=vision, text_config=text, **_common_ids())
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if attn_implementation:
        config._attn_implementation = attn_implementation
    model = Model(config)
    return model.eval()


def build_qwen(out: Path, family: str, *, seed: int = 0, max_shard_size: Optional[str] = None) -> Path:
    """Write a tiny ``family`` checkpoint to ``out`` (created if missing) and return it:
    ``config.json``, ``model.safetensors`` (or shards plus ``model.safetensors.index.json`` when
    ``max_shard_size`` is given, e.g. ``"200KB"``), ``generation_config.json``, the tokenizer files
    and the two processor configs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = qwen_model(family, seed=seed)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    save_qwen_tokenizer(out, family)
    for name, data in processor_configs(family).items():
        _write_json(out / name, data)
    return out


def build_qwen2_5_vl(out: Path, **kwargs) -> Path:
    return build_qwen(out, "qwen2.5-vl", **kwargs)


def build_qwen3_vl(out: Path, **kwargs) -> Path:
    return build_qwen(out, "qwen3-vl", **kwargs)


def build_qwen3_5(out: Path, **kwargs) -> Path:
    return build_qwen(out, "qwen3.5", **kwargs)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build a tiny random Qwen-family checkpoint.")
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", default=None, help="e.g. 200KB: write shards and an index")
    args = parser.parse_args(argv)
    path = build_qwen(args.out, args.family, seed=args.seed, max_shard_size=args.shard_size)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
