"""The method's configuration, :class:`AOTConfig`, with its checks and presets. Imports no
torch, so every command validates its flags before the heavy libraries load."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

#: Largest ``--seed`` (the seed of ``torch.Generator``, a signed 64-bit integer).
MAX_SEED = 2**63 - 1
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
