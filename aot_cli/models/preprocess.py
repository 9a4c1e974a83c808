"""Image preprocessing in torch that reproduces the transformers image processors used by the
supported towers (values and geometry), so frames never round-trip through PIL.

Steps, in the processors' order: resize (exact ``height x width``, shortest edge, or SigLIP2's
"fit within ``max_num_patches`` patches"), centre crop, rescale (``x / 255``), normalise
(``(x - mean) / std``). Resizing uses ``F.interpolate(..., antialias=True)`` (for bicubic the
antialiased kernel is PIL's ``a = -0.5`` cubic) in two separable passes, width then height, each
rounded and clamped to 0..255, because the reference processors resize ``uint8`` images and PIL
keeps its intermediate image in ``uint8``.
The centre-crop offset is ``(size - crop) // 2`` as in transformers' numpy/PIL backend.

Settings (:class:`~aot_cli.models.image_spec.ImageSpec`) come from the checkpoint's ``preprocessor_config.json`` (or, for LLaVA checkpoints,
``video_preprocessor_config.json`` first) when present, else from the family's published
defaults (see the ``*_SPEC`` constants).
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from aot_cli.models.image_spec import (HALF, IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN,  # noqa: F401 (re-exported)
                                       OPENAI_CLIP_STD, ImageSpec, clip_spec, dinov2_spec, naflex_spec,
                                       shortest_edge_size, size_for_max_patches, spec_from_processor_config,
                                       square_spec)

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
