"""Sparse TopK building blocks and the fast TopK/BatchTopK training classes vs SAELens."""

from __future__ import annotations

import pytest
import torch

from sae_studies.saes.sparse_decode import (
    SparsePattern,
    prefix_level_weights,
    prefix_mse_loss,
    selected_preacts,
    sparse_decode,
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().double()
    b = b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _topk_problem(B=37, d=12, F=50, k=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g, dtype=dtype)
    W_enc = torch.randn(d, F, generator=g, dtype=dtype) / d**0.5
    b_enc = torch.randn(F, generator=g, dtype=dtype) * 0.1
    W_dec = torch.randn(F, d, generator=g, dtype=dtype) / d**0.5
    b_dec = torch.randn(d, generator=g, dtype=dtype) * 0.1
    return x, W_enc, b_enc, W_dec, b_dec


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_decode_matches_dense_autograd(dtype):
    B, d, F, k = 37, 12, 50, 5
    x, _, _, W_dec, b_dec = _topk_problem(B, d, F, k, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    idx = torch.stack([torch.randperm(F, generator=g)[:k] for _ in range(B)])
    vals = torch.randn(B, k, generator=g, dtype=dtype)
    target = torch.randn(B, d, generator=g, dtype=dtype)

    def run(fast: bool):
        v = vals.clone().requires_grad_()
        W = W_dec.clone().requires_grad_()
        b = b_dec.clone().requires_grad_()
        if fast:
            out = sparse_decode(v, SparsePattern.from_topk(idx, F), W, b)
        else:
            dense = torch.zeros(B, F, dtype=dtype).scatter(1, idx, v)
            out = dense @ W + b
        loss = (out - target).pow(2).sum(-1).mean()
        loss.backward()
        return out.detach(), v.grad, W.grad, b.grad

    ref = run(False)
    got = run(True)
    for a, b in zip(got, ref):
        assert rel_err(a, b) < 1e-6


def test_sparse_decode_ragged_pattern():
    B, d, F = 9, 6, 20
    _, _, _, W_dec, b_dec = _topk_problem(B, d, F, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(B, F, generator=g) < 0.2
    mask[4] = False  # an empty row
    flat = mask.flatten().nonzero().squeeze(1)
    pat = SparsePattern.from_flat(flat[torch.randperm(flat.numel(), generator=g)], B, F)
    vals = torch.randn(pat.nnz, generator=g, dtype=torch.float64, requires_grad=True)
    W = W_dec.clone().requires_grad_()
    out = sparse_decode(vals, pat, W, b_dec)
    out.pow(2).sum().backward()
    v2 = vals.detach().clone().requires_grad_()
    W2 = W_dec.clone().requires_grad_()
    dense = torch.zeros(B, F, dtype=torch.float64).index_put((pat.rows, pat.cols), v2)
    out2 = dense @ W2 + b_dec
    out2.pow(2).sum().backward()
    assert rel_err(out, out2) < 1e-12
    assert rel_err(vals.grad, v2.grad) < 1e-12
    assert rel_err(W.grad, W2.grad) < 1e-12


def test_selected_preacts_gradients():
    B, d, F, k = 33, 10, 40, 4
    x, W_enc, b_enc, W_dec, b_dec = _topk_problem(B, d, F, k)
    target = torch.randn(B, d)

    def run(fast: bool):
        We = W_enc.clone().requires_grad_()
        be = b_enc.clone().requires_grad_()
        Wd = W_dec.clone().requires_grad_()
        bd = b_dec.clone().requires_grad_()
        if fast:
            with torch.no_grad():
                sae_in = x - bd
                hp = sae_in @ We + be
                tv, ti = hp.topk(k, dim=-1, sorted=False)
            pat = SparsePattern.from_topk(ti, F)
            pre = selected_preacts(tv, pat, sae_in, We, be, bd)
            out = sparse_decode(pre.relu(), pat, Wd, bd)
        else:
            hp = (x - bd) @ We + be
            tv, ti = hp.topk(k, dim=-1, sorted=False)
            out = torch.zeros(B, F).scatter(1, ti, tv.relu()) @ Wd + bd
        loss = (out - target).pow(2).sum(-1).mean()
        loss.backward()
        return loss.detach(), We.grad, be.grad, Wd.grad, bd.grad

    for a, b in zip(run(True), run(False)):
        assert rel_err(a, b) < 1e-5
