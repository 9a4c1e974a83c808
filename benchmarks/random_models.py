"""Random-weight LLaVA-OneVision checkpoints (transformers format) for benchmarks.

Model hubs are not reachable everywhere the benchmarks run, and speed and memory do not depend
on the weights, so the benchmarks build checkpoints with the real geometry and random weights:

    python benchmarks/random_models.py PRESET OUT_DIR

Presets (tower width / layers / heads / MLP, projector output D; 384 px, patch 14, 27x27 unless said):

- ``smoke``     64 / 6 / 4 / 256,      D=48,   126 px (9x9 patches), with a 1-layer language model
                (``benchmarks/gpu.sh --tiny``: every step in seconds on a CPU)
- ``tiny``      64 / 6 / 4 / 256,      D=64,   with a 1-layer language model (smoke runs)
- ``mid``       384 / 12 / 6 / 1536,   D=896,  with a 1-layer language model (ratios on 2 CPU cores)
- ``so400m``    1152 / 26 / 16 / 4304, D=896,  with a 1-layer language model
                (the vision side of llava-onevision-qwen2-0.5b-ov-hf)
- ``so400m-7b`` 1152 / 26 / 16 / 4304, D=3584, vision side only (llava-onevision-qwen2-7b-ov-hf)
- ``geometry-7b`` 64 / 6 / 4 / 256,    D=3584, vision side only: the 7B model's output geometry
                (27x27 tower grid, 14x14 pooled, D=3584) with a cheap tower, for cache sizes

"with a 1-layer language model": a complete ``LlavaOnevisionForConditionalGeneration`` (the
language model is a 1-layer Qwen2 of width D, vocabulary 128), loadable with ``from_pretrained``
as the baseline does. "vision side only": ``config.json`` is the full LLaVA-OneVision config, but
the weight file holds only the tower, projector and ``image_newline`` (what ``aot`` reads), so a
7B-wide projector costs 50 MB instead of a 7B model.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import torch


@dataclass(frozen=True)
class Geometry:
    """Tower and projector sizes of a random LLaVA-OneVision checkpoint."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    text_hidden: int
    text_heads: int
    text_kv_heads: int
    language_model: bool
    image_size: int = 384
    patch_size: int = 14


PRESETS: Dict[str, Geometry] = {
    "smoke": Geometry(64, 6, 4, 256, 48, 4, 2, True, image_size=126),
    "tiny": Geometry(64, 6, 4, 256, 64, 4, 2, True),
    "mid": Geometry(384, 12, 6, 1536, 896, 14, 2, True),
    "so400m": Geometry(1152, 26, 16, 4304, 896, 14, 2, True),
    "so400m-7b": Geometry(1152, 26, 16, 4304, 3584, 28, 4, False),
    "geometry-7b": Geometry(64, 6, 4, 256, 3584, 28, 4, False),
}


def llava_config(geo: Geometry):
    """A ``LlavaOnevisionConfig`` with a SigLIP tower (no head) and a 1-layer Qwen2 of width D."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=geo.vision_hidden, intermediate_size=geo.vision_mlp, num_hidden_layers=geo.vision_layers,
        num_attention_heads=geo.vision_heads, image_size=geo.image_size, patch_size=geo.patch_size,
        vision_use_head=False,
    )
    text = Qwen2Config(hidden_size=geo.text_hidden, intermediate_size=2 * geo.text_hidden, num_hidden_layers=1,
                       num_attention_heads=geo.text_heads, num_key_value_heads=geo.text_kv_heads, vocab_size=128)
    return LlavaOnevisionConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_token_index=120, video_token_index=121,
    )


def processor_config(size: int) -> dict:
    """SigLIP preprocessing: resize to ``size`` square (bicubic), /255, mean = std = 0.5."""
    return {
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }


def vision_side_tensors(geo: Geometry, seed: int) -> Dict[str, torch.Tensor]:
    """Tower, projector and newline tensors under transformers LLaVA-OneVision names."""
    from transformers import SiglipVisionModel

    torch.manual_seed(seed)
    tower = SiglipVisionModel(llava_config(geo).vision_config)
    core = getattr(tower, "vision_model", tower)
    tensors = {f"model.vision_tower.vision_model.{k}": v.contiguous() for k, v in core.state_dict().items()
               if not k.startswith("head.")}
    linear_1 = torch.nn.Linear(geo.vision_hidden, geo.text_hidden)
    linear_2 = torch.nn.Linear(geo.text_hidden, geo.text_hidden)
    for name, linear in (("linear_1", linear_1), ("linear_2", linear_2)):
        tensors[f"model.multi_modal_projector.{name}.weight"] = linear.weight.detach().contiguous()
        tensors[f"model.multi_modal_projector.{name}.bias"] = linear.bias.detach().contiguous()
    tensors["model.image_newline"] = torch.randn(geo.text_hidden)
    return tensors


def write_checkpoint(preset: str, out: Path, seed: int = 0) -> Path:
    """Write the ``preset`` checkpoint to ``out`` (created) and return ``out``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    geo = PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if geo.language_model:
        from transformers import LlavaOnevisionForConditionalGeneration

        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(llava_config(geo))
        with torch.no_grad():
            model.model.image_newline.normal_()
        model.save_pretrained(out)
    else:
        from safetensors.torch import save_file

        save_file(vision_side_tensors(geo, seed), str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(llava_config(geo).to_dict(), indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(processor_config(geo.image_size), indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_checkpoint(args.preset, args.out, args.seed))


if __name__ == "__main__":
    main()
