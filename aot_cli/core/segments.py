"""Clip boundaries for the inter-frame stage (docs/method.md §5 fixed clips, §7 dynamic segments)."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

if TYPE_CHECKING:
    import torch

Segment = Tuple[int, int]  # (start frame, length)


def fixed_segments(num_frames: int, length: int) -> List[Segment]:
    """Consecutive clips of ``length`` frames; the last one is shorter when ``length`` does not
    divide ``num_frames``."""
    if length < 1:
        raise ValueError(f"clip length must be >= 1, got {length}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    return [(s, min(length, num_frames - s)) for s in range(0, num_frames, length)]


def dynamic_segments(frame_features: torch.Tensor, c: int = 8, tau: float = 0.8) -> List[Segment]:
    """FastVID-style segments from per-frame global features ``[F, D]``.

    Consecutive frames' cosine similarity (features L2-normalised); a new segment starts after
    each of the ``c - 1`` lowest similarities and after every similarity below ``tau``.
    Deterministic: equal similarities are cut at the earlier frame first.
    """
    import torch  # here, not at the top: fixed_segments is used by the torch-free flag checks
    import torch.nn.functional as F

    Fn = frame_features.shape[0]
    if Fn == 0:
        return []
    if c < 1:
        raise ValueError(f"c must be >= 1, got {c}")
    if Fn == 1:
        return [(0, 1)]
    f = F.normalize(frame_features.float(), dim=-1)
    sim = (f[:-1] * f[1:]).sum(-1)  # [F-1], sim[i] between frame i and i+1
    cuts = set()
    n_low = min(c - 1, Fn - 1)
    if n_low > 0:
        order = torch.sort(sim, stable=True).indices[:n_low]
        cuts.update(int(i) for i in order.tolist())
    cuts.update(int(i) for i in torch.nonzero(sim < tau).flatten().tolist())
    starts = [0] + sorted(i + 1 for i in cuts)
    ends = starts[1:] + [Fn]
    return [(s, e - s) for s, e in zip(starts, ends)]
