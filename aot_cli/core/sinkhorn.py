"""Entropic optimal transport by Sinkhorn iterations, batched (docs/method.md §6).

Every problem in a batch is ``cost[b]`` of shape ``[M, N]`` with uniform marginals over its valid
rows and columns. Problems of different sizes share one batch through ``row_mask``/``col_mask``
(padding rows/columns carry no mass and never influence the valid ones).

Reference iteration (kernel form)::

    K = exp(-C / eps);  r = 1;  c = 1
    repeat up to max_iter:
        r_prev = r;  r = mu / (K c);  c = nu / (K^T r)
        stop once mean|r - r_prev| < tol
    T = diag(r) K diag(c)

``batch_stop`` says how the stopping test groups problems:

- ``"per_problem"`` (default): each problem stops on its own mean, exactly as if it had been solved
  alone; problems that have stopped are frozen while the others go on.
- ``"joint"``: the mean runs over all valid rows of all problems together and they stop together.
  This is what the reference does when it solves all frames of a video in one batched call
  (the intra-frame stage).

Host synchronisation: the stopping decision is kept on the device as a per-problem ``done`` flag
that freezes finished problems, so the iterates are exactly those of a solver that checks after
every iteration. The host only looks at the flags every ``check_every`` iterations to leave the
loop early; that changes how many (no-op) iterations run, never the result.
"""
from __future__ import annotations

from typing import Optional

import torch

#: Above this value of max(C)/eps the kernel exp(-C/eps) can underflow in float32 (exp(-87) is the
#: smallest normal float32), so the solver switches to the log domain, which computes the same
#: iterates without underflow.
KERNEL_UNDERFLOW_LIMIT = 80.0


def sinkhorn(
    cost: torch.Tensor,
    eps: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-2,
    log_domain: Optional[bool] = False,
    *,
    row_mask: Optional[torch.Tensor] = None,
    col_mask: Optional[torch.Tensor] = None,
    batch_stop: str = "per_problem",
    stop: str = "reference",
    check_every: Optional[int] = None,
    return_iterations: bool = False,
    init_log_c: Optional[torch.Tensor] = None,
    return_log_c: bool = False,
):
    """Solve entropic OT for a batch of cost matrices.

    Args:
        cost: ``[B, M, N]`` (or ``[M, N]``, solved as a batch of one and returned unbatched).
        eps: entropic regularisation.
        max_iter: iteration cap.
        tol: threshold of the stopping test.
        log_domain: ``True`` computes in the log domain; ``False`` uses the kernel form unless
            ``max(C)/eps`` exceeds :data:`KERNEL_UNDERFLOW_LIMIT`, where the kernel would underflow
            and the log domain is used automatically (same iterates); ``None`` behaves like ``False``.
        row_mask, col_mask: ``[B, M]`` / ``[B, N]`` booleans marking the valid rows / columns.
        batch_stop: ``"per_problem"`` or ``"joint"`` (see module docstring).
        stop: ``"reference"`` — mean absolute change of ``r`` below ``tol`` (docs/method.md §6);
            ``"marginal"`` — a converged solve: L1 error of the row marginal below ``tol``.
        check_every: iterations between host checks of the stopping flags (default: 1 on CPU,
            10 on accelerators). Does not change the result.
        return_iterations: also return the number of iterations each problem ran (``[B]`` int).
        init_log_c: warm start: ``log c`` ``[B, N]`` (e.g. from an earlier solve of a nearby
            problem) instead of ``c = 1``; entries of invalid columns are ignored.
        return_log_c: also return the final ``log c`` ``[B, N]`` (0 on invalid columns), last.

    Returns:
        The transport plan, float32, shaped like ``cost`` (zeros on padding).
    """
    if batch_stop not in ("per_problem", "joint"):
        raise ValueError(f"batch_stop must be 'per_problem' or 'joint', got {batch_stop!r}")
    if stop not in ("reference", "marginal"):
        raise ValueError(f"stop must be 'reference' or 'marginal', got {stop!r}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    unbatched = cost.dim() == 2
    if unbatched:
        cost = cost.unsqueeze(0)
        row_mask = None if row_mask is None else row_mask.unsqueeze(0)
        col_mask = None if col_mask is None else col_mask.unsqueeze(0)
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B,M,N] or [M,N], got shape {tuple(cost.shape)}")
    B, M, N = cost.shape
    device = cost.device
    C = cost.float()
    if row_mask is None:
        row_mask = torch.ones(B, M, dtype=torch.bool, device=device)
    if col_mask is None:
        col_mask = torch.ones(B, N, dtype=torch.bool, device=device)
    pair = row_mask[:, :, None] & col_mask[:, None, :]
    m_count = row_mask.sum(1).clamp_min(1).float()  # [B]
    n_count = col_mask.sum(1).clamp_min(1).float()
    mu = row_mask.float() / m_count[:, None]  # [B,M]
    nu = col_mask.float() / n_count[:, None]  # [B,N]
    if check_every is None:
        check_every = 1 if device.type == "cpu" else 10
    check_every = max(1, int(check_every))

    scaled = torch.where(pair, C / eps, torch.zeros((), device=device))
    use_log = bool(log_domain)
    if not use_log and B * M * N > 0:
        use_log = bool(scaled.amax() > KERNEL_UNDERFLOW_LIMIT)

    rowf, colf = row_mask.float(), col_mask.float()
    if use_log:
        neg = torch.where(pair, -scaled, torch.full((), float("-inf"), device=device))
        log_mu = torch.where(row_mask, mu.log(), torch.zeros((), device=device))
        log_nu = torch.where(col_mask, nu.log(), torch.zeros((), device=device))
        f = torch.zeros(B, M, device=device)  # log r
        g = torch.zeros(B, N, device=device)  # log c
        if init_log_c is not None:
            g = torch.where(col_mask, init_log_c.reshape(B, N).float(), g)

        def step(f, g):
            f_new = torch.where(row_mask, log_mu - torch.logsumexp(neg + g[:, None, :], dim=2), 0.0)
            g_new = torch.where(col_mask, log_nu - torch.logsumexp(neg + f_new[:, :, None], dim=1), 0.0)
            return f_new, g_new

        def row_values(f):
            return f.exp() * rowf

        def plan_rows(f, g):
            lse = torch.logsumexp(neg + g[:, None, :], dim=2)
            return torch.where(row_mask, (f + lse).exp(), torch.zeros((), device=device))

        state = (f, g)
    else:
        K = torch.exp(-scaled) * pair.float()
        r = rowf.clone()
        c = colf.clone()
        if init_log_c is not None:
            c = torch.where(col_mask, init_log_c.reshape(B, N).float().exp(), c)

        def step(r, c):
            Kc = torch.bmm(K, c.unsqueeze(2)).squeeze(2)
            r_new = torch.where(row_mask, mu / Kc, torch.zeros((), device=device))
            Ktr = torch.bmm(K.transpose(1, 2), r_new.unsqueeze(2)).squeeze(2)
            c_new = torch.where(col_mask, nu / Ktr, torch.zeros((), device=device))
            return r_new, c_new

        def row_values(r):
            return r

        def plan_rows(r, c):
            return r * torch.bmm(K, c.unsqueeze(2)).squeeze(2)

        state = (r, c)

    done = torch.zeros(B, dtype=torch.bool, device=device)
    iters = torch.zeros(B, dtype=torch.long, device=device)
    for it in range(max_iter):
        prev_rows = row_values(state[0])
        new = step(*state)
        if stop == "reference":
            diff = (row_values(new[0]) - prev_rows).abs() * rowf
            if batch_stop == "joint":
                err = (diff.sum() / m_count.sum()).expand(B)
            else:
                err = diff.sum(1) / m_count
        else:
            # row sums of diag(r) K diag(c) without forming the plan
            err = ((plan_rows(*new) - mu).abs() * rowf).sum(1)
            if batch_stop == "joint":
                err = err.sum().expand(B)
        active = ~done
        state = tuple(torch.where(active[:, None], n, o) for n, o in zip(new, state))
        iters = iters + active.long()
        done = done | (err < tol)
        if (it + 1) % check_every == 0 and bool(done.all()):
            break

    plan = _plan(state, use_log, scaled, pair, None if use_log else K)
    log_c = state[1] if use_log else state[1].clamp_min(torch.finfo(torch.float32).tiny).log()
    log_c = torch.where(col_mask, log_c, torch.zeros((), device=device))
    if unbatched:
        plan, iters, log_c = plan.squeeze(0), iters.squeeze(0), log_c.squeeze(0)
    out = (plan,) + ((iters,) if return_iterations else ()) + ((log_c,) if return_log_c else ())
    return out if len(out) > 1 else plan


def _plan(state, use_log: bool, scaled: torch.Tensor, pair: torch.Tensor, K: Optional[torch.Tensor]) -> torch.Tensor:
    """``diag(r) K diag(c)`` from the current scalings (zeros outside valid pairs)."""
    if use_log:
        f, g = state
        logp = f[:, :, None] + g[:, None, :] - scaled
        return torch.where(pair, logp.exp(), torch.zeros((), device=scaled.device))
    r, c = state
    return r[:, :, None] * K * c[:, None, :]
