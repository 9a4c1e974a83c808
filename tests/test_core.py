"""The method core against the reference computation of docs/method.md, POT, and its own contracts."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from aot_cli.core import (AOTConfig, BudgetError, KIND_ANCHOR, KIND_KEPT, KIND_KEYFRAME, compress,
                          dynamic_segments, fixed_segments, inter_frame_merge, intra_frame_merge,
                          plan_budget, select_anchors, sinkhorn, spatial_pool, window_bounds)
from aot_cli.core.anchors import anchor_split
from reference_aot import ref_anchors, ref_chain, ref_intra, ref_pool, ref_sinkhorn


def video_like(F, H, W, D, seed=0):
    """Tokens with spatial and temporal structure (scenes that drift, a cut), positive scores."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, H * W, D, generator=g)
    scene = torch.tensor([0] * (F // 2) + [1] * (F - F // 2 - F // 4) + [2] * (F // 4))[:F]
    drift = torch.randn(F, 1, D, generator=g).cumsum(0) * 0.05
    x = base[scene] + drift + 0.3 * torch.randn(F, H * W, D, generator=g)
    shallow = torch.rand(F, H * W, generator=g) * 5 + 0.1
    deep = torch.rand(F, H * W, generator=g).pow(3) * 20 + 0.1
    return x, shallow, deep


def rel_err(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


# ---------------------------------------------------------------- reference parity (docs/method.md reference settings)

@pytest.mark.parametrize("F,V,keep_ratio,pool,clip,seed", [
    (32, 126, 0.3, "bilinear", 4, 0),
    (32, 126, 0.3, "bilinear", 4, 1),
    (64, 180, 0.4, "average", 8, 2),
])
def test_chain_matches_reference(F, V, keep_ratio, pool, clip, seed):
    x, sh, dp = video_like(F, 27, 27, 48, seed)
    ref_t, ref_f, ref_k = ref_chain(x, sh, dp, 27, 27, V, keep_ratio, pool, clip)
    cfg = AOTConfig(num_anchors=V, keep_ratio=keep_ratio, pooling=pool, clip_length=clip)
    out = compress(x, sh, dp, (27, 27), cfg)
    assert out.tokens.shape == ref_t.shape
    assert rel_err(out.tokens, ref_t) < 1e-4
    assert torch.equal(out.frame, ref_f)
    assert torch.equal(out.kind.long(), ref_k)
    # about 10 % of the 196 x 32 tokens survive with the OneVision reference settings
    if F == 32:
        assert 0.07 < len(out) / (32 * 196) < 0.14


def test_stages_match_reference_individually():
    x, sh, dp = video_like(8, 27, 27, 32, 3)
    mask = select_anchors(sh, dp, (27, 27), 126)
    assert torch.equal(mask, ref_anchors(sh, dp, 27, 27, 126))
    assert (mask.sum(1) == 126).all()
    merged = intra_frame_merge(x, mask, (27, 27))
    ref = ref_intra(x, mask, 27, 27)
    assert rel_err(merged, ref) < 1e-5
    assert torch.equal(merged[~mask], x[~mask])  # non-anchor rows untouched
    assert not torch.allclose(merged[mask], x[mask])
    for mode in ("bilinear", "average"):
        pooled, pmask, grid2 = spatial_pool(merged, mask, (27, 27), mode=mode)
        rp, rm = ref_pool(merged, mask, 27, 27, mode)
        assert grid2 == ((14, 14) if mode == "bilinear" else (13, 13))
        assert rel_err(pooled, rp) < 1e-6 and torch.equal(pmask, rm)


def test_inter_frame_output_layout():
    x, _, _ = video_like(8, 14, 14, 16, 4)
    mask = torch.rand(8, 196, generator=torch.Generator().manual_seed(0)) < 0.2
    res = inter_frame_merge(x, mask, fixed_segments(8, 4), keep_ratio=0.3)
    # clip layout: raw keyframe tokens, kept tokens of frames 1..3, then the anchors
    for s in (0, 4):
        sel = (res.frame >= s) & (res.frame < s + 4)
        kinds = res.kind[sel].tolist()
        n_key = int(mask[s].sum())
        assert kinds[:n_key] == [KIND_KEYFRAME] * n_key and kinds[-n_key:] == [KIND_ANCHOR] * n_key
        assert torch.equal(res.tokens[sel][:n_key], x[s][mask[s]])  # untouched keyframe first
        frames_kept = res.frame[sel][n_key:-n_key].tolist()
        assert frames_kept == sorted(frames_kept)  # kept tokens in frame order
    assert (res.index < 196).all()
    kept_idx = res.index[res.kind == KIND_KEPT]
    kept_frame = res.frame[res.kind == KIND_KEPT]
    assert mask[kept_frame, kept_idx].all()  # kept tokens come from kept cells
    once = inter_frame_merge(x, mask, fixed_segments(8, 4), keep_ratio=0.3, emit_keyframe=False)
    assert len(once.tokens) == len(res.tokens) - int(mask[0].sum() + mask[4].sum())
    assert not (once.kind == KIND_KEYFRAME).any()


# ---------------------------------------------------------------- Sinkhorn

@pytest.mark.parametrize("log_domain", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_sinkhorn_matches_pot(log_domain, batched):
    g = torch.Generator().manual_seed(7)
    B = 3 if batched else 1
    costs = [torch.rand(9 + b, 6 + 2 * b, generator=g) * 2 for b in range(B)]
    M, N = max(c.shape[0] for c in costs), max(c.shape[1] for c in costs)
    C = torch.zeros(B, M, N)
    rm = torch.zeros(B, M, dtype=torch.bool)
    cm = torch.zeros(B, N, dtype=torch.bool)
    for b, c in enumerate(costs):
        C[b, : c.shape[0], : c.shape[1]] = c
        rm[b, : c.shape[0]] = True
        cm[b, : c.shape[1]] = True
    if batched:
        plan = sinkhorn(C, eps=0.1, max_iter=20000, tol=1e-10, log_domain=log_domain, row_mask=rm, col_mask=cm, stop="marginal")
    else:
        plan = sinkhorn(costs[0], eps=0.1, max_iter=20000, tol=1e-10, log_domain=log_domain, stop="marginal")[None]
    for b, c in enumerate(costs):
        m, n = c.shape
        a, bb = np.full(m, 1 / m), np.full(n, 1 / n)
        method = "sinkhorn_log" if log_domain else "sinkhorn"
        want = ot.sinkhorn(a, bb, c.double().numpy(), 0.1, method=method, numItermax=20000, stopThr=1e-12)
        got = plan[b, :m, :n].double().numpy()
        assert np.abs(got - want).max() < 1e-6 * max(1.0, want.max() * m * n)
        assert np.allclose(got.sum(1), a, atol=1e-6) and np.allclose(got.sum(0), bb, atol=1e-6)
        assert float(plan[b, m:, :].abs().sum() + plan[b, :, n:].abs().sum()) == 0.0  # padding empty


def test_sinkhorn_reference_stop_and_log_domain_agree():
    g = torch.Generator().manual_seed(1)
    C = torch.rand(5, 40, 12, generator=g) * 2.5
    for batch_stop in ("joint", "per_problem"):
        k, ik = sinkhorn(C, batch_stop=batch_stop, return_iterations=True)
        lg, il = sinkhorn(C, batch_stop=batch_stop, log_domain=True, return_iterations=True)
        assert torch.equal(ik, il)
        assert rel_err(lg, k) < 1e-5
    ref = ref_sinkhorn(C)
    assert rel_err(sinkhorn(C, batch_stop="joint"), ref) < 1e-6
    # per-problem stopping equals solving every problem alone
    alone = torch.stack([ref_sinkhorn(C[b:b + 1])[0] for b in range(5)])
    assert rel_err(sinkhorn(C), alone) < 1e-6


def test_sinkhorn_checking_every_k_iterations_gives_the_same_plan():
    C = torch.rand(4, 30, 10, generator=torch.Generator().manual_seed(2)) * 2
    p1, i1 = sinkhorn(C, tol=1e-4, check_every=1, return_iterations=True)
    p7, i7 = sinkhorn(C, tol=1e-4, check_every=7, return_iterations=True)
    assert torch.equal(p1, p7) and torch.equal(i1, i7)
    assert i1.min() > 1  # the test exercises several iterations


def test_sinkhorn_small_eps_switches_to_log_domain():
    C = torch.rand(2, 20, 8, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    eps = 0.004  # exp(-C/eps) underflows to zero in float32
    assert (torch.exp(-C / eps) == 0).any()
    plan = sinkhorn(C, eps=eps, max_iter=2000, tol=1e-9, stop="marginal")
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan.sum(2), torch.full((2, 20), 1 / 20), atol=1e-5)
    assert rel_err(plan, sinkhorn(C, eps=eps, max_iter=2000, tol=1e-9, stop="marginal", log_domain=True)) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_compress_accepts_low_precision_inputs(dtype):
    x, sh, dp = video_like(8, 27, 27, 32, 5)
    ref = compress(x, sh, dp, (27, 27), AOTConfig(ratio=0.1))
    out = compress(x.to(dtype), sh.to(dtype), dp.to(dtype), (27, 27), AOTConfig(ratio=0.1))
    assert out.tokens.dtype == dtype and len(out) == len(ref)
    assert torch.isfinite(out.tokens.float()).all()


# ---------------------------------------------------------------- anchors

def test_window_bounds_on_grids_three_does_not_divide():
    assert window_bounds(27, None) == [0, 9, 18, 27]
    assert window_bounds(16, None) == [0, 5, 11, 16]
    assert window_bounds(24, None) == [0, 8, 16, 24]
    assert window_bounds(2, None) == [0, 1, 2]
    assert window_bounds(27, 8) == [0, 8, 16, 24, 27]


def test_select_anchors_on_16x16_grid_uses_nine_uneven_windows():
    g = torch.Generator().manual_seed(0)
    sh, dp = torch.rand(4, 256, generator=g), torch.rand(4, 256, generator=g)
    mask, local = select_anchors(sh, dp, (16, 16), 40, return_parts=True)
    k, local_total, glob = anchor_split(40, 0.5, (16, 16))
    assert (k, local_total, glob) == (2, 18, 20)
    assert (local.sum(1) == 18).all() and (mask.sum(1) == 38).all()
    bounds = [0, 5, 11, 16]
    lm = local.view(4, 16, 16)
    for i in range(3):
        for j in range(3):
            win = lm[:, bounds[i]:bounds[i + 1], bounds[j]:bounds[j + 1]]
            assert (win.reshape(4, -1).sum(1) == 2).all()
            # the local anchors are the window's top-2 shallow scores
            s = sh.view(4, 16, 16)[:, bounds[i]:bounds[i + 1], bounds[j]:bounds[j + 1]].reshape(4, -1)
            top = s.topk(2, dim=1).indices
            assert win.reshape(4, -1).gather(1, top).all()


def test_anchor_remainder_goes_to_global_when_asked():
    sh, dp = torch.rand(2, 729), torch.rand(2, 729)
    # local = 50, k = 50 // 9 = 5 per window -> 45 local (the reference drops 5), global = 50
    assert (select_anchors(sh, dp, (27, 27), 100).sum(1) == 95).all()
    assert (select_anchors(sh, dp, (27, 27), 100, remainder="global").sum(1) == 100).all()


# ---------------------------------------------------------------- segments

def test_fixed_segments():
    assert fixed_segments(32, 4) == [(s, 4) for s in range(0, 32, 4)]
    assert fixed_segments(10, 4) == [(0, 4), (4, 4), (8, 2)]


def test_dynamic_segments_cut_at_scene_changes():
    f = torch.zeros(12, 3)
    f[:5, 0] = 1
    f[5:9, 1] = 1
    f[9:, 2] = 1
    f += 0.01 * torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    assert dynamic_segments(f, c=1, tau=0.8) == [(0, 5), (5, 4), (9, 3)]
    segs = dynamic_segments(f, c=4, tau=0.8)
    assert len(segs) == 4 and sum(l for _, l in segs) == 12  # c-1 = 3 lowest cuts (2 scene cuts + 1)
    assert {5, 9} <= {s for s, _ in segs}


def test_dynamic_segments_in_compress():
    x, sh, dp = video_like(16, 27, 27, 16, 6)
    out = compress(x, sh, dp, (27, 27), AOTConfig(ratio=0.2, segments="dynamic", dynamic_c=4))
    assert len(out) == out.plan.target and len(out.segments) >= 4
    assert out.segments[0][0] == 0 and sum(l for _, l in out.segments) == 16


# ---------------------------------------------------------------- exact budgets

@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.15, 0.2, 0.25, 0.5])
@pytest.mark.parametrize("F,clip,pool", [(32, 4, "bilinear"), (64, 8, "average")])
def test_exact_budget(ratio, F, clip, pool):
    x, sh, dp = video_like(F, 27, 27, 16, int(ratio * 100) + F)
    out = compress(x, sh, dp, (27, 27), AOTConfig(ratio=ratio, clip_length=clip, pooling=pool))
    cells = 196 if pool == "bilinear" else 169
    assert len(out) == int(np.floor(ratio * F * cells + 0.5)) == out.plan.target
    assert int(out.kept_per_frame.sum()) + int(sum(out.cells_per_frame[s] for s, _ in out.segments)) == len(out)


def test_exact_budget_options():
    x, sh, dp = video_like(32, 27, 27, 16, 9)
    for cfg in (AOTConfig(ratio=0.1, keyframe_once=True), AOTConfig(ratio=0.1, inter=False),
                AOTConfig(ratio=0.1, pooling=None), AOTConfig(ratio=0.1, intra_update="normalized")):
        out = compress(x, sh, dp, (27, 27), cfg)
        assert len(out) == out.plan.target
    assert len(compress(x, sh, dp, (27, 27), AOTConfig(ratio=0.1, pooling=None))) == round(0.1 * 32 * 729)


def test_infeasible_budget_is_a_clear_error():
    with pytest.raises(BudgetError, match="clips need .* the smallest ratio that works is 0.00248") as info:
        plan_budget(0.0001, 32, (27, 27), "bilinear", segments=fixed_segments(32, 4))
    smallest = info.value.smallest_ratio  # 16 tokens (8 clips, keyframes twice) of 32 x 196
    assert plan_budget(smallest, 32, (27, 27), "bilinear", segments=fixed_segments(32, 4)).target == 16
    with pytest.raises(BudgetError):
        plan_budget(smallest - 0.00001, 32, (27, 27), "bilinear", segments=fixed_segments(32, 4))
    with pytest.raises(BudgetError, match="ratio"):
        plan_budget(0.0, 32, (27, 27))


def test_method_none_is_the_models_pooling():
    x, _, _ = video_like(4, 27, 27, 8, 0)
    out = compress(x, None, None, (27, 27), AOTConfig(method="none"))
    want = torch.nn.functional.interpolate(x.view(4, 27, 27, 8).permute(0, 3, 1, 2), size=(14, 14), mode="bilinear")
    assert torch.allclose(out.tokens, want.permute(0, 2, 3, 1).reshape(-1, 8), atol=1e-6)
    assert (out.kind == KIND_KEPT).all() and len(out) == 4 * 196


def test_normalized_intra_update_moves_anchors_more():
    x, sh, dp = video_like(4, 27, 27, 16, 1)
    mask = select_anchors(sh, dp, (27, 27), 126)
    ref = intra_frame_merge(x, mask, (27, 27))
    nrm = intra_frame_merge(x, mask, (27, 27), update="normalized")
    assert (nrm[mask] - x[mask]).norm() > 5 * (ref[mask] - x[mask]).norm()
