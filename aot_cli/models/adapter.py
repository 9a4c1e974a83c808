"""The interface the pipeline uses: :class:`VisionAdapter` (preprocess, encode with scores,
newline, describe), :class:`TowerOutput`, and :class:`Tower`, the part that runs a vision
transformer's embeddings and the encoder layers that are needed.

A tower only runs the layers its features come from (for CLIP the last layer does not run; for
LLaVA the layers up to ``vision_feature_layer``), so score-layer indices count those layers.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from aot_cli.models.errors import ModelLoadError
from aot_cli.models.preprocess import ImageSpec, preprocess_frames
from aot_cli.models.profiles import ModelProfile
from aot_cli.models.runtime import dtype_label
from aot_cli.models.scores import ScoreCapture, resolve_layer_index


@dataclass
class TowerOutput:
    """``tokens`` [F, N, D] in the model dtype (after the projector when there is one);
    ``shallow`` / ``deep`` [F, N] float32 received-attention scores of the two score layers
    (patch tokens only); ``grid`` (H, W) with H * W = N, row-major. ``F`` counts the method's
    frames (sampled frames / :attr:`VisionAdapter.temporal_patch`). ``side``: the adapter's side
    outputs (:attr:`VisionAdapter.side_outputs`), each [F, N, C] per token, e.g. Qwen3-VL's
    DeepStack features; the method carries them through every merge."""

    tokens: torch.Tensor
    shallow: torch.Tensor
    deep: torch.Tensor
    grid: Tuple[int, int]
    side: Dict[str, torch.Tensor] = field(default_factory=dict)


class Tower(nn.Module):
    """Embeddings, then ``layers`` in order, then features.

    ``feature_states`` are positions in the hidden-state list ``[embeddings output, output of
    layer 1, ..., output of layer n]``; their hidden states are concatenated on the channel
    axis (usually a single position: the last). ``final_norm`` (if any) is applied to the
    features, then the first ``prefix_tokens`` tokens (CLS, registers) are dropped.
    Family subclasses override :meth:`embed` and :meth:`attention`.
    """

    def __init__(
        self,
        embeddings: nn.Module,
        layers: Sequence[nn.Module],
        patch_size: int,
        hidden_size: int,
        final_norm: Optional[nn.Module] = None,
        prefix_tokens: int = 0,
        feature_states: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.patch_size = int(patch_size)
        self.hidden_size = int(hidden_size)
        self.prefix_tokens = int(prefix_tokens)
        self.feature_states: Tuple[int, ...] = tuple(feature_states) if feature_states else (len(self.layers),)
        if max(self.feature_states) != len(self.layers):
            raise ValueError("the last layer that runs must be a feature layer")
        self._layer_kwargs = _layer_kwargs(self.layers[0]) if len(self.layers) else {}

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values [F, 3, h, w] -> token embeddings [F, T, C]."""
        return self.embeddings(pixel_values)

    def attention(self, index: int) -> nn.Module:
        """The self-attention module of layer ``index`` (0-based among the layers that run)."""
        return self.layers[index].self_attn

    @property
    def width(self) -> int:
        """Channels of the features (hidden size times the number of feature states)."""
        return self.hidden_size * len(self.feature_states)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values [F, 3, h, w] -> patch features [F, N, width]."""
        hidden = self.embed(pixel_values)
        kept: Dict[int, torch.Tensor] = {0: hidden} if 0 in self.feature_states else {}
        for position, layer in enumerate(self.layers, start=1):
            out = layer(hidden, **self._layer_kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
            if position in self.feature_states:
                kept[position] = hidden
        features = kept[self.feature_states[0]] if len(self.feature_states) == 1 else torch.cat(
            [kept[p] for p in self.feature_states], dim=-1
        )
        if self.final_norm is not None:
            features = self.final_norm(features)
        return features[:, self.prefix_tokens :]


def _layer_kwargs(layer: nn.Module) -> Dict[str, Any]:
    """Keyword arguments for an encoder layer call without masks (older CLIP layers also take a
    ``causal_attention_mask``)."""
    params = inspect.signature(layer.forward).parameters
    kwargs: Dict[str, Any] = {"attention_mask": None}
    if "causal_attention_mask" in params:
        kwargs["causal_attention_mask"] = None
    return kwargs


class VisionAdapter:
    """A loaded vision tower (plus projector and newline for LLaVA) ready for the pipeline.

    ``profile``: :class:`ModelProfile`. ``tensors_read``: names of the checkpoint tensors read
    (LLaVA checkpoints, which are read tensor by tensor; None for towers loaded whole).
    ``query_chunk``: queries per step of the score reduction (None: the head dim, which keeps
    each step's map as large as one hidden-state tensor). ``grid``: (H, W) patch grid of every frame (raises for
    SigLIP2 naflex, whose grid follows the frame size: use :meth:`grid_for`). ``hidden_size``: D
    of the output tokens. ``device`` / ``dtype``: where and in what precision it runs.
    """

    def __init__(
        self,
        *,
        tower: Tower,
        profile: ModelProfile,
        spec: ImageSpec,
        device: torch.device,
        dtype: torch.dtype,
        batch_frames: int,
        score_layers: Optional[Tuple[int, int]],
        info: Dict[str, Any],
        projector: Optional[nn.Module] = None,
        newline: Optional[torch.Tensor] = None,
        tensors_read: Optional[Sequence[str]] = None,
        query_chunk: Optional[int] = None,
    ) -> None:
        if batch_frames < 1:
            raise ModelLoadError(f"batch_frames must be >= 1, got {batch_frames}")
        self.tower = tower.eval()
        self.projector = projector.eval() if projector is not None else None
        self.profile = profile
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.batch_frames = int(batch_frames)
        self.info = dict(info)
        self._newline = newline
        self.tensors_read: Optional[List[str]] = list(tensors_read) if tensors_read is not None else None
        self.query_chunk = query_chunk
        layers = tuple(score_layers) if score_layers is not None else profile.score_layers
        if len(layers) != 2:
            raise ModelLoadError(f"score_layers must be two layer indices (shallow, deep), got {list(layers)}")
        self.score_layers: Tuple[int, int] = (int(layers[0]), int(layers[1]))
        self.resolve_score_layers(self.score_layers)  # fail at load time, not mid-run

    # ------------------------------------------------------------------ geometry
    #: Sampled frames per frame of the method (Qwen towers: a temporal patch of 2 frames).
    temporal_patch: int = 1

    @property
    def side_outputs(self) -> Dict[str, int]:
        """Side outputs :meth:`encode` returns in ``TowerOutput.side`` (name -> number of groups:
        a side output of ``C = G * D`` channels is stored ``[G, T, D]``); none by default."""
        return {}

    #: Decode at native size unless ``--decode-size tower`` asks otherwise (``--decode-size auto``):
    #: for families whose own processor resizes native frames, so the tokens are the processor's.
    native_decode: bool = False

    def decode_target(self, frames: Optional[int] = None) -> Optional[Callable[[int, int], Tuple[int, int]]]:
        """What :meth:`preprocess` resizes a (height, width) frame to, as a picklable function of
        the displayed (height, width), for decoding straight to about twice that size
        (:func:`aot_cli.video.decode_video`'s ``target_size``); None: decode at native size.
        ``frames``: how many frames are sampled when that is known before decoding (None with
        ``--fps``); only adapters whose resize depends on the count use it. By default the image
        spec's ``resized_size``."""
        return getattr(self.spec, "resized_size", None)

    def video_entry(self, num_frames: int, height: int, width: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """Extra per-video tensors and meta for ``num_frames`` decoded frames of ``height x
        width`` (what a consumer needs beyond the tokens, e.g. Qwen's ``video_grid_thw``); none
        by default."""
        return {}, {}

    @property
    def layers_run(self) -> int:
        """Number of encoder layers that run (the range score-layer indices refer to)."""
        return len(self.tower.layers)

    @property
    def hidden_size(self) -> int:
        """D of the output tokens (the projector's output width when there is a projector)."""
        if self.projector is not None:
            return int(_last_linear(self.projector).out_features)
        return self.tower.width

    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        """(H, W) patch grid for frames of ``height x width`` pixels."""
        out_h, out_w = self.spec.output_size(height, width)
        return out_h // self.tower.patch_size, out_w // self.tower.patch_size

    @property
    def grid(self) -> Tuple[int, int]:
        """(H, W) patch grid; the same for every input size except SigLIP2 naflex."""
        if self.spec.crop is None and self.spec.resize != "exact":
            raise ValueError(
                f"{self.info.get('model')}: the patch grid depends on the frame size; use grid_for(height, width)"
            )
        return self.grid_for(1, 1)

    @property
    def newline(self) -> Optional[torch.Tensor]:
        """The model's image_newline [D] in the output dtype, or None."""
        return self._newline

    # ------------------------------------------------------------------ running
    def preprocess(self, frames: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """uint8 frames [F, H, W, 3] -> pixel values [F, 3, h, w] on ``device`` in ``dtype``."""
        return preprocess_frames(frames, self.spec, self.device, self.dtype, chunk=self.batch_frames)

    def resolve_score_layers(self, score_layers: Optional[Sequence[int]] = None) -> Tuple[int, int]:
        """(shallow, deep) as 0-based positions among the layers that run."""
        layers = tuple(score_layers) if score_layers is not None else self.score_layers
        if len(layers) != 2:
            raise ModelLoadError(f"score_layers must be two layer indices (shallow, deep), got {list(layers)}")
        return (
            resolve_layer_index(int(layers[0]), self.layers_run, "--score-layers: shallow layer"),
            resolve_layer_index(int(layers[1]), self.layers_run, "--score-layers: deep layer"),
        )

    def _check_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or pixel_values.shape[0] == 0:
            raise ValueError(f"pixel_values must be [F,3,h,w] with F >= 1, got {list(pixel_values.shape)}")
        return pixel_values.to(device=self.device, dtype=self.dtype)

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.tower(pixel_values)
        return self.projector(features) if self.projector is not None else features

    def _grid_of(self, pixel_values: torch.Tensor, tokens: torch.Tensor) -> Tuple[int, int]:
        grid = (pixel_values.shape[-2] // self.tower.patch_size, pixel_values.shape[-1] // self.tower.patch_size)
        if grid[0] * grid[1] != tokens.shape[1]:
            raise ValueError(f"tower returned {tokens.shape[1]} tokens for a {grid[0]}x{grid[1]} patch grid")
        return grid

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tokens [F, N, D] without scores (a plain SDPA pass), ``batch_frames`` at a time."""
        pixel_values = self._check_pixels(pixel_values)
        with torch.no_grad():
            return torch.cat([self._tokens(chunk) for chunk in pixel_values.split(self.batch_frames)])

    def encode(self, pixel_values: torch.Tensor, score_layers: Optional[Sequence[int]] = None) -> TowerOutput:
        """Pixel values [F, 3, h, w] -> :class:`TowerOutput` (tokens [F, N, D], shallow/deep
        scores [F, N] float32), ``batch_frames`` frames per forward pass. ``score_layers``
        overrides the adapter's (shallow, deep) layers for this call."""
        shallow_i, deep_i = self.resolve_score_layers(score_layers)
        pixel_values = self._check_pixels(pixel_values)
        modules = [self.tower.attention(shallow_i), self.tower.attention(deep_i)]
        prefix = self.tower.prefix_tokens
        tokens: List[torch.Tensor] = []
        shallow: List[torch.Tensor] = []
        deep: List[torch.Tensor] = []
        with torch.no_grad():
            for chunk in pixel_values.split(self.batch_frames):
                with ScoreCapture(modules, self.query_chunk) as capture:
                    tokens.append(self._tokens(chunk))
                s, d = capture.result()
                shallow.append(s[:, prefix:])
                deep.append(d[:, prefix:])
        out = torch.cat(tokens)
        return TowerOutput(out, torch.cat(shallow), torch.cat(deep), self._grid_of(pixel_values, out))

    # ------------------------------------------------------------------ provenance
    def describe(self) -> Dict[str, Any]:
        """JSON-ready provenance: model id, resolved path, revision/commit, family, profile,
        score and feature layers, preprocessing, dtype, device and library versions."""
        import transformers

        shallow_i, deep_i = self.resolve_score_layers()
        try:
            grid: Optional[List[int]] = list(self.grid)
        except ValueError:
            grid = None
        data = dict(self.info)
        data.update(
            {
                "profile": self.profile.to_dict(),
                "score_layers": {
                    "requested": list(self.score_layers),
                    "resolved": [shallow_i, deep_i],
                    "layers_run": self.layers_run,
                    "reduction": "softmax(qk^T*scale) summed over all queries, mean over heads; patch keys only",
                },
                "grid": grid,
                "patch_size": self.tower.patch_size,
                "hidden_size": self.hidden_size,
                "tower_hidden_size": self.tower.width,
                "prefix_tokens_dropped": self.tower.prefix_tokens,
                "has_newline": self._newline is not None,
                "preprocessing": self.spec.to_dict(),
                "dtype": dtype_label(self.dtype),
                "device": str(self.device),
                "batch_frames": self.batch_frames,
                "transformers_version": transformers.__version__,
                "torch_version": torch.__version__,
            }
        )
        return data


def _last_linear(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelLoadError(f"{type(module).__name__}: projector has no Linear layer")
    return linears[-1]
