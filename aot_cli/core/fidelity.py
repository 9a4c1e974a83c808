"""How faithfully a compressed token set stands for the uncompressed one (docs/method.md §10.2).

All three figures compare the *kept* tokens ``[T, D]`` (a method's output) with the *full* tokens
``[N, D]``: the model's own uncompressed tokens after its pooling (``method="none"``; see
:func:`full_tokens`). Similarity is the cosine; the figures are float64.

- **coverage**: the mean over all full tokens of the largest cosine similarity to a kept token
  (1 = every full token has an exact copy among the kept ones).
- **salient coverage**: the same mean over the salient full tokens only: the ``share`` (10 %) of
  full tokens with the highest received attention of the deep score layer (§1), that map pooled
  the same way as the tokens (:func:`salient_mask`).
- **OT error**: the exact earth mover's distance between the full tokens, mass ``1/N`` each, and
  the kept tokens, mass ``1/T`` each, with cost ``1 - cos`` (POT's ``ot.emd2``, network simplex).
  0 when the kept set *is* the full set; it grows when the kept tokens over- or under-represent
  parts of the video (a token emitted twice counts twice).

POT is an optional dependency (``pip install 'aot-cli[fidelity]'``), imported only when an OT error
is computed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .pool import model_scores, model_tokens

#: Share of the full tokens that count as salient.
SALIENT_SHARE = 0.1
#: Install hint named by the one-line error when POT is missing.
FIDELITY_EXTRA = "pip install 'aot-cli[fidelity]'"


class FidelityError(RuntimeError):
    """A fidelity figure cannot be computed (POT missing, the exact solver did not finish)."""


@dataclass
class Fidelity:
    """The three figures of one kept set against one full set (see the module docstring).
    ``ot_error`` is None when it was not asked for. ``kept`` / ``full``: token counts;
    ``salient``: how many full tokens counted as salient."""

    coverage: float
    salient_coverage: Optional[float]
    ot_error: Optional[float]
    kept: int
    full: int
    salient: int

    def to_dict(self) -> dict:
        return asdict(self)


def full_tokens(tokens: torch.Tensor, grid: Sequence[int], pooling: Optional[str] = "bilinear",
                stride: int = 2) -> torch.Tensor:
    """The full set: ``tokens [F, H*W, D]`` as the model pools them (:func:`aot_cli.core.model_tokens`),
    flattened to ``[F * cells, D]`` in frame, then row-major cell order (the order of
    ``compress(..., AOTConfig(method="none"))``)."""
    return model_tokens(tokens, grid, pooling, stride).reshape(-1, tokens.shape[-1])


def full_scores(scores: torch.Tensor, grid: Sequence[int], pooling: Optional[str] = "bilinear",
                stride: int = 2) -> torch.Tensor:
    """A received-attention map ``[F, H*W]`` pooled like :func:`full_tokens`, flattened to
    ``[F * cells]`` float32 (:func:`aot_cli.core.model_scores`)."""
    return model_scores(scores, grid, pooling, stride).reshape(-1)


def salient_mask(salience: torch.Tensor, share: float = SALIENT_SHARE) -> torch.Tensor:
    """Bool mask of the ``max(1, floor(share * N + 0.5))`` entries of ``salience [N]`` with the
    highest values (ties: the lower index)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"salient share must be in (0, 1], got {share}")
    n = salience.shape[0]
    k = min(n, max(1, int(math.floor(share * n + 0.5))))
    order = torch.sort(-salience.float(), stable=True).indices[:k]
    mask = torch.zeros(n, dtype=torch.bool, device=salience.device)
    mask[order] = True
    return mask


def cosine_matrix(full: torch.Tensor, kept: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``[N, T]`` cosine similarities of ``full [N, D]`` and ``kept [T, D]``, float64, computed in
    row chunks of ``chunk``."""
    if full.dim() != 2 or kept.dim() != 2 or full.shape[1] != kept.shape[1]:
        raise ValueError(f"full and kept tokens must be [N, D] and [T, D] with the same D, got "
                         f"{tuple(full.shape)} and {tuple(kept.shape)}")
    b = F.normalize(kept.double(), dim=1)
    if not len(full):
        return torch.zeros(0, kept.shape[0], dtype=torch.float64, device=full.device)
    return torch.cat([F.normalize(part.double(), dim=1) @ b.T for part in full.split(chunk)])


def coverage(full: torch.Tensor, kept: torch.Tensor, cos: Optional[torch.Tensor] = None) -> float:
    """Mean over ``full [N, D]`` of the largest cosine similarity to ``kept [T, D]``."""
    cos = cosine_matrix(full, kept) if cos is None else cos
    return float(cos.amax(1).mean())


def salient_coverage(full: torch.Tensor, kept: torch.Tensor, salience: torch.Tensor,
                     share: float = SALIENT_SHARE, cos: Optional[torch.Tensor] = None) -> float:
    """:func:`coverage` over the salient full tokens only (:func:`salient_mask` of ``salience [N]``)."""
    if salience.shape != (full.shape[0],):
        raise ValueError(f"salience must be [{full.shape[0]}] (one value per full token), got {tuple(salience.shape)}")
    mask = salient_mask(salience, share)
    cos = cosine_matrix(full[mask], kept) if cos is None else cos[mask]
    return float(cos.amax(1).mean())


def require_pot():
    """The ``ot`` module (POT), imported now; :class:`FidelityError` (one line naming the extra)
    when it is not installed."""
    try:
        import ot  # noqa: F401
    except ImportError:
        raise FidelityError(f"the OT error needs POT (Python Optimal Transport), which is not installed; "
                            f"run: {FIDELITY_EXTRA}") from None
    return ot


def ot_error(full: torch.Tensor, kept: torch.Tensor, cos: Optional[torch.Tensor] = None,
             max_iter: Optional[int] = None) -> float:
    """Exact earth mover's distance (``ot.emd2``) between ``full [N, D]`` (mass ``1/N`` each) and
    ``kept [T, D]`` (mass ``1/T`` each), cost ``1 - cos``, in float64.

    ``max_iter``: network-simplex iteration cap (default ``max(10**6, 50 * N * T)``). Raises
    :class:`FidelityError` when POT is missing or the solver stops before the optimum.
    """
    ot = require_pot()
    import numpy as np

    cos = cosine_matrix(full, kept) if cos is None else cos
    N, T = cos.shape
    if N == 0 or T == 0:
        raise ValueError(f"the OT error needs at least one full and one kept token, got {N} and {T}")
    cost = (1.0 - cos.double()).clamp_min(0.0).cpu().numpy()
    a = np.full(N, 1.0 / N)
    b = np.full(T, 1.0 / T)
    cap = max_iter or max(10**6, 50 * N * T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, log = ot.emd2(a, b, np.ascontiguousarray(cost), numItermax=cap, log=True)
    if log.get("result_code", 1) != 1:
        raise FidelityError(f"exact OT did not reach the optimum ({log.get('warning') or 'result code ' + str(log.get('result_code'))}); "
                            f"raise max_iter above {cap}")
    return float(value)


def fidelity(full: torch.Tensor, kept: torch.Tensor, salience: Optional[torch.Tensor] = None, *,
             share: float = SALIENT_SHARE, ot: bool = True) -> Fidelity:
    """Coverage, salient coverage (when ``salience [N]`` is given) and OT error (when ``ot``) of
    ``kept [T, D]`` against ``full [N, D]``; the cosine matrix is computed once for all three."""
    cos = cosine_matrix(full, kept)
    sal = None
    n_sal = 0
    if salience is not None:
        sal = salient_coverage(full, kept, salience, share, cos=cos)
        n_sal = int(salient_mask(salience, share).sum())
    return Fidelity(
        coverage=coverage(full, kept, cos=cos), salient_coverage=sal,
        ot_error=ot_error(full, kept, cos=cos) if ot else None,
        kept=int(kept.shape[0]), full=int(full.shape[0]), salient=n_sal,
    )
