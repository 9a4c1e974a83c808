"""Side features carried through the method (``compress(..., carry=...)``): no decision uses them,
and each output row is the same combination of input rows that made its token."""
from __future__ import annotations

import pytest
import torch

from aot_cli.core import AOTConfig, compress

from test_core import video_like

CASES = [
    ("aot-reference", dict(ratio=0.1)),
    ("aot-reference-keyframe-once", dict(ratio=0.1, keyframe_once=True)),
    ("aot-reference-rules", dict(num_anchors=20, keep_ratio=0.3)),
    ("aot-normalized-no-inter", dict(ratio=0.15, intra_update="normalized", inter=False)),
    ("quality", dict(ratio=0.1, preset="quality")),
    ("random", dict(ratio=0.1, method="random", seed=3)),
    ("pool", dict(ratio=0.1, method="pool")),
    ("attention", dict(ratio=0.1, method="attention")),
    ("none", dict(method="none")),
]


def _config(kw, pooling):
    kw = dict(kw)
    if kw.pop("preset", None) == "quality":
        return AOTConfig.preset("quality", pooling=pooling, clip_length=4, **kw)
    return AOTConfig(pooling=pooling, clip_length=4, **kw)


@pytest.mark.parametrize("pooling", [None, "bilinear"])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_carried_rows_are_the_tokens_combinations(name, kw, pooling):
    x, sh, dp = video_like(8, 9, 9, 12, seed=7)
    # a linear map of the tokens: every method's output rows are combinations of input rows, so the
    # carried rows must be the map of the output tokens
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(12, 20, generator=g, dtype=torch.float64)
    carry = (x.double() @ mix).float()
    cfg = _config(kw, pooling)
    plain = compress(x, sh, dp, (9, 9), cfg)
    out = compress(x, sh, dp, (9, 9), cfg, carry=carry)
    assert plain.carry is None
    assert torch.equal(out.tokens, plain.tokens) and torch.equal(out.frame, plain.frame)
    assert torch.equal(out.index, plain.index) and torch.equal(out.kind, plain.kind)
    assert out.carry.shape == (len(out), 20) and out.carry.dtype == carry.dtype
    want = out.tokens.double() @ mix
    scale = float(want.abs().max())
    assert float((out.carry.double() - want).abs().max()) < 1e-5 * scale


def test_carried_rows_take_no_part_in_decisions():
    x, sh, dp = video_like(8, 9, 9, 12, seed=2)
    cfg = AOTConfig(ratio=0.1, pooling=None, clip_length=4)
    a = compress(x, sh, dp, (9, 9), cfg, carry=torch.randn(8, 81, 5))
    b = compress(x, sh, dp, (9, 9), cfg, carry=1000 * torch.randn(8, 81, 5))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.index, b.index)
    # a kept (unmerged) token's carried row is its own input row
    carry = torch.arange(8 * 81, dtype=torch.float32).reshape(8, 81, 1)
    out = compress(x, sh, dp, (9, 9), AOTConfig(ratio=0.1, method="random", pooling=None), carry=carry)
    assert torch.equal(out.carry[:, 0], (out.frame * 81 + out.index).float())


def test_carry_shape_is_checked():
    x, sh, dp = video_like(4, 9, 9, 12)
    with pytest.raises(ValueError, match="carry must be"):
        compress(x, sh, dp, (9, 9), AOTConfig(ratio=0.1, pooling=None), carry=torch.zeros(4, 80, 3))
