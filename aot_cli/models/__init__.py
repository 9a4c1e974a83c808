"""Vision towers behind one interface (:class:`VisionAdapter`): SigLIP, SigLIP2 (naflex), CLIP,
DINOv2, and the vision side of LLaVA-OneVision / LLaVA-Video in both the transformers and the
original LLaVA-NeXT checkpoint formats.

    adapter = load_model(ModelConfig(model="google/siglip-so400m-patch14-384"))
    pixels = adapter.preprocess(frames)          # uint8 [F,H,W,3] -> [F,3,S,S]
    out = adapter.encode(pixels)                 # tokens [F,N,D], shallow/deep scores [F,N]
"""
from aot_cli.models.adapter import Tower, TowerOutput, VisionAdapter
from aot_cli.models.errors import ModelLoadError
from aot_cli.models.loader import load_model
from aot_cli.models.profiles import PROFILES, ModelProfile
from aot_cli.models.source import NAMED_MODELS, register_named_model

__all__ = [
    "load_model",
    "VisionAdapter",
    "ModelProfile",
    "TowerOutput",
    "ModelLoadError",
    "Tower",
    "PROFILES",
    "NAMED_MODELS",
    "register_named_model",
]
