"""How a checkpoint's image processor turns frames into pixel values (:class:`ImageSpec`): read
from ``preprocessor_config.json`` or the family's published defaults. Plain settings, no torch;
:mod:`aot_cli.models.preprocess` applies them to frames.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from aot_cli.models.errors import ModelLoadError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

# PIL resampling codes as stored in preprocessor_config.json -> torch interpolate modes.
# LANCZOS (1), BOX (4) and HAMMING (5) have no torch equivalent and are approximated.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}
_RESAMPLE_EXACT = {0, 2, 3}
_RESAMPLE_NAMES = {"nearest": 0, "bilinear": 2, "bicubic": 3}


@dataclass(frozen=True)
class ImageSpec:
    """How frames become pixel values.

    ``resize``: "exact" (to ``size`` = (height, width)), "shortest_edge" (shorter side to
    ``shortest_edge``, longer side ``int(s * long / short)``), "max_patches" (SigLIP2 naflex:
    largest aspect-preserving size, multiple of ``patch_size``, with at most ``max_patches``
    patches) or "none". ``crop``: centre crop (height, width) or None. ``resample``: "bicubic",
    "bilinear" or "nearest". ``rescale``: factor applied after resizing. ``mean``/``std``:
    per-channel normalisation. ``origin``: where the settings came from (for provenance).
    """

    resize: str
    size: Optional[Tuple[int, int]] = None
    shortest_edge: Optional[int] = None
    crop: Optional[Tuple[int, int]] = None
    resample: str = "bicubic"
    rescale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = HALF
    std: Tuple[float, float, float] = HALF
    max_patches: Optional[int] = None
    patch_size: Optional[int] = None
    origin: str = "defaults"
    note: Optional[str] = None

    def resized_size(self, height: int, width: int) -> Tuple[int, int]:
        """(height, width) after the resize step for a ``height x width`` input."""
        if self.resize == "exact":
            assert self.size is not None
            return self.size
        if self.resize == "shortest_edge":
            assert self.shortest_edge is not None
            return shortest_edge_size(height, width, self.shortest_edge)
        if self.resize == "max_patches":
            assert self.patch_size is not None and self.max_patches is not None
            return size_for_max_patches(height, width, self.patch_size, self.max_patches)
        return height, width

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """(height, width) of the pixel values for a ``height x width`` input."""
        return self.crop if self.crop is not None else self.resized_size(height, width)

    def to_dict(self) -> dict:
        """JSON-ready description (tuples become lists)."""
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def square_spec(size: int, mean: Sequence[float] = HALF, std: Sequence[float] = HALF) -> ImageSpec:
    """SigLIP-style defaults: exact ``size x size`` bicubic resize, /255, mean = std = 0.5."""
    return ImageSpec(resize="exact", size=(size, size), mean=tuple(mean), std=tuple(std))


def clip_spec(size: int) -> ImageSpec:
    """CLIP defaults: shortest edge ``size`` bicubic, centre crop ``size``, OpenAI CLIP mean/std."""
    return ImageSpec(
        resize="shortest_edge", shortest_edge=size, crop=(size, size), mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD
    )


def dinov2_spec() -> ImageSpec:
    """DINOv2 defaults: shortest edge 256 bicubic, centre crop 224, ImageNet mean/std."""
    return ImageSpec(resize="shortest_edge", shortest_edge=256, crop=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)


def naflex_spec(patch_size: int, max_patches: int = 256) -> ImageSpec:
    """SigLIP2 naflex defaults: fit within ``max_patches`` patches, bilinear, mean = std = 0.5."""
    return ImageSpec(resize="max_patches", resample="bilinear", max_patches=max_patches, patch_size=patch_size)


def shortest_edge_size(height: int, width: int, edge: int) -> Tuple[int, int]:
    """Shorter side to ``edge``, longer side ``int(edge * long / short)`` (torchvision's rule)."""
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


def size_for_max_patches(height: int, width: int, patch: int, max_patches: int, eps: float = 1e-5) -> Tuple[int, int]:
    """SigLIP2 naflex target size: the largest scale (found by bisection down to ``eps``) at
    which both sides, rounded up to a multiple of ``patch`` (at least one patch), give at most
    ``max_patches`` patches."""

    def side(scale: float, length: int) -> int:
        return max(patch, int(math.ceil(length * scale / patch) * patch))

    low, high = eps / 10, 100.0
    while high - low >= eps:
        mid = (low + high) / 2
        if (side(mid, height) // patch) * (side(mid, width) // patch) <= max_patches:
            low = mid
        else:
            high = mid
    return side(low, height), side(low, width)


def _pair(value: Any, where: str, key: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    raise ModelLoadError(f"{where}: unsupported {key} {value!r} (expected height/width)")


def spec_from_processor_config(config: dict, default: ImageSpec, where: str) -> ImageSpec:
    """An :class:`ImageSpec` from a ``preprocessor_config.json`` dict; keys it lacks keep the
    values of ``default``. ``where`` (the file) is named in errors and recorded as ``origin``."""
    spec = dataclasses.replace(default, origin=where)
    notes = []
    if "max_num_patches" in config or default.resize == "max_patches":
        spec = dataclasses.replace(
            spec, resize="max_patches", size=None, shortest_edge=None, crop=None,
            max_patches=int(config.get("max_num_patches", default.max_patches or 256)),
            patch_size=int(config.get("patch_size", default.patch_size or 16)),
        )
    elif config.get("do_resize", True) is False:
        spec = dataclasses.replace(spec, resize="none", size=None, shortest_edge=None)
    elif "size" in config:
        size = config["size"]
        if isinstance(size, int) or (isinstance(size, dict) and set(size) == {"shortest_edge"}):
            edge = size if isinstance(size, int) else size["shortest_edge"]
            spec = dataclasses.replace(spec, resize="shortest_edge", shortest_edge=int(edge), size=None)
        else:
            spec = dataclasses.replace(spec, resize="exact", size=_pair(size, where, "size"), shortest_edge=None)
    if spec.resize != "max_patches":
        if config.get("do_center_crop") is False:
            spec = dataclasses.replace(spec, crop=None)
        elif config.get("do_center_crop") is True or (config.get("crop_size") and "do_center_crop" not in config):
            crop = config.get("crop_size") or default.crop
            spec = dataclasses.replace(spec, crop=_pair(crop, where, "crop_size") if crop else None)
    if "resample" in config and config["resample"] is not None:
        code = config["resample"]
        code = _RESAMPLE_NAMES.get(code, code) if isinstance(code, str) else code
        if code not in _RESAMPLE:
            raise ModelLoadError(f"{where}: unsupported resample {config['resample']!r}")
        if code not in _RESAMPLE_EXACT:
            notes.append(f"PIL resample {code} approximated by {_RESAMPLE[code]}")
        spec = dataclasses.replace(spec, resample=_RESAMPLE[code])
    if config.get("do_rescale", True) is False:
        spec = dataclasses.replace(spec, rescale=1.0)
    elif "rescale_factor" in config:
        spec = dataclasses.replace(spec, rescale=float(config["rescale_factor"]))
    if config.get("do_normalize", True) is False:
        spec = dataclasses.replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    else:
        if config.get("image_mean") is not None:
            spec = dataclasses.replace(spec, mean=_triple(config["image_mean"], where, "image_mean"))
        if config.get("image_std") is not None:
            spec = dataclasses.replace(spec, std=_triple(config["image_std"], where, "image_std"))
    return dataclasses.replace(spec, note="; ".join(notes) or None)


def _triple(value: Any, where: str, key: str) -> Tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    raise ModelLoadError(f"{where}: {key} must be a number or 3 numbers, got {value!r}")
