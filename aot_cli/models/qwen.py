"""The vision side of Qwen-family video LLMs: Qwen2.5-VL (``qwen2_5_vl``), Qwen3-VL (``qwen3_vl``,
``qwen3_vl_moe``) and Qwen3.5 (``qwen3_5``, ``qwen3_5_moe``).

Only the tower is built (transformers' own vision model class for the checkpoint's
``vision_config``, through ``AutoModel.from_config``) and only its tensors are read from the
checkpoint's safetensors (found by the index's weight map under the prefix that holds
``patch_embed.proj.weight``: ``visual.`` or ``model.visual.``); the language model is never built
and never read.

What the adapter gives the method (docs/method.md, "Qwen-family models"):

- one *frame* of the method per temporal patch (two sampled frames), on the *merged grid*: the
  ``(h/2) x (w/2)`` cells the model's own 2x2 patch merger makes, row-major; ``tokens`` are the
  merger's output at the LLM width, exactly what ``get_video_features`` returns;
- received-attention scores (docs/method.md §1) of two blocks that attend over the whole frame:
  Qwen3-VL / Qwen3.5 blocks all do; Qwen2.5-VL's do only in ``fullatt_block_indexes`` (the others
  attend inside windows). A block's per-patch scores are put back in grid order (undoing the
  window reordering of Qwen2.5-VL and the 2x2-block order of the patches) and each merged cell
  gets the sum of its four patches' scores;
- Qwen3-VL's DeepStack features (one per ``deepstack_visual_indexes`` block, each through its own
  merger to the LLM width) as a side output ``deepstack`` ``[F, N, L*D]``, which the method carries
  through every merge (:func:`aot_cli.core.compress`'s ``carry``) and the cache stores as
  ``[L, T, D]``. Qwen3.5's tower has no DeepStack.

Default score blocks: Qwen2.5-VL the first and the last full-attention block; Qwen3-VL / Qwen3.5
block ``depth // 5`` (5 of 27, as SigLIP's 5 of 26) and the second-to-last block.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from aot_cli.models.adapter import Tower, TowerOutput, VisionAdapter
from aot_cli.models.common import LoadContext, base_info
from aot_cli.models.errors import ModelLoadError, first_line
from aot_cli.models.families import QWEN_TYPES, check_qwen_score_layers, qwen_family, qwen_full_attention  # noqa: F401
from aot_cli.models.preprocess import as_frame_tensor
from aot_cli.models.profiles import select_profile
from aot_cli.models.qwen_preprocess import QwenDecodeTarget, QwenVideoSpec, patchify, read_video_spec, video_pixels
from aot_cli.models.scores import ScoreCapture
from aot_cli.models.source import WeightReader

PATCH_WEIGHT = "patch_embed.proj.weight"


class QwenTower(Tower):
    """transformers' Qwen vision model behind the :class:`Tower` interface: ``layers`` are its
    blocks (for layer counts and score-layer lookups); :meth:`run` calls the model's own forward
    on flattened patches and ``grid_thw``."""

    def __init__(self, visual: nn.Module, patch_size: int, hidden_size: int) -> None:
        super().__init__(visual.patch_embed, list(visual.blocks), patch_size=patch_size, hidden_size=hidden_size)
        self.visual = visual

    def attention(self, index: int) -> nn.Module:
        return self.layers[index].attn

    def run(self, patches: torch.Tensor, grid_thw: torch.Tensor):
        """The vision model's output (``pooler_output`` [t*N, D] merged tokens in grid order,
        ``deepstack_features`` for Qwen3-VL) for one packed video."""
        return self.visual(patches, grid_thw=grid_thw, return_dict=True)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - use run()
        raise NotImplementedError("QwenTower runs on patches and grid_thw: use QwenVisionAdapter.encode")


class QwenVisionAdapter(VisionAdapter):
    """A loaded Qwen-family tower (see the module docstring). ``preprocess`` takes uint8 frames
    ``[F, H, W, 3]`` (decoded at native size, as the processor receives them; with
    ``--decode-size tower`` at about twice the processor's size, :meth:`decode_target`) to pixel
    values ``[F', 3, h, w]`` (``F'`` even); ``encode`` returns tokens ``[t, N, D]`` with ``t = F'/2``
    and ``N = (h/28)*(w/28)`` (patch 14; 32 for patch 16), scores ``[t, N]`` and the side output
    ``deepstack``."""

    #: the processor resizes native frames: decode at native size unless --decode-size tower
    native_decode = True

    def __init__(self, *, tower: QwenTower, video_spec: QwenVideoSpec, family: str, model_type: str,
                 vision_config: Any, full_attention: Sequence[int], **kwargs: Any) -> None:
        self.video_spec = video_spec
        self.family = family
        self.model_type = model_type
        self.vision_config = vision_config
        self.full_attention = tuple(int(i) for i in full_attention)
        self.deepstack_layers = tuple(int(i) for i in getattr(vision_config, "deepstack_visual_indexes", None) or ())
        super().__init__(tower=tower, spec=video_spec, **kwargs)

    # ------------------------------------------------------------------ geometry
    #: sampled frames per frame of the method (a temporal patch)
    @property
    def temporal_patch(self) -> int:
        return self.video_spec.temporal_patch_size

    @property
    def side_outputs(self) -> Dict[str, int]:
        """Side outputs of :meth:`encode` and how many groups each stores (``deepstack``: one
        ``[T, D]`` group per DeepStack block, stored ``[L, T, D]``)."""
        return {"deepstack": len(self.deepstack_layers)} if self.deepstack_layers else {}

    @property
    def hidden_size(self) -> int:
        return int(self.vision_config.out_hidden_size)

    def grid_for(self, height: int, width: int, num_frames: int = 2) -> Tuple[int, int]:
        """The merged grid (rows, cols) for ``num_frames`` frames of ``height x width`` pixels."""
        _, gh, gw = self.video_spec.grid_thw(num_frames, height, width)
        merge = self.video_spec.merge_size
        return gh // merge, gw // merge

    def decode_target(self, frames: Optional[int] = None) -> Optional[QwenDecodeTarget]:
        """The processor's size for ``frames`` sampled frames as a function of the displayed
        (height, width) (:class:`~aot_cli.models.qwen_preprocess.QwenDecodeTarget`), so frames are
        decoded straight to about twice it and :meth:`preprocess` still does the processor's resize
        from them, to the same size as from native frames. A per-frame budget (Qwen2.5-VL) does
        not need the count; a per-video budget (Qwen3-VL / Qwen3.5) does, so without it (``--fps``:
        the count follows the timeline) frames are decoded at native size (None)."""
        spec = self.video_spec
        if spec.budget == "frame":
            return QwenDecodeTarget(spec, spec.temporal_patch_size)
        return QwenDecodeTarget(spec, int(frames)) if frames is not None else None

    @property
    def grid(self) -> Tuple[int, int]:
        raise ValueError(f"{self.info.get('model')}: the merged grid depends on the frame size (for Qwen3-VL and "
                         "Qwen3.5 also on the frame count); use grid_for(height, width, frames)")

    # ------------------------------------------------------------------ running
    def preprocess(self, frames: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """uint8 frames ``[F, H, W, 3]`` -> pixel values ``[F', 3, h, w]`` (see
        :func:`~aot_cli.models.qwen_preprocess.video_pixels`)."""
        frames = as_frame_tensor(frames)
        return video_pixels(frames, self.video_spec, self.device, self.dtype, chunk=self.batch_frames)

    def resolve_score_layers(self, score_layers: Optional[Sequence[int]] = None) -> Tuple[int, int]:
        """(shallow, deep) block indices; for Qwen2.5-VL both must be full-attention blocks."""
        layers = tuple(score_layers) if score_layers is not None else self.score_layers
        resolved = super().resolve_score_layers(layers)
        check_qwen_score_layers(self.family, self.vision_config.to_dict(), layers, str(self.info.get("model")))
        return resolved

    def _check(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = self._check_pixels(pixel_values)
        if pixel_values.shape[0] % self.temporal_patch:
            raise ValueError(f"pixel_values hold {pixel_values.shape[0]} frames, not a multiple of the temporal "
                             f"patch size {self.temporal_patch}")
        return pixel_values

    def _chunks(self, pixel_values: torch.Tensor) -> List[torch.Tensor]:
        step = max(self.temporal_patch, self.batch_frames - self.batch_frames % self.temporal_patch)
        return list(pixel_values.split(step))

    def _run(self, pixels: torch.Tensor):
        spec = self.video_spec
        patches, thw = patchify(pixels, spec.patch_size, spec.merge_size, spec.temporal_patch_size)
        grid_thw = torch.tensor([thw], dtype=torch.long, device=pixels.device)
        return self.tower.run(patches, grid_thw), thw

    def _cells(self, thw: Tuple[int, int, int]) -> Tuple[int, int, int]:
        t, gh, gw = thw
        merge = self.video_spec.merge_size
        return t, gh // merge, gw // merge

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Merged tokens ``[t, N, D]`` without scores (the plain SDPA pass)."""
        pixel_values = self._check(pixel_values)
        out = []
        with torch.no_grad():
            for chunk in self._chunks(pixel_values):
                result, thw = self._run(chunk)
                t, hm, wm = self._cells(thw)
                out.append(result.pooler_output.reshape(t, hm * wm, -1))
        return torch.cat(out)

    def encode(self, pixel_values: torch.Tensor, score_layers: Optional[Sequence[int]] = None) -> TowerOutput:
        """Pixel values ``[F', 3, h, w]`` -> :class:`TowerOutput`: merged tokens ``[t, N, D]``,
        shallow / deep scores ``[t, N]`` float32 (per merged cell, grid order), ``grid`` the
        merged (rows, cols), ``side["deepstack"]`` ``[t, N, L*D]`` for Qwen3-VL. At most
        ``batch_frames`` frames (rounded down to whole temporal patches) per forward pass."""
        shallow_i, deep_i = self.resolve_score_layers(score_layers)
        pixel_values = self._check(pixel_values)
        modules = [self.tower.attention(shallow_i), self.tower.attention(deep_i)]
        tokens, shallow, deep, deepstack = [], [], [], []
        grid = None
        with torch.no_grad():
            for chunk in self._chunks(pixel_values):
                with ScoreCapture(modules, self.query_chunk) as capture:
                    result, thw = self._run(chunk)
                t, hm, wm = self._cells(thw)
                grid = (hm, wm)
                s, d = capture.result()
                order = self._sequence_order(thw, chunk.device)
                shallow.append(cell_scores(s, order, t, hm * wm, self.video_spec.merge_size))
                deep.append(cell_scores(d, order, t, hm * wm, self.video_spec.merge_size))
                tokens.append(result.pooler_output.reshape(t, hm * wm, -1))
                if self.deepstack_layers:
                    feats = result.deepstack_features
                    deepstack.append(torch.cat([f.reshape(t, hm * wm, -1) for f in feats], dim=-1))
        side = {"deepstack": torch.cat(deepstack)} if deepstack else {}
        return TowerOutput(torch.cat(tokens), torch.cat(shallow), torch.cat(deep), grid, side=side)

    def _sequence_order(self, thw: Tuple[int, int, int], device: torch.device) -> Optional[torch.Tensor]:
        """For Qwen2.5-VL: which merged cell (in grid order) sits at each position of the
        window-ordered sequence the blocks see (transformers' ``get_vision_window_index``); None
        for towers that keep the grid order."""
        if self.family != "qwen2.5-vl":
            return None
        from transformers.vision_utils import get_vision_window_index

        config = self.vision_config
        window_index, _ = get_vision_window_index(torch.tensor([thw]), spatial_merge_size=config.spatial_merge_size,
                                                  window_size=config.window_size, patch_size=config.patch_size)
        return window_index.to(device)

    # ------------------------------------------------------------------ what the cache records
    def video_entry(self, num_frames: int, height: int, width: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """Per-video tensors and meta for ``num_frames`` sampled frames of ``height x width``:
        ``video_grid_thw`` [3] int64 and the processor facts (``meta["processor"]``)."""
        spec = self.video_spec
        t, gh, gw = spec.grid_thw(num_frames, height, width)
        rh, rw = spec.frame_size(num_frames, height, width)
        facts = spec.to_dict()
        facts.update({"resized_height": rh, "resized_width": rw, "video_grid_thw": [t, gh, gw],
                      "sampled_frames": int(num_frames), "padded_frames": t * spec.temporal_patch_size - int(num_frames),
                      "merged_grid": [gh // spec.merge_size, gw // spec.merge_size]})
        tensors = {"video_grid_thw": torch.tensor([t, gh, gw], dtype=torch.int64)}
        return tensors, {"processor": facts}

    def describe(self) -> Dict[str, Any]:
        """The base provenance, plus the full-attention and DeepStack blocks and how scores
        become per-cell scores."""
        data = super().describe()
        data["score_layers"]["reduction"] = ("softmax(qk^T*scale) summed over the queries of the frame, mean over "
                                             "heads; each merged cell: the sum over its 2x2 patches")
        data.update({"full_attention_blocks": list(self.full_attention),
                     "deepstack_blocks": list(self.deepstack_layers)})
        return data


def cell_scores(scores: torch.Tensor, order: Optional[torch.Tensor], t: int, cells: int, merge: int) -> torch.Tensor:
    """Per-patch scores ``[1, t*cells*merge^2]`` in the tower's sequence order -> per merged cell
    ``[t, cells]`` float32 in grid order. The sequence holds merged units of ``merge^2``
    consecutive patches; ``order[k]`` is the grid index of the unit at sequence position ``k``
    (None: already grid order). A cell's score is the sum of its patches' scores."""
    unit = merge * merge
    per_unit = scores.reshape(t * cells, unit).float().sum(dim=1)
    if order is not None:
        grid_order = torch.empty_like(per_unit)
        grid_order[order] = per_unit
        per_unit = grid_order
    return per_unit.reshape(t, cells)


def _default_score_layers(family: str, depth: int, full_attention: Sequence[int]) -> Tuple[int, int]:
    if family == "qwen2.5-vl":
        return int(full_attention[0]), int(full_attention[-1])
    return depth // 5, (-2 if depth > 1 else -1)


def _vision_model(ctx: LoadContext, model_type: str):
    """(vision config, the vision model built from it without initialising weights)."""
    from transformers import AutoConfig, AutoModel
    from transformers.initialization import no_init_weights

    where = ctx.config_path
    try:
        fields = {k: v for k, v in ctx.config.items() if k != "model_type"}
        config = AutoConfig.for_model(model_type, **fields)
        vision_config = config.vision_config
        vision_config._attn_implementation = "sdpa"
        with no_init_weights():
            visual = AutoModel.from_config(vision_config)
    except Exception as exc:  # a config transformers cannot build
        raise ModelLoadError(f"{where}: cannot build the {model_type} vision tower ({first_line(exc)})") from None
    return vision_config, visual


def load_qwen(ctx: LoadContext) -> VisionAdapter:
    """A Qwen2.5-VL / Qwen3-VL / Qwen3.5 adapter (see the module docstring)."""
    where = ctx.config_path
    model_type = ctx.config.get("model_type")
    family = qwen_family(model_type)
    vision_config, visual = _vision_model(ctx, model_type)
    reader = WeightReader.open(ctx.source)
    names = reader.names
    hits = sorted({n[: -len(PATCH_WEIGHT)] for n in names if n.endswith(PATCH_WEIGHT) and "visual" in n})
    if len(hits) != 1:
        raise ModelLoadError(f"{where}: expected one '*visual*{PATCH_WEIGHT}' tensor in the weights, found "
                             f"{', '.join(hits) or 'none'}")
    prefix = hits[0]
    tensors = reader.load([n for n in names if n.startswith(prefix)])
    state = {name[len(prefix):]: value for name, value in tensors.items()}
    try:
        visual.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{ctx.source.root}: the vision weights under '{prefix}' do not fit the "
                             f"{model_type} vision config ({' '.join(first_line(exc).split())[:200]})") from None
    visual = visual.to(device=ctx.device, dtype=ctx.dtype).eval()

    spec = read_video_spec(ctx.source, "frame" if family == "qwen2.5-vl" else "video")
    for key, model_value in (("patch_size", vision_config.patch_size), ("merge_size", vision_config.spatial_merge_size),
                             ("temporal_patch_size", vision_config.temporal_patch_size)):
        if getattr(spec, key) != model_value:
            raise ModelLoadError(f"{spec.origin}: processor {key} {getattr(spec, key)} != the vision tower's "
                                 f"{model_value}")
    depth = int(vision_config.depth)
    full_attention = list(qwen_full_attention(family, vision_config.to_dict()))
    if not full_attention:
        raise ModelLoadError(f"{where}: fullatt_block_indexes is empty: no block attends over the whole frame, so "
                             "no attention scores can be taken")
    profile = select_profile(family, ctx.model_cfg.profile, has_newline=False, where=ctx.source.spec)
    profile = dataclasses.replace(profile, score_layers=_default_score_layers(family, depth, full_attention))
    tower = QwenTower(visual, patch_size=spec.patch_size, hidden_size=int(vision_config.hidden_size))
    info = base_info(
        ctx, family, "transformers", f"{type(visual).__name__} (vision side of {model_type})",
        model_type=model_type,
        feature_layer="the patch merger's output (2x2 patches -> one token at the LLM width), as get_video_features",
        weights={"shards_opened": list(dict.fromkeys(reader.opened)), "tensors_read": len(reader.read),
                 "prefix": prefix},
        vision_tower={"depth": depth, "hidden_size": int(vision_config.hidden_size),
                      "heads": int(vision_config.num_heads), "patch_size": int(vision_config.patch_size),
                      "spatial_merge_size": int(vision_config.spatial_merge_size),
                      "temporal_patch_size": int(vision_config.temporal_patch_size),
                      "out_hidden_size": int(vision_config.out_hidden_size),
                      "window_size": getattr(vision_config, "window_size", None),
                      "tokens_per_second": getattr(vision_config, "tokens_per_second", None)},
    )
    return QwenVisionAdapter(
        tower=tower, video_spec=spec, family=family, model_type=model_type, vision_config=vision_config,
        full_attention=full_attention, profile=profile, device=ctx.device, dtype=ctx.dtype,
        batch_frames=ctx.model_cfg.batch_frames, score_layers=ctx.model_cfg.score_layers, info=info,
        tensors_read=reader.read,
    )
