"""Vision towers behind one interface (:class:`VisionAdapter`): SigLIP, SigLIP2 (naflex), CLIP,
DINOv2, and the vision side of LLaVA-OneVision / LLaVA-Video in both the transformers and the
original LLaVA-NeXT checkpoint formats.

    adapter = load_model(ModelConfig(model="google/siglip-so400m-patch14-384"))
    pixels = adapter.preprocess(frames)          # uint8 [F,H,W,3] -> [F,3,S,S]
    out = adapter.encode(pixels)                 # tokens [F,N,D], shallow/deep scores [F,N]
"""
from aot_cli._lazy import lazy_exports

# public name -> the submodule defining it, imported on first use (torch and transformers load
# with the adapters and loaders, not with the errors, profiles and sources the flag checks use)
lazy_exports(__name__, {
    "Tower": "adapter", "TowerOutput": "adapter", "VisionAdapter": "adapter",
    "ModelLoadError": "errors", "load_model": "loader", "PROFILES": "profiles", "ModelProfile": "profiles",
    "NAMED_MODELS": "source", "register_named_model": "source",
})

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
