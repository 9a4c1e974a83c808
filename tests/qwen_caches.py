"""Qwen caches written by `aot compress` for the downstream tests, and the inputs the model itself
would get for the same video: the prompt by transformers' own processor rules and the pixel values
of the same sampled frames.

``build_caches(root, family, checkpoint)`` compresses the two sample clips with a tiny random
checkpoint (tests/qwen_checkpoints.py) into two cache directories:

- ``full``: ``--method none --ratio 1.0``, bikes.mp4 (25 fps, 250 frames) at ``--frames 8`` and
  carphone_pristine.mp4 (29.97 fps, 120 frames) at ``--frames 7`` (an odd count: the processor
  repeats the last frame);
- ``pruned``: the defaults (AOT) at ``--ratio 0.1 --frames 8``, both clips.

Video ids are ``clips/bikes.mp4`` and ``clips/carphone_pristine.mp4``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ("bikes.mp4", "carphone_pristine.mp4")
FAMILIES = ("qwen2.5-vl", "qwen3-vl", "qwen3.5")
#: family -> the session fixture (tests/conftest.py) of its tiny checkpoint
CHECKPOINT_FIXTURES = {"qwen2.5-vl": "tiny_qwen2_5_vl_dir", "qwen3-vl": "tiny_qwen3_vl_dir",
                       "qwen3.5": "tiny_qwen3_5_dir"}
VIDEO_PAD, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"


@dataclass
class QwenCaches:
    family: str
    checkpoint: Path
    clips: Path      # the folder holding the sample clips the caches were made from
    full: Path       # --method none --ratio 1.0 (bikes at 8 frames, carphone at 7)
    pruned: Path     # --ratio 0.1 --frames 8 (both clips)
    root: Path       # the directory the compressions ran in (ids are relative to it)


def compress(args: Sequence[Any], cwd: Path) -> None:
    """``aot compress ARGS --device cpu --dtype fp32 -q`` in ``cwd`` (in this process)."""
    from click.testing import CliRunner

    from aot_cli.cli import main

    with working_directory(cwd):
        result = CliRunner().invoke(main, ["compress", *map(str, args), "--device", "cpu", "--dtype", "fp32",
                                       "--decode-workers", "0", "-q"],
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def build_caches(root: Path, family: str, checkpoint: Path) -> QwenCaches:
    clips = root / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        shutil.copy(ROOT / "samples" / name, clips / name)
    model = ["--model", checkpoint]
    compress(["clips/bikes.mp4", *model, "--method", "none", "--ratio", "1.0", "--frames", "8", "-o", "full"], root)
    compress(["clips/carphone_pristine.mp4", *model, "--method", "none", "--ratio", "1.0", "--frames", "7",
              "-o", "full"], root)
    compress(["clips/bikes.mp4", "clips/carphone_pristine.mp4", *model, "--ratio", "0.1", "--frames", "8",
              "-o", "pruned"], root)
    return QwenCaches(family=family, checkpoint=Path(checkpoint), clips=clips, full=root / "full",
                      pruned=root / "pruned", root=root)


def kept_count(ratio: float, t: int, cells: int) -> int:
    """floor(ratio * t * cells + 0.5): the exact budget of a ``--ratio``."""
    return int(math.floor(ratio * t * cells + 0.5))


# ------------------------------------------------------------------------------ the model's own inputs

def decode_native(path: Path, indices: Sequence[int], size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Every frame of ``path`` decoded by PyAV to RGB, those at ``indices``: uint8 [F, H, W, 3];
    ``size`` (height, width): scaled there by swscale's bicubic filter (a clip with non-square
    pixels is shown at its display size)."""
    import av

    scale = {} if size is None else {"height": int(size[0]), "width": int(size[1]), "interpolation": "BICUBIC"}
    with av.open(str(path)) as container:
        pictures = [f.to_ndarray(format="rgb24", **scale) for f in container.decode(video=0)]
    return torch.from_numpy(np.stack([pictures[i] for i in indices]))


def processor_prompt(family: str, tokenizer: Any, question: str, grid: Sequence[int], metadata: Any) -> torch.Tensor:
    """The uncompressed prompt's ids [1, L] as transformers' processor builds it: the chat template's
    text with the video item replaced by the processor's own ``replace_video_token`` (timestamps by
    its ``_calculate_timestamps`` for Qwen3-VL / Qwen3.5). The processor object is made without its
    video processor (which needs torchvision): only its text rules run."""
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    cls = Qwen2_5_VLProcessor if family == "qwen2.5-vl" else Qwen3VLProcessor
    processor = cls.__new__(cls)
    processor.video_processor = SimpleNamespace(merge_size=2, temporal_patch_size=2)
    processor.video_token, processor.vision_start_token, processor.vision_end_token = (
        VIDEO_PAD, VISION_START, VISION_END)
    block = processor.replace_video_token({"video_grid_thw": torch.tensor([list(grid)]),
                                           "video_metadata": [metadata]}, 0)
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    wrapper = VISION_START + VIDEO_PAD + VISION_END
    text = text.replace(wrapper, block) if family != "qwen2.5-vl" else text.replace(VIDEO_PAD, block)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def own_inputs(family: str, model: Any, tokenizer: Any, question: str, cached_video: Any, clip: Path,
               checkpoint: Path) -> Dict[str, Any]:
    """What the model itself is given for ``question`` about the video the cache entry was made
    from: the processor's prompt, ``mm_token_type_ids``, ``video_grid_thw`` and (Qwen2.5-VL)
    ``second_per_grid_ts = 2 / VideoMetadata.sampled_fps``, and ``pixel_values_videos`` of the
    same sampled frames (decoded by PyAV, preprocessed by the checkpoint's video processor
    configuration). Feed it to ``model(**d)`` / ``model.generate(**d)``: the model runs its own
    tower and computes its own positions."""
    from transformers.video_utils import VideoMetadata

    from aot_cli.models.qwen_preprocess import patchify, spec_from_processor_config, video_pixels

    meta = cached_video.meta
    indices = cached_video["frame_indices"].tolist()
    config = json.loads((Path(checkpoint) / "video_preprocessor_config.json").read_text())
    spec = spec_from_processor_config(config, "frame" if family == "qwen2.5-vl" else "video", "test")
    frames = decode_native(clip, indices, meta["sampling"]["decode_size"])
    pixels = video_pixels(frames, spec, torch.device("cpu"), torch.float32)
    patches, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
    assert list(thw) == cached_video["video_grid_thw"].tolist()
    metadata = VideoMetadata(total_num_frames=meta["video"]["num_frames"], fps=meta["video"]["fps"],
                             frames_indices=indices)
    ids = processor_prompt(family, tokenizer, question, thw, metadata)
    inputs: Dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                              "mm_token_type_ids": (ids == model.config.video_token_id).int() * 2,
                              "video_grid_thw": torch.tensor([list(thw)]), "pixel_values_videos": patches}
    if family == "qwen2.5-vl":
        inputs["second_per_grid_ts"] = torch.tensor([2 / metadata.sampled_fps])
    return inputs


def own_positions(model: Any, inputs: Dict[str, Any]) -> torch.Tensor:
    """The model's own M-RoPE positions [3, 1, L] for :func:`own_inputs`."""
    rope = {k: inputs[k] for k in ("mm_token_type_ids", "video_grid_thw", "second_per_grid_ts") if k in inputs}
    with torch.no_grad():
        positions, _ = model.model.get_rope_index(inputs["input_ids"], **rope)
    return positions


def greedy_loop(model: Any, inputs: Dict[str, Any], steps: int) -> torch.Tensor:
    """Greedy decoding without a KV cache: each step runs the whole sequence again, the new token
    at the last position + 1 on every M-RoPE row. Returns the new ids [steps]."""
    ids, positions = inputs["input_ids"], inputs["position_ids"]
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids),
                           mm_encoder_outputs=inputs["mm_encoder_outputs"]).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return ids[0, inputs["input_ids"].shape[1]:]


def clip_of(caches: QwenCaches, cached_video: Any) -> Path:
    return caches.clips / Path(cached_video.meta["video"]["path"]).name


def ids_of(cache: Any) -> List[str]:
    return sorted(cache.ids())
