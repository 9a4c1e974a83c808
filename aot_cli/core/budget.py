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
    """The requested ratio cannot be met exactly with this geometry. ``smallest_ratio``: the
    smallest ratio that can (rounded up to three significant digits, so that the printed value
    works as given), or None when it is not known."""

    def __init__(self, message: str, smallest_ratio: Optional[float] = None) -> None:
        super().__init__(message)
        self.smallest_ratio = smallest_ratio


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


def _feasible(target: int, num_frames: int, cells: int, clips: int, e: int, inter: bool) -> bool:
    """Whether ``target`` tokens can be kept exactly (the conditions :func:`plan_budget` checks)."""
    if target < 1 or target > num_frames * cells:
        return False
    if not inter:
        return True
    nonkey = num_frames - clips
    return target >= e * clips and math.ceil(target / (e * clips + nonkey)) <= min(target // (e * clips), cells)


def _ratio_for(target: int, num_frames: int, cells: int) -> float:
    """The smallest ratio, at three significant digits, whose :func:`target_tokens` is at least
    ``target``."""
    exact = (target - 0.5) / (num_frames * cells)
    step = 10.0 ** (math.floor(math.log10(exact)) - 2)
    ratio = round(math.ceil(exact / step - 1e-9) * step, 12)
    while target_tokens(ratio, num_frames, cells) < target:
        ratio = round(ratio + step, 12)
    return min(ratio, 1.0)


def smallest_ratio(num_frames: int, cells: int, clips: int = 1, *, inter: bool = True, emit_keyframe: bool = True,
                   at_least: int = 1) -> Optional[float]:
    """The smallest ratio that keeps a count :func:`plan_budget` can meet exactly for ``num_frames``
    frames of ``cells`` tokens in ``clips`` clips, and at least ``at_least`` tokens; None when
    there is none. Printed with three significant digits and rounded up, so it works as given."""
    e = 2 if emit_keyframe else 1
    for target in range(max(1, at_least), num_frames * cells + 1):
        if _feasible(target, num_frames, cells, clips, e, inter):
            ratio = _ratio_for(target, num_frames, cells)
            if _feasible(target_tokens(ratio, num_frames, cells), num_frames, cells, clips, e, inter):
                return ratio
    return None


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
    C = len(segs)
    e = 2 if emit_keyframe else 1
    if target < 1:
        least = smallest_ratio(num_frames, cells, C, inter=inter, emit_keyframe=emit_keyframe)
        raise BudgetError(f"ratio {ratio} keeps {ratio * num_frames * cells:.2f} of the {num_frames}x{cells} tokens, "
                          f"fewer than one; the smallest ratio that works is {least:g}", least)

    keep_counts = [0] * num_frames
    if not inter:
        pooled = _spread(target, num_frames)
    else:
        nonkey = num_frames - C
        lo = math.ceil(target / (e * C + nonkey))
        hi = min(target // (e * C), cells)
        if target < e * C or lo > hi:
            least = smallest_ratio(num_frames, cells, C, emit_keyframe=emit_keyframe)
            if target < e * C:
                why = (f"fewer than the {e * C} that {C} clips need (each keeps its keyframe's anchor cells "
                       f"{'once' if e == 1 else 'twice'}, at least one); the smallest ratio that works is {least:g}")
            else:
                larger = smallest_ratio(num_frames, cells, C, emit_keyframe=emit_keyframe, at_least=target + 1)
                least = larger if larger is not None else least
                why = (f"which no whole number of anchor cells per frame gives exactly; the next ratio that works is "
                       f"{least:g}")
            raise BudgetError(f"ratio {ratio} keeps {target} of the {num_frames}x{cells} tokens, {why}", least)
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
