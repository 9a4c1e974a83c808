"""Video preprocessing of the Qwen-family processors (Qwen2.5-VL, Qwen3-VL, Qwen3.5), in torch.

transformers' video processors need torchvision, which cannot load beside every torch build, so
the steps of ``Qwen2VLVideoProcessor`` (Qwen2.5-VL) and ``Qwen3VLVideoProcessor`` (Qwen3-VL,
Qwen3.5) are done here with the same rules:

1. Size: ``smart_resize`` -- both sides multiples of ``factor = patch_size * merge_size``, the
   aspect ratio kept as closely as possible, the pixel count inside the budget
   ``[shortest_edge, longest_edge]`` of the checkpoint's processor config. Qwen2.5-VL's budget is
   per frame (``h * w``); Qwen3-VL's counts every sampled frame (``round(F / temporal) * temporal
   * h * w``), so longer videos get smaller frames. The rounding rule itself is transformers' own
   ``smart_resize`` of the matching processor module (imported, not copied).
2. Resize: bicubic with antialias in one ``F.interpolate`` call on float values, clamped to 0..255
   and rounded to integers, as torchvision's resize of a uint8 video does.
3. Rescale and normalise fused as the processors do: ``(x - mean / rescale) / (std / rescale)``.
4. Temporal patches: an odd frame count repeats the last frame; frames ``2k, 2k+1`` form temporal
   patch ``k``.
5. Patchify in the processor's order: temporal patch, then 2x2 merge block (row-major over the
   merged grid), then the position inside the block, each patch flattened as
   ``(channel, temporal, row, col)``.

Settings come from the checkpoint: ``processor_config.json`` (its ``video_processor`` entry),
else ``video_preprocessor_config.json``, else ``preprocessor_config.json`` -- the order
transformers' ``AutoVideoProcessor`` reads them in; ``min_pixels`` / ``max_pixels`` override
``size`` as in the processors' constructors; absent keys take the processor class defaults.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from aot_cli.models.errors import ModelLoadError
from aot_cli.models.image_spec import HALF, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

#: Where the processor settings are read from, in order (``processor_config.json`` only when it
#: holds a ``video_processor`` entry).
PROCESSOR_FILES = ("processor_config.json", "video_preprocessor_config.json", "preprocessor_config.json")
#: The processor classes' defaults: Qwen2VLVideoProcessor (Qwen2.5-VL) and Qwen3VLVideoProcessor.
_DEFAULTS = {
    "frame": dict(patch_size=14, merge_size=2, temporal_patch_size=2, shortest_edge=128 * 28 * 28,
                  longest_edge=768 * 28 * 28, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                  processor="Qwen2VLVideoProcessor"),
    "video": dict(patch_size=16, merge_size=2, temporal_patch_size=2, shortest_edge=128 * 32 * 32,
                  longest_edge=768 * 32 * 32, mean=HALF, std=HALF, processor="Qwen3VLVideoProcessor"),
}
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class QwenVideoSpec:
    """How frames become Qwen pixel values.

    ``budget``: "frame" (Qwen2.5-VL: ``shortest_edge <= h*w <= longest_edge`` per frame) or
    "video" (Qwen3-VL / Qwen3.5: the bounds apply to ``frames * h * w``). ``patch_size``,
    ``merge_size``, ``temporal_patch_size``: pixels per patch side, patches per merged-cell side,
    frames per temporal patch. ``mean`` / ``std`` per channel on the 0..1 scale, ``rescale`` the
    factor to that scale (1/255). ``origin``: the file the settings came from."""

    budget: str
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    shortest_edge: int
    longest_edge: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    rescale: float = 1.0 / 255.0
    resample: str = "bicubic"
    processor: str = ""
    origin: str = "defaults"

    @property
    def factor(self) -> int:
        """Pixels per merged-cell side: sides are multiples of it."""
        return self.patch_size * self.merge_size

    def frame_size(self, num_frames: int, height: int, width: int) -> Tuple[int, int]:
        """(height, width) the processor resizes ``num_frames`` frames of ``height x width`` to.
        Raises ValueError (one line) for frames the processor refuses (aspect ratio over 200).
        (Not named ``resized_size``: for Qwen3-VL the size also depends on the frame count; the
        decode target is :class:`QwenDecodeTarget`, which knows it.)"""
        if self.budget == "frame":
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

            return tuple(smart_resize(height, width, factor=self.factor, min_pixels=self.shortest_edge,
                                      max_pixels=self.longest_edge))
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as smart_resize_video

        # the processor's rule needs at least one temporal patch of frames; a shorter video is
        # padded to one (by repeating its last frame) before it reaches the tower
        frames = max(int(num_frames), self.temporal_patch_size)
        return tuple(smart_resize_video(frames, height, width, temporal_factor=self.temporal_patch_size,
                                        factor=self.factor, min_pixels=self.shortest_edge,
                                        max_pixels=self.longest_edge))

    def grid_thw(self, num_frames: int, height: int, width: int) -> Tuple[int, int, int]:
        """``video_grid_thw`` as the processor reports it: (temporal patches, patch rows, patch
        columns) before the 2x2 merge."""
        h, w = self.frame_size(num_frames, height, width)
        t = -(-int(num_frames) // self.temporal_patch_size)
        return t, h // self.patch_size, w // self.patch_size

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["min_pixels"], data["max_pixels"] = data.pop("shortest_edge"), data.pop("longest_edge")
        data["cap_pixels_per_frame"] = False
        return data


@dataclass(frozen=True)
class QwenDecodeTarget:
    """The size the processor resizes ``frames`` frames of a ``height x width`` video to, as a
    function of (height, width) alone: the decode target of a Qwen adapter
    (:func:`aot_cli.video.decode_video`'s ``target_size``), picklable for the decode processes and
    Ray tasks. ``frames``: the sampled frame count (ignored by a per-frame budget)."""

    spec: QwenVideoSpec
    frames: int

    def __call__(self, height: int, width: int) -> Tuple[int, int]:
        return self.spec.frame_size(self.frames, int(height), int(width))


def _number(data: Dict[str, Any], key: str, where: str, default: Any) -> Any:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelLoadError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return value


def _triple(data: Dict[str, Any], key: str, where: str, default: Sequence[float]) -> Tuple[float, float, float]:
    value = data.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ModelLoadError(f"{where}: '{key}' must be three numbers, got {value!r}")
    return tuple(float(v) for v in value)


def spec_from_processor_config(data: Optional[Dict[str, Any]], budget: str, where: str) -> QwenVideoSpec:
    """The :class:`QwenVideoSpec` a Qwen processor config ``data`` describes (None: the processor
    class defaults). ``budget``: "frame" (Qwen2.5-VL) or "video" (Qwen3-VL / Qwen3.5). Raises
    ModelLoadError (one line naming ``where``) for settings the preprocessing cannot follow."""
    defaults = _DEFAULTS[budget]
    data = dict(data or {})
    size = data.get("size") if isinstance(data.get("size"), dict) else {}
    shortest = size.get("shortest_edge", defaults["shortest_edge"])
    longest = size.get("longest_edge", defaults["longest_edge"])
    if data.get("min_pixels") is not None:
        shortest = data["min_pixels"]
    if data.get("max_pixels") is not None:
        longest = data["max_pixels"]
    for key, value in (("size.shortest_edge / min_pixels", shortest), ("size.longest_edge / max_pixels", longest)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelLoadError(f"{where}: {key} must be a positive integer pixel count, got {value!r}")
    if shortest > longest:
        raise ModelLoadError(f"{where}: the pixel budget's minimum {shortest} is above its maximum {longest}")
    for key in ("do_resize", "do_rescale", "do_normalize"):
        if data.get(key, True) is False:
            raise ModelLoadError(f"{where}: '{key}: false' is not supported (the Qwen towers expect resized, "
                                 "rescaled and normalised pixels)")
    if data.get("cap_pixels_per_frame"):
        raise ModelLoadError(f"{where}: 'cap_pixels_per_frame: true' is not supported (aot follows the "
                             "processor's pixel budget without the per-frame cap; set it to false)")
    resample = data.get("resample", 3)
    if resample not in _RESAMPLE:
        raise ModelLoadError(f"{where}: resample {resample!r} is not supported (2 bilinear or 3 bicubic)")
    ints = {}
    for key in ("patch_size", "merge_size", "temporal_patch_size"):
        value = data.get(key, defaults[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelLoadError(f"{where}: '{key}' must be a positive integer, got {value!r}")
        ints[key] = value
    return QwenVideoSpec(
        budget=budget, shortest_edge=int(shortest), longest_edge=int(longest),
        mean=_triple(data, "image_mean", where, defaults["mean"]), std=_triple(data, "image_std", where, defaults["std"]),
        rescale=float(_number(data, "rescale_factor", where, 1.0 / 255.0)), resample=_RESAMPLE[resample],
        processor=str(data.get("video_processor_type") or data.get("image_processor_type") or defaults["processor"]),
        origin=where, **ints,
    )


def read_video_spec(source, budget: str) -> QwenVideoSpec:
    """The checkpoint's video preprocessing (``source``: a resolved
    :class:`~aot_cli.models.source.ModelSource`), from the first of :data:`PROCESSOR_FILES`
    that describes it, else the processor class defaults."""
    for name in PROCESSOR_FILES:
        data = source.json(name)
        if data is None:
            continue
        if name == "processor_config.json":
            data = data.get("video_processor") if isinstance(data, dict) else None
            if not isinstance(data, dict):
                continue
        if not isinstance(data, dict):
            raise ModelLoadError(f"{source.location(name)}: not a JSON object")
        return spec_from_processor_config(data, budget, source.location(name))
    return spec_from_processor_config(None, budget, "processor defaults")


def video_pixels(frames: torch.Tensor, spec: QwenVideoSpec, device: torch.device, dtype: torch.dtype,
                 chunk: int = 16) -> torch.Tensor:
    """uint8 RGB frames ``[F, H, W, 3]`` -> pixel values ``[F', 3, h, w]`` on ``device`` in
    ``dtype``: resized to ``spec.frame_size(F, H, W)``, rescaled and normalised, and padded to
    ``F' = ceil(F / temporal) * temporal`` frames by repeating the last (steps 1-4 of the module
    docstring), ``chunk`` frames at a time."""
    count, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    size = spec.frame_size(count, height, width)
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1) / spec.rescale
    std = torch.tensor(spec.std, device=device, dtype=torch.float32).view(1, 3, 1, 1) / spec.rescale
    out = []
    for part in frames.split(max(1, chunk)):
        images = part.to(device).permute(0, 3, 1, 2).to(torch.float32)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode=spec.resample, align_corners=False, antialias=True)
            images = images.clamp_(0.0, 255.0).round_()
        out.append(((images - mean) / std).to(dtype))
    pixels = torch.cat(out)
    pad = -count % spec.temporal_patch_size
    if pad:
        pixels = torch.cat([pixels, pixels[-1:].expand(pad, -1, -1, -1)])
    return pixels.contiguous()


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """Pixel values ``[F', 3, h, w]`` (``F'`` a multiple of ``temporal``) -> flattened patches
    ``[t*gh*gw, 3*temporal*patch*patch]`` in the processor's order, and ``(t, gh, gw)``
    (``video_grid_thw``)."""
    frames, channels, height, width = pixels.shape
    if frames % temporal or height % (patch * merge) or width % (patch * merge):
        raise ValueError(f"pixel values {list(pixels.shape)} do not tile into temporal patches of {temporal} frames "
                         f"and merged cells of {patch * merge} pixels")
    t, gh, gw = frames // temporal, height // patch, width // patch
    x = pixels.reshape(t, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * gh * gw, channels * temporal * patch * patch), (t, gh, gw)
