"""Image preprocessing in torch that reproduces the transformers image processors used by the
supported towers (values and geometry), so frames never round-trip through PIL.

Steps, in the processors' order: resize (exact ``height x width``, shortest edge, or SigLIP2's
"fit within ``max_num_patches`` patches"), centre crop, rescale (``x / 255``), normalise
(``(x - mean) / std``). Resizing uses ``F.interpolate(..., antialias=True)`` (for bicubic the
antialiased kernel is PIL's ``a = -0.5`` cubic) in two separable passes, width then height, each
rounded and clamped to 0..255, because the reference processors resize ``uint8`` images and PIL
keeps its intermediate image in ``uint8``.
The centre-crop offset is ``(size - crop) // 2`` as in transformers' numpy/PIL backend.

Settings come from the checkpoint's ``preprocessor_config.json`` (or, for LLaVA checkpoints,
``video_preprocessor_config.json`` first) when present, else from the family's published
defaults (see the ``*_SPEC`` constants).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

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


def as_frame_tensor(frames: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """``frames`` as a uint8 tensor [F, H, W, 3]; raises ValueError (one line) otherwise."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"frames must be a uint8 array [F,H,W,3], got {type(frames).__name__}")
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3 or tensor.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [F,H,W,3] with F >= 1, got {tensor.dtype} {list(tensor.shape)}")
    return tensor


def _resize(images: torch.Tensor, size: Tuple[int, int], mode: str) -> torch.Tensor:
    """Resize float images [F,3,H,W] holding 0..255 values like PIL resizes a uint8 image: two
    separable passes, width first, each rounded and clamped to 0..255 (PIL keeps the
    intermediate image in uint8, which matters where bicubic overshoots)."""
    height, width = images.shape[-2:]
    if mode == "nearest":
        return F.interpolate(images, size=size, mode="nearest-exact") if (height, width) != tuple(size) else images
    if width != size[1]:
        images = F.interpolate(images, size=(height, size[1]), mode=mode, align_corners=False, antialias=True)
        images = images.round_().clamp_(0.0, 255.0)
    if height != size[0]:
        images = F.interpolate(images, size=(size[0], size[1]), mode=mode, align_corners=False, antialias=True)
        images = images.round_().clamp_(0.0, 255.0)
    return images


def _center_crop(images: torch.Tensor, crop: Tuple[int, int]) -> torch.Tensor:
    """Centre crop [F,3,H,W] to ``crop``, zero-padding (as transformers does) when it is larger."""
    height, width = images.shape[-2:]
    ch, cw = crop
    if ch > height or cw > width:
        pad_h, pad_w = max(ch - height, 0), max(cw - width, 0)
        top, left = (pad_h + 1) // 2, (pad_w + 1) // 2
        images = F.pad(images, (left, pad_w - left, top, pad_h - top))
        height, width = images.shape[-2:]
    top, left = (height - ch) // 2, (width - cw) // 2
    return images[..., top : top + ch, left : left + cw]


def to_device(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``frames`` on ``device``. To CUDA the uint8 frames (a quarter of the float bytes) go through
    pinned host memory with an asynchronous copy, so the host thread moves on while the copy runs
    (the copy is ordered before the resize on the same stream; torch's pinned-memory allocator
    keeps the staging buffer until the copy has finished)."""
    if device.type != "cuda" or frames.device.type != "cpu":
        return frames.to(device)
    return frames.pin_memory().to(device, non_blocking=True)


def preprocess_frames(
    frames: Union[np.ndarray, torch.Tensor],
    spec: ImageSpec,
    device: torch.device,
    dtype: torch.dtype,
    chunk: int = 16,
) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] (RGB) -> pixel values float [F, 3, h, w] on ``device`` in
    ``dtype``; ``(h, w) = spec.output_size(H, W)``. Works ``chunk`` frames at a time so that
    full-resolution float copies of the whole video never exist at once."""
    frames = as_frame_tensor(frames)
    height, width = int(frames.shape[1]), int(frames.shape[2])
    resized = spec.resized_size(height, width)
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for part in frames.split(max(1, chunk)):
        images = to_device(part, device).permute(0, 3, 1, 2).to(torch.float32)
        images = _resize(images, resized, spec.resample)
        if spec.crop is not None:
            images = _center_crop(images, spec.crop)
        images = (images * spec.rescale - mean) / std
        out.append(images.to(dtype).contiguous())
    return torch.cat(out)
