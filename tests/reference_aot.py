"""A deliberately naive, loop-per-frame implementation of the AOT chain written straight from
docs/method.md §2-§6, independent of ``aot_cli.core``. The tests compare the library against it."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ref_sinkhorn(C: torch.Tensor, eps: float = 0.1, max_iter: int = 100, tol: float = 1e-2) -> torch.Tensor:
    """Kernel-form Sinkhorn on ``C [B,M,N]``; the stopping mean runs over the whole batch."""
    K = torch.exp(-C / eps)
    B, M, N = C.shape
    r = torch.ones(B, M)
    c = torch.ones(B, N)
    for _ in range(max_iter):
        r_prev = r
        r = (1.0 / M) / torch.einsum("bmn,bn->bm", K, c)
        c = (1.0 / N) / torch.einsum("bmn,bm->bn", K, r)
        if (r - r_prev).abs().mean() < tol:
            break
    return r[:, :, None] * K * c[:, None, :]


def ref_anchors(shallow, deep, H, W, V, g=0.5, w=9):
    Fn = shallow.shape[0]
    local = int(V * (1 - g))
    glob = V - local
    nwin = (H // w) * (W // w)
    k = local // nwin
    mask = torch.zeros(Fn, H * W, dtype=torch.bool)
    for f in range(Fn):
        m = shallow[f].view(H, W)
        for bi in range(H // w):
            for bj in range(W // w):
                win = m[bi * w:(bi + 1) * w, bj * w:(bj + 1) * w].reshape(-1)
                top = win.topk(k).indices
                rows, cols = bi * w + top // w, bj * w + top % w
                mask[f, rows * W + cols] = True
        d = deep[f].clone()
        d[mask[f]] = 0
        mask[f, d.topk(glob).indices] = True
    return mask


def ref_intra(x, mask, H, W, eps=0.1):
    Fn, N, D = x.shape
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([jj.reshape(-1) / (W - 1), ii.reshape(-1) / (H - 1)], 1).float()
    costs, anchors, sources = [], [], []
    for f in range(Fn):
        a, u = x[f][mask[f]], x[f][~mask[f]]
        cos = F.normalize(u, dim=-1) @ F.normalize(a, dim=-1).T
        dist = torch.cdist(pos[~mask[f]], pos[mask[f]])
        costs.append((1 - cos) + 0.5 * dist)
        anchors.append(a)
        sources.append(u)
    T = ref_sinkhorn(torch.stack(costs), eps)  # all frames in one call, stopping together
    out = x.clone()
    for f in range(Fn):
        a, u = anchors[f], sources[f]
        agg = T[f].T @ u
        load = T[f].sum(0)
        a_ot = (a + agg) / (1 + load[:, None])
        cos = F.normalize(u, dim=-1) @ F.normalize(a, dim=-1).T
        nearest = cos.argmax(1)
        a_nn = torch.empty_like(a)
        for n in range(a.shape[0]):
            members = u[nearest == n]
            a_nn[n] = (a[n] + members.sum(0)) / (1 + members.shape[0])
        out[f][mask[f]] = 0.1 * a_nn + 0.9 * a_ot
    return out


def ref_pool(x, mask, H, W, mode):
    Fn, N, D = x.shape
    img = x.view(Fn, H, W, D).permute(0, 3, 1, 2)
    m = mask.float().view(Fn, 1, H, W)
    if mode == "bilinear":
        size = (math.ceil(H / 2), math.ceil(W / 2))
        img = F.interpolate(img, size=size, mode="bilinear")
        m = F.interpolate(m, size=size, mode="bilinear")
    else:
        img = F.avg_pool2d(img, 2)
        m = F.avg_pool2d(m, 2)
    return img.permute(0, 2, 3, 1).reshape(Fn, -1, D), (m.reshape(Fn, -1) >= 0.5)


def ref_inter(x, keep, clip, keep_ratio, eps=0.1, sigma=1.5):
    """Returns tokens, frames, kinds (0 raw keyframe, 1 kept, 2 anchor)."""
    Fn = x.shape[0]
    toks, frames, kinds = [], [], []
    for s in range(0, Fn, clip):
        L = min(clip, Fn - s)
        Y = x[s][keep[s]]
        Y0 = Y.clone()
        toks.append(Y0); frames += [s] * len(Y0); kinds += [0] * len(Y0)
        for t in range(1, L):
            X = x[s + t][keep[s + t]]
            cos = (F.normalize(X, dim=-1) @ F.normalize(Y, dim=-1).T).clamp(-(1 - 1e-6), 1 - 1e-6)
            c_sim = 1 - cos
            c_sim = c_sim - c_sim.min()
            C = c_sim * (1 - math.exp(-t * t / (2 * sigma ** 2)))
            T = ref_sinkhorn(C[None], eps)[0]
            p = T / T.sum(1, keepdim=True)
            pmax = p.max(1).values
            q = torch.quantile(pmax.double(), keep_ratio)
            stay = pmax.double() < q
            merged = ~stay
            agg = p[merged].T @ X[merged]
            load = p[merged].sum(0)
            Y = (Y + agg) / (1 + load[:, None])
            toks.append(X[stay]); frames += [s + t] * int(stay.sum()); kinds += [1] * int(stay.sum())
        toks.append(Y); frames += [s] * len(Y); kinds += [2] * len(Y)
    return torch.cat(toks), torch.tensor(frames), torch.tensor(kinds)


def ref_chain(x, shallow, deep, H, W, V, keep_ratio, pool, clip):
    mask = ref_anchors(shallow, deep, H, W, V)
    merged = ref_intra(x, mask, H, W)
    pooled, keep = ref_pool(merged, mask, H, W, pool)
    return ref_inter(pooled, keep, clip, keep_ratio)
