"""Tiny random checkpoints for tests, written with ``save_pretrained`` (no model hub needed).

Every builder takes a target directory, writes a complete checkpoint there (config, weights,
preprocessor config) and returns the directory. Defaults: patch 14, 126 px -> 9x9 = 81 patches,
hidden 32, 4 heads, 6 layers (so the default score layers (5, -2) exist), MLP 4x wide.
Seeds are fixed, so the same call gives the same weights.

- :func:`build_siglip`       SiglipVisionModel (or a full SiglipModel with ``full_model=True``)
- :func:`build_siglip2`      Siglip2VisionModel (naflex)
- :func:`build_clip`         CLIPVisionModel (or a full CLIPModel); runs ``layers - 1`` layers
- :func:`build_dinov2`       Dinov2Model (or Dinov2WithRegistersModel with ``registers > 0``)
- :func:`build_llava_hf`     LlavaOnevisionForConditionalGeneration with a tiny Qwen2, sharded
- :func:`build_llava_next`   the same weights in the lmms-lab LLaVA-NeXT layout, sharded, plus
                             dummy language-model shards
- :func:`save_tiny_tokenizer` a word-level tokenizer with a chat template for the tiny LLaVA
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import torch

PATCH = 14
IMAGE = 126  # 9 x 9 patches
HIDDEN = 32
HEADS = 4
LAYERS = 6
TEXT_HIDDEN = 48
# LLaVA-NeXT checkpoints do not record the tower's head count; loaders assume SigLIP-so400m's 16.
LLAVA_HIDDEN = 64
LLAVA_HEADS = 16
# The tiny LLM's vocabulary and placeholder ids (see llava_hf_model).
LLAVA_VOCAB, LLAVA_IMAGE_ID, LLAVA_VIDEO_ID = 128, 120, 121


def _vision_kwargs(image_size: int, hidden: int, layers: int, heads: int) -> dict:
    return dict(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, image_size=image_size, patch_size=PATCH,
    )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def siglip_processor_config(size: int) -> dict:
    """SigLIP ``preprocessor_config.json``: exact size, bicubic, /255, mean = std = 0.5."""
    return {
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }


def build_siglip(
    out: Path, *, image_size: int = IMAGE, hidden: int = HIDDEN, layers: int = LAYERS, heads: int = HEADS,
    full_model: bool = False, seed: int = 0,
) -> Path:
    """A tiny SigLIP vision tower (``full_model``: a SiglipModel with a text tower as well)."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(**_vision_kwargs(image_size, hidden, layers, heads))
    if full_model:
        text = SiglipTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                                num_attention_heads=heads, vocab_size=64, max_position_embeddings=16)
        model = SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict()))
    else:
        model = SiglipVisionModel(vision)
    model.save_pretrained(out)
    _write_json(Path(out) / "preprocessor_config.json", siglip_processor_config(image_size))
    return Path(out)


def build_siglip2(out: Path, *, hidden: int = HIDDEN, layers: int = LAYERS, heads: int = HEADS,
                  patch: int = 16, num_patches: int = 64, max_num_patches: int = 64, seed: int = 0) -> Path:
    """A tiny SigLIP2 naflex vision tower (8x8 position table, at most 64 patches per frame)."""
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(seed)
    config = Siglip2VisionConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads, patch_size=patch, num_patches=num_patches)
    Siglip2VisionModel(config).save_pretrained(out)
    _write_json(Path(out) / "preprocessor_config.json", {
        "image_processor_type": "Siglip2ImageProcessor", "do_resize": True, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "patch_size": patch, "max_num_patches": max_num_patches,
    })
    return Path(out)


def build_clip(out: Path, *, image_size: int = IMAGE, hidden: int = HIDDEN, layers: int = LAYERS + 1,
               heads: int = HEADS, full_model: bool = False, seed: int = 0) -> Path:
    """A tiny CLIP vision tower (``layers - 1`` of its layers run); CLIP processor settings."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(**_vision_kwargs(image_size, hidden, layers, heads))
    if full_model:
        text = CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                              num_attention_heads=heads, vocab_size=64, max_position_embeddings=16)
        model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict()))
    else:
        model = CLIPVisionModel(vision)
    model.save_pretrained(out)
    _write_json(Path(out) / "preprocessor_config.json", {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    })
    return Path(out)


def build_dinov2(out: Path, *, crop: int = IMAGE, resize: int = 144, hidden: int = HIDDEN, layers: int = LAYERS,
                 heads: int = HEADS, registers: int = 0, seed: int = 0) -> Path:
    """A tiny DINOv2 (``registers > 0``: with register tokens); shortest edge ``resize``, crop ``crop``."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(seed)
    kwargs = _vision_kwargs(crop, hidden, layers, heads)
    kwargs.pop("intermediate_size")
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**kwargs, num_register_tokens=registers))
    else:
        model = Dinov2Model(Dinov2Config(**kwargs))
    model.save_pretrained(out)
    _write_json(Path(out) / "preprocessor_config.json", {
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": resize},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": crop, "width": crop}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    })
    return Path(out)


def llava_hf_model(*, image_size: int = IMAGE, hidden: int = LLAVA_HIDDEN, layers: int = LAYERS,
                   heads: int = LLAVA_HEADS, text_hidden: int = TEXT_HIDDEN, seed: int = 0,
                   attn_implementation: Optional[str] = None):
    """A tiny random ``LlavaOnevisionForConditionalGeneration`` (SigLIP tower with 16 heads like
    so400m, 1-layer Qwen2)."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config,
                              SiglipVisionConfig)

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(**_vision_kwargs(image_size, hidden, layers, heads), vision_use_head=False)
    text = Qwen2Config(hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=LLAVA_VOCAB)
    config = LlavaOnevisionConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_token_index=LLAVA_IMAGE_ID, video_token_index=LLAVA_VIDEO_ID,
    )
    if attn_implementation:
        config._attn_implementation = attn_implementation
    model = LlavaOnevisionForConditionalGeneration(config)
    with torch.no_grad():  # a visible newline (the default init is tiny but not zero)
        model.model.image_newline.normal_()
    return model.eval()


def build_llava_hf(out: Path, *, name_or_path: Optional[str] = None, max_shard_size: str = "60KB", **kwargs) -> Path:
    """A tiny LLaVA-OneVision checkpoint in the transformers format, sharded (an index exists),
    with SigLIP ``preprocessor_config.json`` (384 -> ``image_size``). ``name_or_path`` is
    written as ``_name_or_path`` (e.g. to look like a LLaVA-Video checkpoint)."""
    image_size = kwargs.get("image_size", IMAGE)
    model = llava_hf_model(**kwargs)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    _write_json(Path(out) / "preprocessor_config.json", siglip_processor_config(image_size))
    if name_or_path is not None:
        config = json.loads((Path(out) / "config.json").read_text())
        config["_name_or_path"] = name_or_path
        _write_json(Path(out) / "config.json", config)
    return Path(out)


def next_state_dict(model) -> Dict[str, torch.Tensor]:
    """The vision-side tensors of a transformers LLaVA-OneVision ``model`` under lmms-lab
    LLaVA-NeXT names (tower, ``mm_projector.0/2``, ``image_newline``)."""
    inner = model.model
    tower = inner.vision_tower
    core = getattr(tower, "vision_model", tower)
    state: Dict[str, torch.Tensor] = {}
    for key, value in core.state_dict().items():
        if key.startswith("head."):
            continue
        state[f"model.vision_tower.vision_tower.vision_model.{key}"] = value.detach().clone().contiguous()
    projector = inner.multi_modal_projector
    for index, linear in ((0, projector.linear_1), (2, projector.linear_2)):
        state[f"model.mm_projector.{index}.weight"] = linear.weight.detach().clone().contiguous()
        state[f"model.mm_projector.{index}.bias"] = linear.bias.detach().clone().contiguous()
    state["model.image_newline"] = inner.image_newline.detach().clone().contiguous()
    return state


def dummy_llm_state(text_hidden: int = TEXT_HIDDEN, vocab: int = 128, seed: int = 1) -> Dict[str, torch.Tensor]:
    """Language-model tensors with lmms-lab names; a loader must never read them."""
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(vocab, text_hidden, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(text_hidden, text_hidden, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(2 * text_hidden, text_hidden, generator=g),
        "model.norm.weight": torch.ones(text_hidden),
        "lm_head.weight": torch.randn(vocab, text_hidden, generator=g),
    }


def build_llava_next(out: Path, *, video: bool = False, seed: int = 0, **kwargs) -> Path:
    """The tiny LLaVA model of :func:`llava_hf_model` (same ``seed``/``kwargs`` -> same weights)
    in the LLaVA-NeXT layout: ``config.json`` with ``mm_*`` keys (``video``: LLaVA-Video's
    ``grid`` newline and ``average`` pooling), and three shards: ``model-00001`` the tower's
    embeddings and layers plus two LLM tensors, ``model-00002`` only LLM tensors, ``model-00003``
    the remaining tower tensors, projector and newline. No preprocessor config (LLaVA-NeXT
    checkpoints rely on the SigLIP defaults)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = llava_hf_model(seed=seed, **kwargs)
    vision = next_state_dict(model)
    llm = dummy_llm_state(text_hidden=kwargs.get("text_hidden", TEXT_HIDDEN))
    llm_names = sorted(llm)
    first = {k: v for k, v in vision.items() if ".encoder.layers." in k or ".embeddings." in k}
    first.update({k: llm[k] for k in llm_names[:2]})
    second = {k: llm[k] for k in llm_names[2:]}
    third = {k: v for k, v in vision.items() if k not in first}
    shards = {"model-00001-of-00003.safetensors": first, "model-00002-of-00003.safetensors": second,
              "model-00003-of-00003.safetensors": third}
    weight_map = {}
    for filename, tensors in shards.items():
        save_file(tensors, str(out / filename), metadata={"format": "pt"})
        weight_map.update({k: filename for k in tensors})
    _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": 0}, "weight_map": weight_map})
    vision_cfg = model.config.vision_config
    _write_json(out / "config.json", {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava",
        "hidden_size": model.config.text_config.hidden_size,
        "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_hidden_size": vision_cfg.hidden_size,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad", "mm_spatial_pool_mode": "average" if video else "bilinear",
        "mm_newline_position": "grid" if video else "one_token", "image_aspect_ratio": "anyres_max_9",
    })
    return out


#: A Qwen-style chat template: a user turn with a video gets "<video>" then "\n" + its text.
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'video' %}<video>{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ '\n' + c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\n' }}{% endif %}"
)


def save_tiny_tokenizer(out: Path) -> Path:
    """A word-level tokenizer covering all 128 ids of the tiny LLM (so any generated id decodes),
    with <image>=120 and <video>=121 as special tokens and a Qwen-style chat template, saved next
    to the model so AutoTokenizer loads it from the checkpoint directory (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    named = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "user", "assistant", "what", "is", "in", "the",
             "video", "?", "a", "bike", "car"]
    vocab = {t: i for i, t in enumerate(named)}
    vocab.update({f"w{i}": i for i in range(len(named), LLAVA_VOCAB) if i not in (LLAVA_IMAGE_ID, LLAVA_VIDEO_ID)})
    vocab.update({"<image>": LLAVA_IMAGE_ID, "<video>": LLAVA_VIDEO_ID})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<|im_end|>",
                                        extra_special_tokens=["<|im_start|>", "<image>", "<video>"])
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out
