"""Fidelity figures (docs/method.md §10.2) against direct computations: brute-force loops for the
coverages, POT's exact EMD (and a plain linear program) for the OT error."""
from __future__ import annotations

import math
import sys

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linprog

from aot_cli.core.fidelity import (FidelityError, coverage, fidelity, full_scores, full_tokens, ot_error,
                                   salient_coverage, salient_mask)


def data(N=300, T=37, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(N, D, generator=g)
    kept = torch.randn(T, D, generator=g) + 0.5 * full[:T]
    salience = torch.rand(N, generator=g)
    return full, kept, salience


def cos_np(a, b):
    a = a.double().numpy()
    b = b.double().numpy()
    return np.array([[x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for y in b] for x in a])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coverage_and_salient_match_brute_force(seed):
    full, kept, salience = data(seed=seed)
    C = cos_np(full, kept)
    want = np.mean([max(row) for row in C])
    assert abs(coverage(full, kept) - want) < 1e-6
    k = math.floor(0.1 * len(full) + 0.5)
    top = sorted(range(len(full)), key=lambda i: -float(salience[i]))[:k]
    want_sal = np.mean([max(C[i]) for i in top])
    assert abs(salient_coverage(full, kept, salience) - want_sal) < 1e-6
    assert salient_mask(salience).sum() == k == 30


@pytest.mark.parametrize("seed", [0, 1])
def test_ot_error_is_pots_exact_emd(seed):
    full, kept, _ = data(N=200, T=23, seed=seed)
    cost = 1.0 - cos_np(full, kept)
    want = ot.emd2(np.full(200, 1 / 200), np.full(23, 1 / 23), cost)
    assert abs(ot_error(full, kept) - want) < 1e-9


def test_ot_error_matches_a_plain_linear_program():
    full, kept, _ = data(N=30, T=7, seed=3)
    cost = 1.0 - cos_np(full, kept)
    N, T = cost.shape
    A_eq = np.zeros((N + T, N * T))
    for i in range(N):
        A_eq[i, i * T:(i + 1) * T] = 1
    for j in range(T):
        A_eq[N + j, j::T] = 1
    b_eq = np.concatenate([np.full(N, 1 / N), np.full(T, 1 / T)])
    lp = linprog(cost.reshape(-1), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert lp.success and abs(ot_error(full, kept) - lp.fun) < 1e-9


def test_fidelity_extremes_and_duplicates():
    full, _, salience = data(N=120, seed=4)
    same = fidelity(full, full, salience)
    assert same.coverage == pytest.approx(1.0) and same.salient_coverage == pytest.approx(1.0)
    assert same.ot_error == pytest.approx(0.0, abs=1e-9)
    assert (same.kept, same.full, same.salient) == (120, 120, 12)
    # a subset covers its own members exactly but carries their mass 1/T: OT error > 0
    half = fidelity(full, full[:60], salience)
    assert half.ot_error > 0.01 and half.coverage < 1.0
    # emitting a token twice over-weights it: the OT error grows, coverage does not change
    twice = fidelity(full, torch.cat([full[:60], full[:1].repeat(20, 1)]), salience)
    assert twice.coverage == pytest.approx(half.coverage) and twice.ot_error > half.ot_error
    one = fidelity(full, full, None, ot=False)
    assert one.salient_coverage is None and one.ot_error is None and one.to_dict()["coverage"] == pytest.approx(1.0)


def test_full_tokens_and_scores_are_the_models_pooling():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 27 * 27, 8, generator=g)
    s = torch.rand(3, 27 * 27, generator=g)
    img = x.view(3, 27, 27, 8).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(img, size=(14, 14), mode="bilinear", align_corners=False)
    assert torch.allclose(full_tokens(x, (27, 27)), want.permute(0, 2, 3, 1).reshape(-1, 8), atol=1e-6)
    want_s = torch.nn.functional.interpolate(s.view(3, 1, 27, 27), size=(14, 14), mode="bilinear", align_corners=False)
    assert torch.allclose(full_scores(s, (27, 27)), want_s.reshape(-1), atol=1e-6)
    assert full_tokens(x, (27, 27), "average").shape == (3 * 169, 8)
    assert torch.equal(full_tokens(x, (27, 27), None), x.reshape(-1, 8))


def test_missing_pot_is_one_line_naming_the_extra(monkeypatch):
    full, kept, _ = data(N=20, T=4)
    monkeypatch.setitem(sys.modules, "ot", None)
    with pytest.raises(FidelityError) as err:
        ot_error(full, kept)
    assert "\n" not in str(err.value) and "aot-cli[fidelity]" in str(err.value)
    assert fidelity(full, kept, ot=False).coverage > 0  # coverage needs no POT


def test_bad_shapes_are_clear_errors():
    full, kept, salience = data(N=20, T=4)
    with pytest.raises(ValueError, match="same D"):
        coverage(full, kept[:, :3])
    with pytest.raises(ValueError, match="one value per full token"):
        salient_coverage(full, kept, salience[:5])
