"""Baselines (random, pool, attention) and the quality preset (docs/method.md §10): exact budgets,
the cache-facing fields, their definitions checked against direct computations, and AOTConfig's
preset / method / seed handling."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aot_cli.config import from_dict
from aot_cli.core import KIND_ANCHOR, KIND_KEPT, AOTConfig, compress, plan_budget
from aot_cli.core.baselines import attention_topk, pool_regions, random_prune, uniform_pool
from aot_cli.core.quality import initial_anchors, quality_merge
from aot_cli.pipeline.run import append_newlines

from test_core import video_like

METHODS = [("random", {}), ("pool", {}), ("attention", {}), ("aot", {"preset": "quality"})]


def config_for(method, extra, **kw):
    if extra.get("preset") == "quality":
        return AOTConfig.preset("quality", **kw)
    return AOTConfig(method=method, **kw)


def pooled(x, grid, mode):
    Fn, N, D = x.shape
    img = x.reshape(Fn, *grid, D).permute(0, 3, 1, 2)
    if mode == "bilinear":
        out = F.interpolate(img, size=(math.ceil(grid[0] / 2), math.ceil(grid[1] / 2)), mode="bilinear", align_corners=False)
    else:
        out = F.avg_pool2d(img, 2)
    return out.permute(0, 2, 3, 1).reshape(Fn, -1, D)


# ---------------------------------------------------------------- exact budgets

@pytest.mark.parametrize("method,extra", METHODS, ids=[m if not e else "quality" for m, e in METHODS])
@pytest.mark.parametrize("F_,clip,pool", [(32, 4, "bilinear"), (64, 8, "average")])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2, 0.117])
def test_exact_budget_on_32_and_64_frames(method, extra, F_, clip, pool, ratio):
    x, sh, dp = video_like(F_, 27, 27, 16, F_ + int(ratio * 1000))
    cfg = config_for(method, extra, ratio=ratio, pooling=pool, clip_length=clip)
    out = compress(x, sh, dp, (27, 27), cfg)
    cells = 196 if pool == "bilinear" else 169
    target = int(np.floor(ratio * F_ * cells + 0.5))
    assert len(out) == target == out.plan.target
    assert out.tokens.shape == (target, 16) and torch.isfinite(out.tokens).all()
    assert out.grid == ((14, 14) if pool == "bilinear" else (13, 13))
    assert ((out.index >= 0) & (out.index < cells)).all() and ((out.frame >= 0) & (out.frame < F_)).all()
    # no two tokens claim the same cell of the same frame; frames come in order
    key = out.frame * cells + out.index
    assert len(torch.unique(key)) == target
    assert (out.frame[1:] >= out.frame[:-1]).all()
    assert int(out.kept_per_frame.sum()) == target
    assert torch.equal(out.kept_per_frame, torch.bincount(out.frame, minlength=F_))
    want_kind = KIND_ANCHOR if method == "aot" else KIND_KEPT
    assert (out.kind == want_kind).all()
    if method != "aot":  # the baselines spread the budget evenly over the frames
        assert out.kept_per_frame.tolist() == out.plan.pooled_anchors
        assert int(out.kept_per_frame.max() - out.kept_per_frame.min()) <= 1


def test_baselines_need_only_what_they_use():
    x, _, dp = video_like(8, 27, 27, 8, 1)
    for method in ("random", "pool"):
        assert len(compress(x, None, None, (27, 27), AOTConfig(method=method, ratio=0.1))) == round(0.1 * 8 * 196)
    with pytest.raises(ValueError, match="deep"):
        compress(x, None, None, (27, 27), AOTConfig(method="attention", ratio=0.1))
    with pytest.raises(ValueError, match="deep"):
        compress(x, None, None, (27, 27), AOTConfig.preset("quality", ratio=0.1))
    # plain towers (no pooling): the tower grid is the full set
    out = compress(x, None, dp, (27, 27), AOTConfig(method="attention", ratio=0.1, pooling=None))
    assert len(out) == round(0.1 * 8 * 729) and out.grid == (27, 27)


def test_newlines_splice_into_baseline_and_quality_outputs():
    x, sh, dp = video_like(8, 27, 27, 8, 2)
    nl = torch.full((8,), 7.0)
    for cfg in (AOTConfig(method="pool", ratio=0.1, pooling="average"), AOTConfig.preset("quality", ratio=0.1, pooling="average")):
        res = compress(x, sh, dp, (27, 27), cfg)
        tokens, frame, index, kind = append_newlines(res, nl, "grid")
        visual = kind != 3
        assert int(visual.sum()) == len(res) and torch.equal(tokens[visual], res.tokens)
        # one newline after every run of tokens from one frame row (as the grid convention says)
        rows = res.frame * 100 + res.index // res.grid[1]
        runs = 1 + int((rows[1:] != rows[:-1]).sum())
        assert int((~visual).sum()) == runs and kind[-1] == 3


# ---------------------------------------------------------------- the baselines, directly

def test_random_prune_is_seeded_and_uniform_per_frame():
    x, _, _ = video_like(6, 14, 14, 8, 3)
    counts = [5, 6, 5, 6, 5, 6]
    a = random_prune(x, counts, seed=11)
    b = random_prune(x, counts, seed=11)
    c = random_prune(x, counts, seed=12)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[2], c[2])
    tokens, frame, cell = a
    assert torch.bincount(frame, minlength=6).tolist() == counts
    assert torch.equal(tokens, x[frame, cell])  # kept tokens are untouched copies
    # every cell is equally likely: over many seeds the picks of frame 0 spread over all 196 cells
    hits = torch.zeros(196)
    for seed in range(400):
        _, fr, ce = random_prune(x, counts, seed=seed)
        hits.index_add_(0, ce[fr == 0], torch.ones(int((fr == 0).sum())))
    assert (hits > 0).all() and hits.max() < 4 * hits.mean()
    with pytest.raises(ValueError, match="seed"):
        random_prune(x, counts, seed=-1)


def test_attention_topk_keeps_each_frames_highest_pooled_scores():
    x, _, dp = video_like(4, 27, 27, 8, 4)
    full = pooled(x, (27, 27), "bilinear")
    scores = pooled(dp[:, :, None], (27, 27), "bilinear")[:, :, 0]
    counts = [3, 10, 0, 25]
    tokens, frame, cell = attention_topk(full, scores, counts)
    for f, k in enumerate(counts):
        want = sorted(torch.topk(scores[f], k).indices.tolist()) if k else []
        assert cell[frame == f].tolist() == want  # row-major order inside the frame
    assert torch.equal(tokens, full[frame, cell])
    out = compress(x, None, dp, (27, 27), AOTConfig(method="attention", ratio=0.05))
    f0 = out.index[out.frame == 0]
    assert f0.tolist() == sorted(torch.topk(scores[0], len(f0)).indices.tolist())


@pytest.mark.parametrize("grid,k", [((14, 14), 1), ((14, 14), 23), ((14, 14), 49), ((13, 13), 17), ((14, 14), 196), ((5, 9), 7)])
def test_pool_regions_partition_the_grid(grid, k):
    weights, cells = pool_regions(grid, k)
    h, w = grid
    assert weights.shape == (k, h * w) and cells.shape == (k,)
    member = weights > 0
    assert (member.sum(0) == 1).all()  # every cell in exactly one region
    assert torch.allclose(weights.sum(1), torch.ones(k))  # each row is a mean
    sizes = member.sum(1)
    assert sizes.max() <= 2 * sizes.min() + 2  # near-equal rectangles
    for j in range(k):  # rectangles, with the centre cell inside
        ids = torch.nonzero(member[j]).flatten()
        rows, cols = ids // w, ids % w
        assert len(ids) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert member[j, cells[j]]
    assert (cells[1:] > cells[:-1]).all()  # row-major order


def test_uniform_pool_matches_average_pooling_when_the_grid_divides():
    x, _, _ = video_like(3, 14, 14, 8, 5)
    tokens, frame, cell = uniform_pool(x, (14, 14), [49, 49, 49])
    want = F.avg_pool2d(x.reshape(3, 14, 14, 8).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.allclose(tokens, want, atol=1e-6)
    assert frame.tolist() == [0] * 49 + [1] * 49 + [2] * 49
    # uneven budgets: 5 regions of a 14x14 frame are the means of their rectangles
    tokens, frame, cell = uniform_pool(x, (14, 14), [5, 0, 1])
    weights, _ = pool_regions((14, 14), 5)
    assert torch.allclose(tokens[:5], weights @ x[0], atol=1e-6)
    assert torch.allclose(tokens[5], x[2].mean(0), atol=1e-6) and frame.tolist() == [0] * 5 + [2]


# ---------------------------------------------------------------- the quality merge

def clustered(C, L, n, K, D=12, seed=0, noise=0.05):
    """Clips whose L*n tokens come from K well-separated directions in equal numbers."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(C, K, D, generator=g), dim=2) * 3
    labels = torch.stack([torch.randperm(L * n, generator=g) % K for _ in range(C)])
    x = torch.gather(centres, 1, labels[:, :, None].expand(-1, -1, D)) + noise * torch.randn(C, L * n, D, generator=g)
    return x.reshape(C * L, n, D), centres, labels


def test_quality_merge_recovers_balanced_clusters():
    # 2 clips of 2 frames on a 4x4 grid, 4 equal clusters per clip, 4 anchors per clip: balanced OT
    # aggregation must give each anchor one cluster, whose mean it becomes.
    x, centres, labels = clustered(2, 2, 16, 4)
    scores = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    res = quality_merge(x, scores, (4, 4), [(0, 2), (2, 2)], [2, 2, 2, 2], salient_weight=0.0, rounds=3)
    assert len(res.tokens) == 8 and res.members.tolist() == [8] * 8
    for c in range(2):
        toks = x[2 * c:2 * c + 2].reshape(-1, 12)
        means = torch.stack([toks[labels[c] == k].mean(0) for k in range(4)])
        mine = res.tokens[res.frame // 2 == c]
        sim = F.normalize(mine, dim=1) @ F.normalize(means, dim=1).T
        assert (sim.amax(1) > 0.9999).all() and len(set(sim.argmax(1).tolist())) == 4
        # each output sits on a member of its own cluster
        for tok, f, i in zip(mine, res.frame[res.frame // 2 == c], res.index[res.frame // 2 == c]):
            member_label = labels[c][(int(f) - 2 * c) * 16 + int(i)]
            assert torch.allclose(tok, means[member_label], atol=1e-5)


def test_quality_salient_weight_pulls_anchors_towards_salient_tokens():
    x, _, _ = clustered(1, 1, 64, 2, seed=3, noise=0.4)
    scores = torch.rand(1, 64, generator=torch.Generator().manual_seed(4))
    sal = torch.topk(scores[0], 6).indices
    plain = quality_merge(x, scores, (8, 8), [(0, 1)], [2], salient_weight=0.0, attention_share=0.0)
    heavy = quality_merge(x, scores, (8, 8), [(0, 1)], [2], salient_weight=20.0, attention_share=0.0)

    def closeness(res):
        return (F.normalize(x[0, sal], dim=1) @ F.normalize(res.tokens, dim=1).T).amax(1).mean()

    assert closeness(heavy) > closeness(plain) + 1e-3


def test_quality_initial_anchors_grid_then_top_attention():
    g = torch.Generator().manual_seed(5)
    scores = torch.rand(2, 3 * 16, generator=g)
    valid = torch.ones(2, 48, dtype=torch.bool)
    valid[1, 32:] = False  # the second clip has two frames
    init = initial_anchors(scores, valid, [(3, 10), (2, 4)], (4, 4), attention_share=0.3)
    assert init.sum(1).tolist() == [10, 4]
    assert not (init & ~valid).any()
    # clip 0: 3 attention anchors (round(0.3 * 10)), 7 grid anchors spread 2, 2, 3 over its frames
    grid0 = torch.zeros(48, dtype=torch.bool)
    for f, k in enumerate([2, 2, 3]):
        grid0[f * 16 + pool_regions((4, 4), k)[1]] = True
    assert torch.equal(init[0] & grid0, grid0)
    rest = scores[0].masked_fill(grid0, -1.0)
    assert torch.equal(init[0] & ~grid0, torch.zeros(48, dtype=torch.bool).index_fill(0, rest.topk(3).indices, True))
    # attention_share 1: every anchor on the top-attention tokens of the valid ones
    only = initial_anchors(scores, valid, [(3, 10), (2, 4)], (4, 4), attention_share=1.0)
    assert torch.equal(torch.nonzero(only[1]).flatten().sort().values,
                       scores[1, :32].topk(4).indices.sort().values)


def test_quality_with_one_anchor_per_token_returns_the_tokens():
    x, _, dp = video_like(4, 27, 27, 8, 6)
    full = pooled(x, (27, 27), "bilinear")
    scores = pooled(dp[:, :, None], (27, 27), "bilinear")[:, :, 0]
    res = quality_merge(full, scores, (14, 14), [(0, 4)], [196] * 4)
    assert len(res.tokens) == 784 and (res.members == 1).all()
    assert torch.allclose(res.tokens, full.reshape(-1, 8)[res.frame * 196 + res.index], atol=1e-6)
    assert res.seeds_per_frame.tolist() == [196] * 4


def test_quality_is_deterministic_and_keeps_dtype():
    x, sh, dp = video_like(8, 27, 27, 16, 7)
    cfg = AOTConfig.preset("quality", ratio=0.1)
    a = compress(x, sh, dp, (27, 27), cfg)
    b = compress(x, sh, dp, (27, 27), cfg)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.index, b.index)
    low = compress(x.bfloat16(), sh, dp, (27, 27), cfg)
    assert low.tokens.dtype == torch.bfloat16 and len(low) == len(a)


# ---------------------------------------------------------------- AOTConfig: presets, methods, seed

def test_reference_preset_is_todays_default_bit_for_bit():
    assert AOTConfig.preset("reference") == AOTConfig() and AOTConfig().preset == "reference"
    x, sh, dp = video_like(8, 27, 27, 16, 8)
    for kw in (dict(ratio=0.1), dict(num_anchors=126, keep_ratio=0.3)):
        a = compress(x, sh, dp, (27, 27), AOTConfig(**kw))
        b = compress(x, sh, dp, (27, 27), AOTConfig.preset("reference", **kw))
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.kind, b.kind)


def test_quality_preset_factory_and_record():
    q = AOTConfig.preset("quality", ratio=0.2, clip_length=8)
    assert (q.preset, q.ratio, q.clip_length, q.method) == ("quality", 0.2, 8, "aot")
    assert q.pooling == "bilinear"  # the model's pooling stays the default
    data = q.to_dict()
    assert data["preset"] == "quality" and data["method"] == "aot" and data["seed"] == 0
    assert from_dict(AOTConfig, data) == q  # a recorded config rebuilds the same preset
    assert dataclasses.replace(q, ratio=0.3).preset == "quality"
    assert from_dict(AOTConfig, {"preset": "quality", "ratio": 0.1}) == AOTConfig.preset("quality", ratio=0.1)
    with pytest.raises(ValueError, match="--preset"):
        AOTConfig.preset("fast")
    with pytest.raises(ValueError, match="unknown AOTConfig option"):
        AOTConfig.preset("quality", anchors=3)


@pytest.mark.parametrize("cfg,flag", [
    (dict(preset="quality", ratio=0.1, num_anchors=126), "--anchors"),
    (dict(preset="quality", num_anchors=126, keep_ratio=0.3), "--anchors"),
    (dict(preset="quality", ratio=0.1, keyframe_once=True), "--keyframe-once"),
    (dict(preset="quality", ratio=0.1, window=3), "--window"),
    (dict(preset="quality", ratio=0.1, inter=False), "--no-inter"),
    (dict(method="random", ratio=0.1, keep_ratio=0.3), "--keep-ratio"),
    (dict(method="pool", num_anchors=100), "--anchors"),
    (dict(method="random", ratio=0.1, preset="quality"), "--preset"),
    (dict(method="none", preset="quality"), "--preset"),
    (dict(method="random"), "--ratio"),
    (dict(method="sample", ratio=0.1), "--method"),
    (dict(preset="best", ratio=0.1), "--preset"),
    (dict(method="random", ratio=0.1, seed=-1), "--seed"),
    (dict(method="random", ratio=0.1, seed=2**63), "--seed"),
    (dict(method="random", ratio=0.1, seed=1.5), "--seed"),
    (dict(method="random", ratio=0.1, seed=True), "--seed"),
    (dict(ratio=1.5), "--ratio"),
    (dict(ratio=0.1, clip_length=0), "--clip-length"),
    (dict(preset="quality", ratio=0.1, merge_rounds=0), "merge_rounds"),
    (dict(preset="quality", ratio=0.1, attention_share=1.5), "attention_share"),
    (dict(preset="quality", ratio=0.1, merge_eps=0.0), "merge_eps"),
])
def test_validate_rejects_bad_combinations_with_one_line_naming_the_flag(cfg, flag):
    with pytest.raises(ValueError) as err:
        AOTConfig(**cfg).validate()
    msg = str(err.value)
    assert flag in msg and "\n" not in msg


def test_valid_combinations_pass():
    for cfg in (AOTConfig(method="random", ratio=0.1, seed=2**63 - 1), AOTConfig(method="none"),
                AOTConfig.preset("quality", ratio=0.05, segments="dynamic", clip_length=8, pooling="average"),
                AOTConfig(num_anchors=126, keep_ratio=0.3), AOTConfig(preset="reference", ratio=0.1, keyframe_once=True)):
        cfg.validate()


def test_quality_with_dynamic_segments_follows_the_segments():
    x, sh, dp = video_like(16, 27, 27, 16, 9)
    out = compress(x, sh, dp, (27, 27), AOTConfig.preset("quality", ratio=0.1, segments="dynamic", dynamic_c=4))
    assert len(out) == out.plan.target and len(out.segments) >= 4
    counts = out.plan.pooled_anchors
    for s, l in out.segments:  # each clip emits its frames' budgets, on its own frames
        inside = (out.frame >= s) & (out.frame < s + l)
        assert int(inside.sum()) == sum(counts[s:s + l])


def test_quality_in_clip_batches_matches_one_batch(monkeypatch):
    import aot_cli.core.quality as quality

    x, sh, dp = video_like(12, 27, 27, 16, 10)
    cfg = AOTConfig.preset("quality", ratio=0.1, clip_length=5)  # clips of 5, 5 and 2 frames
    whole = compress(x, sh, dp, (27, 27), cfg)
    monkeypatch.setattr(quality, "BATCH_ELEMENTS", 1)  # one clip per batch
    parts = compress(x, sh, dp, (27, 27), cfg)
    assert torch.equal(whole.frame, parts.frame) and torch.equal(whole.index, parts.index)
    assert torch.allclose(whole.tokens, parts.tokens, atol=1e-5)
    assert [s for s, _ in whole.segments] == [0, 5, 10]


def test_bench_identity_of_a_quality_or_baseline_config_is_valid():
    from aot_cli.bench.stages import identity_method

    for cfg in (AOTConfig.preset("quality", ratio=0.1), AOTConfig(method="random", ratio=0.1, seed=3)):
        ident = identity_method(cfg)
        ident.validate()
        assert ident.method == "none" and ident.preset == "reference"


def test_quality_transport_balances_clusters_where_nearest_anchor_would_not():
    # 20 unit tokens on an arc; the two grid anchors start on the two smallest angles. Nearest-anchor
    # assignment would give the first anchor one token and the second nineteen; transport with equal
    # anchor mass splits the arc about in half, and each anchor becomes the mean of its half.
    cells = pool_regions((4, 5), 2)[1].tolist()
    order = cells + [i for i in range(20) if i not in cells]
    angles = torch.linspace(0, 1.2, 20)
    x = torch.zeros(1, 20, 2)
    for k, i in enumerate(order):
        x[0, i] = torch.stack([torch.cos(angles[k]), torch.sin(angles[k])])
    nearest = (x[0] @ x[0, cells].T).argmax(1)
    assert int((nearest == 0).sum()) == 1
    res = quality_merge(x, torch.zeros(1, 20), (4, 5), [(0, 1)], [2], attention_share=0.0, salient_weight=0.0, rounds=1)
    assert sorted(res.members.tolist()) in ([9, 11], [10, 10])
    low = [i for i in range(20) if order.index(i) < int(res.members.min())]
    assert torch.allclose(res.tokens[0], x[0, low].mean(0), atol=1e-5) or torch.allclose(res.tokens[1], x[0, low].mean(0), atol=1e-5)
