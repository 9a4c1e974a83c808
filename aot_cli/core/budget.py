"""The budget planner: the one place that turns ``--ratio r`` into exact method parameters.

Target (documented contract)::

    tokens_per_frame = cells per frame the model would get without compression
                       (pooled grid: 14x14 = 196 for LLaVA-OneVision, 13x13 = 169 for LLaVA-Video;
                        the tower grid when the model does not pool)
    target = floor(r * F * tokens_per_frame + 0.5)

Newline embeddings a model appends are not visual tokens and are not counted.

Exact-budget rules (used instead of the reference's data-dependent counts):

1. Every frame keeps exactly ``P`` pooled anchor cells: the ``P`` cells with the largest pooled
   anchor-mask value (ties: lower cell index first) instead of the ``>= 0.5`` threshold.
2. Each clip emits its keyframe raw (``e = 2``, the reference) or only as merged anchors
   (``e = 1``, keyframe-once option), i.e. ``e * P`` tokens per clip.
3. Non-key frame ``f`` keeps exactly ``k_f`` of its ``P`` tokens — the lowest-confidence ones —
   instead of the quantile rule; the rest merge into the clip's anchors.

So ``count = e * P * C + sum(k_f)`` with ``C`` clips. ``P`` is chosen near the reference's balance
(a share ``keep_fraction`` = 0.3 of each non-key frame kept): ``P ~ target / (e*C + 0.3*(F-C))``,
clamped to the feasible range ``target/(e*C + F - C) <= P <= target/(e*C)`` (and ``P <= cells``);
the remainder ``R = target - e*P*C`` is spread evenly over the non-key frames (``k_f <= P``). With
the inter-frame stage off, each frame keeps ``target/F`` cells (the first ``target mod F`` frames of
an even spread get one more). The anchor budget on the tower grid is ``V = ceil(P * N / cells)``
(anchor remainder goes to the global anchors so that exactly ``V`` anchors are chosen).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple


def pooled_grid(grid: Sequence[int], stride: int = 2, mode: str = "bilinear") -> Tuple[int, int]:
    """Grid after pooling: ``ceil(H/stride)`` for bilinear (as LLaVA-OneVision), ``floor`` for average."""
    H, W = int(grid[0]), int(grid[1])
    if mode == "bilinear":
        return math.ceil(H / stride), math.ceil(W / stride)
    if mode == "average":
        return H // stride, W // stride
    raise ValueError(f"pooling mode must be 'bilinear' or 'average', got {mode!r}")


class BudgetError(ValueError):
    """The requested ratio cannot be met exactly with this geometry."""


@dataclass
class BudgetPlan:
    ratio: float
    num_frames: int
    tokens_per_frame: int
    target: int
    num_anchors: int
    pooled_anchors: List[int]
    keep_counts: List[int]
    segments: List[Tuple[int, int]]
    emit_keyframe: bool
    inter: bool

    def expected_count(self) -> int:
        if not self.inter:
            return sum(self.pooled_anchors)
        e = 2 if self.emit_keyframe else 1
        return e * sum(self.pooled_anchors[s] for s, _ in self.segments) + sum(self.keep_counts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["segments"] = [list(s) for s in self.segments]
        return d


def target_tokens(ratio: float, num_frames: int, tokens_per_frame: int) -> int:
    """``floor(r * F * tokens_per_frame + 0.5)`` (round half up)."""
    return int(math.floor(ratio * num_frames * tokens_per_frame + 0.5))


def _spread(total: int, slots: int) -> List[int]:
    """``total`` split over ``slots`` as evenly as possible, extras spaced out (Bresenham)."""
    return [((j + 1) * total) // slots - (j * total) // slots for j in range(slots)]


def plan_budget(
    ratio: float,
    num_frames: int,
    grid: Sequence[int],
    pooling: Optional[str] = "bilinear",
    stride: int = 2,
    segments: Optional[Sequence[Tuple[int, int]]] = None,
    *,
    inter: bool = True,
    emit_keyframe: bool = True,
    keep_fraction: float = 0.3,
) -> BudgetPlan:
    """Exact method parameters for keeping ``target_tokens(ratio, F, cells)`` tokens."""
    if not 0.0 < ratio <= 1.0:
        raise BudgetError(f"ratio must be in (0, 1], got {ratio}")
    if num_frames < 1:
        raise BudgetError(f"need at least one frame, got {num_frames}")
    H, W = int(grid[0]), int(grid[1])
    N = H * W
    cells = math.prod(pooled_grid((H, W), stride, pooling)) if pooling else N
    target = target_tokens(ratio, num_frames, cells)
    segs = [(int(s), int(l)) for s, l in (segments or [(0, num_frames)])]
    if sum(l for _, l in segs) != num_frames:
        raise BudgetError(f"segments cover {sum(l for _, l in segs)} frames, expected {num_frames}")
    if target < 1:
        raise BudgetError(f"ratio {ratio} keeps {ratio * num_frames * cells:.2f} tokens of {num_frames}x{cells}: fewer than one")

    keep_counts = [0] * num_frames
    if not inter:
        pooled = _spread(target, num_frames)
    else:
        C = len(segs)
        e = 2 if emit_keyframe else 1
        nonkey = num_frames - C
        lo = math.ceil(target / (e * C + nonkey))
        hi = min(target // (e * C), cells)
        if target < e * C or lo > hi:
            need = f"each of the {C} clips needs {e} token(s) per anchor cell" if target < e * C else "no per-frame anchor count fits"
            raise BudgetError(
                f"ratio {ratio} keeps {target} tokens, which cannot be met exactly: {need} "
                f"(feasible targets need {e * C} <= target and a P with target/{e * C + nonkey} <= P <= target/{e * C}); "
                "use a larger ratio or longer clips"
            )
        P = min(max(round(target / (e * C + keep_fraction * nonkey)), lo), hi)
        R = target - e * C * P
        nonkey_frames = [s + t for s, l in segs for t in range(1, l)]
        for f, k in zip(nonkey_frames, _spread(R, len(nonkey_frames)) if nonkey_frames else []):
            keep_counts[f] = k
        pooled = [P] * num_frames
    P_max = max(pooled)
    V = min(N, math.ceil(P_max * N / cells)) if pooling else P_max
    plan = BudgetPlan(ratio, num_frames, cells, target, V, pooled, keep_counts, segs, emit_keyframe, inter)
    assert plan.expected_count() == target, (plan, target)
    return plan
