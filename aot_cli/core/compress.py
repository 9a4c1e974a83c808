"""The whole method in one call: anchors (§2) -> intra-frame OT (§3) -> pooling (§4) ->
inter-frame OT (§5), driven by one :class:`AOTConfig` that records every parameter."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import List, Optional, Sequence, Tuple

import torch

from .anchors import select_anchors
from .baselines import MAX_SEED, attention_topk, random_prune, uniform_pool
from .budget import plan_budget
from .inter import KIND_ANCHOR, KIND_KEPT, inter_frame_merge
from .intra import intra_frame_merge
from .pool import model_scores, model_tokens, pooled_grid, spatial_pool, top_cells
from .quality import quality_merge
from .result import CompressResult
from .segments import dynamic_segments, fixed_segments


#: Compression methods: the method itself, no compression, and the three baselines (§10.1).
METHODS = ("aot", "none", "random", "pool", "attention")
#: Named presets of the method (§10.3): ``reference`` = the released code (the default).
PRESETS = ("reference", "quality")
#: Fields only the reference chain (§2-§5) uses, with their command-line flags; the quality preset
#: and the baselines reject values other than the defaults.
_REFERENCE_ONLY = (("num_anchors", "--anchors"), ("keep_ratio", "--keep-ratio"), ("global_ratio", "--global-ratio"),
                   ("window", "--window"), ("intra_update", "--intra-update"), ("intra_stop", "--intra-stop"),
                   ("keyframe_once", "--keyframe-once"), ("inter", "--no-inter"))


class _PresetAttribute:
    """``AOTConfig.preset`` is two things: on the class, the factory
    ``AOTConfig.preset(name, **overrides)``; on an instance, the preset's name (a field, recorded
    with the rest of the configuration). A non-data descriptor gives both: instance attributes
    take precedence over it."""

    def __get__(self, obj, cls):
        if obj is not None:  # only reached before __init__ has set the field
            return "reference"
        return cls._from_preset


@dataclass
class AOTConfig:
    """Every parameter of the method. Two ways to size the output:

    - ``ratio`` (exact budget): keep ``round(ratio * F * cells_per_frame)`` tokens exactly; the
      planner (:mod:`aot_cli.core.budget`) chooses the anchor count and per-frame keep counts.
    - ``num_anchors`` + ``keep_ratio`` (reference rules): ``V`` anchors per frame, pooled cells kept
      by the ``>= 0.5`` threshold, non-key tokens kept by the quantile rule (data-dependent count).

    ``method``: ``"aot"`` (the method), ``"none"`` (the model's own pooling only, identity path), or
    a baseline with an exact budget (docs/method.md §10.1): ``"random"`` (seeded by ``seed``),
    ``"pool"`` (uniform spatial pooling), ``"attention"`` (per-frame attention top-k).

    ``preset``: ``"reference"`` (the released code's chain, §2-§5; the default) or ``"quality"``
    (§10.3: anchors from attention and an even grid, every token aggregated into its anchor by
    balanced OT; exact budgets only). ``AOTConfig.preset(name, **overrides)`` builds one.
    Defaults are the released code's (LLaVA-OneVision, 32 frames); options beyond it are off.
    """

    method: str = "aot"  # see METHODS
    ratio: Optional[float] = None
    num_anchors: Optional[int] = None
    keep_ratio: Optional[float] = None
    preset: str = "reference"  # see PRESETS
    seed: int = 0  # method "random"
    # anchors (§2)
    global_ratio: float = 0.5
    window: Optional[int] = None
    # intra-frame OT (§3)
    intra_eps: float = 0.1
    spatial_weight: float = 0.5
    nn_mix: float = 0.1
    intra_scale: float = 1.0
    intra_update: str = "reference"  # | "normalized" (docs/method.md §8.1)
    intra_stop: str = "video"  # Sinkhorn stop grouping: "video" (reference, frames stop together) | "frame"
    # pooling (§4)
    pooling: Optional[str] = "bilinear"  # | "average" | None
    stride: int = 2
    # inter-frame OT (§5) and clips (§7)
    inter: bool = True
    segments: str = "fixed"  # | "dynamic"
    clip_length: int = 4
    dynamic_c: int = 8
    dynamic_tau: float = 0.8
    inter_eps: float = 0.1
    sigma_t: float = 1.5
    inter_scale: float = 1.0
    keyframe_once: bool = False  # docs/method.md §8.3
    keep_fraction: float = 0.3  # budget planner: share of a non-key frame kept
    # Sinkhorn (§6)
    sinkhorn_max_iter: int = 100
    sinkhorn_tol: float = 1e-2
    sinkhorn_stop: str = "reference"  # | "marginal"
    log_domain: bool = False
    # quality preset (§10.3); used only with preset="quality"
    attention_share: float = 0.1  # share of each clip's anchors on its highest-attention tokens
    salient_share: float = 0.1  # share of each clip's tokens that count as salient
    salient_weight: float = 6.0  # extra weight of a salient token in its anchor's mean
    merge_rounds: int = 3  # transport-and-average rounds
    merge_eps: float = 0.05  # Sinkhorn regularisation of the balanced assignment

    @classmethod
    def _from_preset(cls, name: str = "reference", **overrides) -> "AOTConfig":
        """``AOTConfig.preset(name, **overrides)``: the named preset with ``overrides`` applied.
        ``"reference"`` is today's default (``AOTConfig(**overrides)``); ``"quality"`` switches
        the chain to §10.3 with its documented parameters. Raises ValueError (one line) for an
        unknown name or field."""
        if name not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}; got {name!r}")
        if "preset" in overrides:
            raise ValueError("give the preset's name as the first argument, not as preset=")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown AOTConfig option(s): {', '.join(unknown)}")
        return cls(preset=name, **overrides)

    def validate(self) -> None:
        """Raise ValueError, one line naming the flag, for a value or combination the method
        cannot run with. Called by :func:`compress`; the CLI calls it before any model load."""
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.pooling not in (None, "bilinear", "average"):
            raise ValueError(f"--pooling must be 'bilinear', 'average' or None, got {self.pooling!r}")
        if self.segments not in ("fixed", "dynamic"):
            raise ValueError(f"--segments must be 'fixed' or 'dynamic', got {self.segments!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"--ratio must be in (0, 1], got {self.ratio}")
        if self.clip_length < 1:
            raise ValueError(f"--clip-length must be >= 1, got {self.clip_length}")
        self._validate_ranges()
        if self.method == "none":
            if self.preset != "reference":
                raise ValueError("--preset applies to --method aot; --method none keeps every token")
            return
        if self.method != "aot" or self.preset != "reference":
            what = f"--preset {self.preset}" if self.method == "aot" else f"--method {self.method}"
            if self.method != "aot" and self.preset != "reference":
                raise ValueError(f"--preset {self.preset} applies to --method aot, not to --method {self.method}")
            for name, flag in _REFERENCE_ONLY:
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ValueError(f"{what} keeps an exact budget set by --ratio and does not use {flag} "
                                     "(reference rules, docs/method.md §2-§5); drop it")
            if self.ratio is None:
                raise ValueError(f"{what} needs --ratio")
            if self.preset == "quality":
                self._validate_quality()
            return
        explicit = self.num_anchors is not None or self.keep_ratio is not None
        if self.ratio is not None and explicit:
            raise ValueError("give either --ratio (exact budget) or --anchors/--keep-ratio (reference rules), not both")
        if self.ratio is None and self.num_anchors is None:
            raise ValueError("give --ratio, or --anchors (and --keep-ratio when the inter-frame stage is on)")
        if self.ratio is None and self.inter and self.keep_ratio is None:
            raise ValueError("the inter-frame stage needs --keep-ratio when --anchors is given")

    def _validate_ranges(self) -> None:
        """Values that would otherwise fail only inside the method, after the tower ran."""
        if self.num_anchors is not None and self.num_anchors < 1:
            raise ValueError(f"--anchors must be at least 1, got {self.num_anchors}")
        if self.keep_ratio is not None and not 0.0 <= self.keep_ratio <= 1.0:
            raise ValueError(f"--keep-ratio must be in [0, 1], got {self.keep_ratio:g}")
        if not 0.0 <= self.global_ratio <= 1.0:
            raise ValueError(f"--global-ratio must be in [0, 1], got {self.global_ratio:g}")
        for name, flag in (("window", "--window"), ("dynamic_c", "--dynamic-c"),
                           ("sinkhorn_max_iter", "--sinkhorn-iters"), ("stride", "stride")):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be at least 1, got {value}")
        if not self.sinkhorn_tol >= 0:  # 0: every one of --sinkhorn-iters iterations runs
            raise ValueError(f"--sinkhorn-tol must be >= 0, got {self.sinkhorn_tol:g}")

    def _validate_quality(self) -> None:
        checks = (("attention_share", 0.0 <= self.attention_share <= 1.0, "in [0, 1]"),
                  ("salient_share", 0.0 < self.salient_share <= 1.0, "in (0, 1]"),
                  ("salient_weight", self.salient_weight >= 0.0, ">= 0"),
                  ("merge_rounds", self.merge_rounds >= 1, ">= 1"),
                  ("merge_eps", self.merge_eps > 0.0, "> 0"))
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"method option {name} must be {want} (quality preset, docs/method.md §10.3), "
                                 f"got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


AOTConfig.preset = _PresetAttribute()  # class: the factory; instances: the field (see _PresetAttribute)
_DEFAULTS = {f.name: f.default for f in fields(AOTConfig)}


def make_segments(tokens: torch.Tensor, config: AOTConfig) -> List[Tuple[int, int]]:
    """Clips for ``tokens [F, N, D]``: fixed clips, or dynamic segments on mean frame features."""
    Fn = tokens.shape[0]
    if config.segments == "dynamic":
        return dynamic_segments(tokens.float().mean(1), c=config.dynamic_c, tau=config.dynamic_tau)
    return fixed_segments(Fn, config.clip_length)


def _all_tokens(x: torch.Tensor, grid: Tuple[int, int], segments, anchors_per_frame) -> CompressResult:
    Fn, N, D = x.shape
    dev = x.device
    return CompressResult(
        tokens=x.reshape(Fn * N, D),
        frame=torch.arange(Fn, device=dev).repeat_interleave(N),
        index=torch.arange(N, device=dev).repeat(Fn),
        kind=torch.full((Fn * N,), KIND_KEPT, dtype=torch.uint8, device=dev),
        grid=grid,
        anchors_per_frame=anchors_per_frame,
        cells_per_frame=torch.full((Fn,), N, dtype=torch.long, device=dev),
        kept_per_frame=torch.full((Fn,), N, dtype=torch.long, device=dev),
        merged_per_frame=torch.zeros(Fn, dtype=torch.long, device=dev),
        segments=segments,
    )


def compress(
    tokens: torch.Tensor,
    shallow: Optional[torch.Tensor],
    deep: Optional[torch.Tensor],
    grid: Sequence[int],
    config: AOTConfig,
) -> CompressResult:
    """Run the method on one video.

    Args:
        tokens: ``[F, N, D]`` tower (+ projector) tokens, ``N = H*W`` row-major.
        shallow, deep: ``[F, N]`` received-attention scores of the two score layers (§1). Both
            may be None for methods ``"none"``, ``"random"`` and ``"pool"``; ``"attention"`` and
            the quality preset use only ``deep``.
        grid: ``(H, W)``.
        config: :class:`AOTConfig`.
    """
    config.validate()
    H, W = int(grid[0]), int(grid[1])
    Fn, N, D = tokens.shape
    if N != H * W:
        raise ValueError(f"tokens have {N} cells per frame, grid {H}x{W} has {H * W}")
    zeros = torch.zeros(Fn, dtype=torch.long, device=tokens.device)
    if config.method == "none":
        if config.pooling is None:
            return _all_tokens(tokens, (H, W), [(0, Fn)], zeros)
        pooled, _, grid2 = spatial_pool(tokens, torch.zeros(Fn, N, dtype=torch.bool, device=tokens.device),
                                        (H, W), config.stride, config.pooling)
        return _all_tokens(pooled, grid2, [(0, Fn)], zeros)
    if config.method != "aot" or config.preset == "quality":
        return _exact_budget_method(tokens, deep, (H, W), config)

    segments = make_segments(tokens, config) if config.inter else [(f, 1) for f in range(Fn)]
    plan = None
    if config.ratio is not None:
        plan = plan_budget(config.ratio, Fn, (H, W), config.pooling, config.stride,
                           segments if config.inter else None, inter=config.inter,
                           emit_keyframe=not config.keyframe_once, keep_fraction=config.keep_fraction)
        num_anchors, remainder, keep_top = plan.num_anchors, "global", plan.pooled_anchors
    else:
        num_anchors, remainder, keep_top = config.num_anchors, "drop", None

    anchor = select_anchors(shallow, deep, (H, W), num_anchors, config.global_ratio, config.window, remainder=remainder)
    merged = intra_frame_merge(
        tokens, anchor, (H, W), eps=config.intra_eps, spatial_weight=config.spatial_weight,
        nn_mix=config.nn_mix, scale=config.intra_scale, update=config.intra_update,
        max_iter=config.sinkhorn_max_iter, tol=config.sinkhorn_tol, log_domain=config.log_domain,
        stop=config.sinkhorn_stop, stop_group=config.intra_stop,
    )
    if config.pooling is not None:
        pooled, cell_mask, grid2 = spatial_pool(merged, anchor, (H, W), config.stride, config.pooling, keep_top=keep_top)
    else:
        pooled, grid2 = merged, (H, W)
        cell_mask = anchor if keep_top is None else top_cells(anchor.float(), keep_top)

    if config.inter:
        inter_kwargs = dict(eps=config.inter_eps, sigma_t=config.sigma_t, scale=config.inter_scale,
                            emit_keyframe=not config.keyframe_once, max_iter=config.sinkhorn_max_iter,
                            tol=config.sinkhorn_tol, log_domain=config.log_domain, stop=config.sinkhorn_stop)
        if plan is not None:
            res = inter_frame_merge(pooled, cell_mask, segments, keep_counts=plan.keep_counts, **inter_kwargs)
        else:
            res = inter_frame_merge(pooled, cell_mask, segments, keep_ratio=config.keep_ratio, **inter_kwargs)
    else:
        # Inter-frame stage off (the published LLaVA-Video run): every frame's kept cells, in order.
        res = inter_frame_merge(pooled, cell_mask, segments, keep_counts=[0] * Fn, emit_keyframe=False)
        res.kind = torch.full_like(res.kind, KIND_KEPT)
        res.kept_per_frame = cell_mask.sum(1)

    out = CompressResult(
        tokens=res.tokens, frame=res.frame, index=res.index, kind=res.kind, grid=grid2,
        anchors_per_frame=anchor.sum(1), cells_per_frame=cell_mask.sum(1),
        kept_per_frame=res.kept_per_frame, merged_per_frame=res.merged_per_frame,
        segments=segments, plan=plan, anchor_mask=anchor, cell_mask=cell_mask,
    )
    if plan is not None and len(out) != plan.target:
        raise RuntimeError(f"budget planner promised {plan.target} tokens, method produced {len(out)}")
    return out


def _need_deep(deep: Optional[torch.Tensor], tokens: torch.Tensor, what: str) -> None:
    if deep is None:
        raise ValueError(f"{what} needs the deep-layer attention scores (deep), got None")
    if deep.shape != tokens.shape[:2]:
        raise ValueError(f"deep scores must be [F, N] = {tuple(tokens.shape[:2])}, got {tuple(deep.shape)}")


def _exact_budget_method(tokens: torch.Tensor, deep: Optional[torch.Tensor], grid: Tuple[int, int],
                         config: AOTConfig) -> CompressResult:
    """The baselines (§10.1) and the quality preset (§10.3) on the model's own tokens, with the
    per-frame budgets of ``plan_budget(..., inter=False)``."""
    Fn = tokens.shape[0]
    dev = tokens.device
    full = model_tokens(tokens, grid, config.pooling, config.stride)
    grid2 = pooled_grid(grid, config.stride, config.pooling) if config.pooling else tuple(grid)
    n = full.shape[1]
    quality = config.method == "aot"
    segments = make_segments(tokens, config) if quality else [(0, Fn)]
    plan = plan_budget(config.ratio, Fn, grid, config.pooling, config.stride, segments, inter=False)
    plan = dataclasses.replace(plan, num_anchors=0)
    counts = plan.pooled_anchors
    zeros = torch.zeros(Fn, dtype=torch.long, device=dev)
    if quality:
        _need_deep(deep, tokens, "the quality preset")
        res = quality_merge(full, model_scores(deep, grid, config.pooling, config.stride), grid2, segments, counts,
                            attention_share=config.attention_share, salient_share=config.salient_share,
                            salient_weight=config.salient_weight, rounds=config.merge_rounds, eps=config.merge_eps,
                            max_iter=config.sinkhorn_max_iter, tol=config.sinkhorn_tol, log_domain=config.log_domain)
        per_frame = torch.bincount(res.frame, minlength=Fn)
        out = CompressResult(
            tokens=res.tokens, frame=res.frame, index=res.index,
            kind=torch.full((len(res.tokens),), KIND_ANCHOR, dtype=torch.uint8, device=dev), grid=grid2,
            anchors_per_frame=res.seeds_per_frame, cells_per_frame=per_frame, kept_per_frame=per_frame,
            merged_per_frame=n - per_frame, segments=segments, plan=plan)
    else:
        if config.method == "random":
            kept, frame, cell = random_prune(full, counts, config.seed)
        elif config.method == "pool":
            kept, frame, cell = uniform_pool(full, grid2, counts)
        else:
            _need_deep(deep, tokens, "--method attention")
            kept, frame, cell = attention_topk(full, model_scores(deep, grid, config.pooling, config.stride), counts)
        per_frame = torch.as_tensor(counts, dtype=torch.long, device=dev)
        out = CompressResult(
            tokens=kept, frame=frame, index=cell, kind=torch.full((len(kept),), KIND_KEPT, dtype=torch.uint8, device=dev),
            grid=grid2, anchors_per_frame=zeros, cells_per_frame=zeros.clone(), kept_per_frame=per_frame,
            merged_per_frame=(n - per_frame) if config.method == "pool" else zeros.clone(), segments=segments, plan=plan)
    if len(out) != plan.target:
        raise RuntimeError(f"budget planner promised {plan.target} tokens, method produced {len(out)}")
    return out
