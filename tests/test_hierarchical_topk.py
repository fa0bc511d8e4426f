"""HierarchicalTopK / Multi-TopK: memory-flat prefix loss vs the direct prefix tensor, SAELens
round trip, selectable k at inference, bad input."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer

import sae_studies.saes  # noqa: F401  (registers the architectures)
from sae_studies.saes.hierarchical_topk import HierarchicalTopKSAE, HierarchicalTopKTrainingSAEConfig, MultiTopKTrainingSAEConfig
from sae_studies.saes.sparse_decode import SparsePattern, prefix_level_weights, prefix_mse_loss


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def direct_prefix_loss(v, idx, W_dec, b_dec, x, w):
    """The plain-autograd version: builds the B x K x d prefix tensor."""
    E = W_dec[idx]
    r = (v.unsqueeze(-1) * E).cumsum(1) + b_dec - x.unsqueeze(1)
    return (r.pow(2).sum(-1) * w).sum(-1).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("levels,weights", [(None, None), ([2, 5], None), ([1, 3, 6], None), ([2, 6], [1.0, 0.125])])
@pytest.mark.parametrize("chunk", [1, 64, 1 << 20])
def test_prefix_loss_matches_direct(dtype, levels, weights, chunk):
    B, d, F, K = 29, 9, 40, 6
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, d, generator=g, dtype=dtype)
    W = torch.randn(F, d, generator=g, dtype=dtype)
    b = torch.randn(d, generator=g, dtype=dtype)
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
    v = torch.rand(B, K, generator=g, dtype=dtype).sort(-1, descending=True).values
    w = prefix_level_weights(K, levels, weights).to(dtype)
    ref_in = [t.clone().requires_grad_() for t in (v, W, b, x)]
    ref = direct_prefix_loss(ref_in[0], idx, ref_in[1], ref_in[2], ref_in[3], w)
    ref.backward()
    got_in = [t.clone().requires_grad_() for t in (v, W, b, x)]
    got = prefix_mse_loss(got_in[0], SparsePattern.from_topk(idx, F), *got_in[1:], w, chunk_elems=chunk)
    got.backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert rel_err(got, ref) < tol
    for a, r in zip(got_in, ref_in):
        assert rel_err(a.grad, r.grad) < tol


@pytest.mark.parametrize("workers,rows,chunk", [(1, 192, 1 << 21), (2, 16, 5 * 16 * 48), (2, 7, 1)])
@pytest.mark.parametrize("levels,weights", [(None, None), ([8, 32], [1.0, 0.125]), ([3, 20], None)])
def test_prefix_loss_row_chunks_and_workers(monkeypatch, workers, rows, chunk, levels, weights):
    """Larger K in float32: row chunks of many rows or one row, on one or two worker threads,
    trailing zero-weight levels; agreement with the direct prefix tensor, and the loss alone
    under no_grad."""
    import importlib

    sd = importlib.import_module("sae_studies.saes.sparse_decode")
    monkeypatch.setattr(sd, "_PREFIX_WORKERS", workers)
    monkeypatch.setattr(sd, "_PREFIX_ROWS", rows)
    B, d, F, K = 100, 48, 300, 32
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, d, generator=g)
    W = torch.randn(F, d, generator=g) / d**0.5
    b = torch.randn(d, generator=g) * 0.1
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
    v = torch.rand(B, K, generator=g).sort(-1, descending=True).values
    w = prefix_level_weights(K, levels, weights)
    ref_in = [t.clone().requires_grad_() for t in (v, W, b, x)]
    ref = direct_prefix_loss(ref_in[0], idx, ref_in[1], ref_in[2], ref_in[3], w.float())
    ref.backward()
    pat = SparsePattern.from_topk(idx, F)
    got_in = [t.clone().requires_grad_() for t in (v, W, b, x)]
    got = prefix_mse_loss(got_in[0], pat, *got_in[1:], w, chunk_elems=chunk)
    got.backward()
    assert rel_err(got, ref) < 1e-5
    for a, r in zip(got_in, ref_in):
        assert rel_err(a.grad, r.grad) < 1e-5
    with torch.no_grad():
        assert rel_err(prefix_mse_loss(v, pat, W, b, x, w, chunk_elems=chunk), ref) < 1e-5


def _sae(arch, **kw):
    cls, cfg_cls = get_sae_training_class(arch)
    torch.manual_seed(0)
    sae = cls(cfg_cls(**kw))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(sae.cfg.d_sae, 1) + 0.5)
        sae.b_dec.normal_(0, 0.1)
        sae.b_enc.normal_(0, 0.05)
    return sae


def _reference_loss(sae, x, K, w, k_report):
    """Dense plain-autograd HierarchicalTopK/Multi-TopK loss (SAELens TopK conventions)."""
    cfg = sae.cfg
    sae_in = x - sae.b_dec if cfg.apply_b_dec_to_input else x
    hp = sae_in @ sae.W_enc + sae.b_enc
    n = sae.W_dec.norm(dim=-1)
    if cfg.rescale_acts_by_decoder_norm:
        hp = hp * n
    vals, idx = hp.topk(K, dim=-1, sorted=True)
    acts = vals.relu()
    dec = acts / n[idx] if cfg.rescale_acts_by_decoder_norm else acts
    return direct_prefix_loss(dec, idx, sae.W_dec, sae.b_dec, x, w.to(x.dtype))


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("levels", [None, [1, 3, 5]])
def test_hierarchical_training_loss_and_all_gradients(rescale, levels):
    d, F, K, B = 12, 64, 5, 48
    sae = _sae("hierarchical_topk", d_in=d, d_sae=F, k=K, levels=levels, rescale_acts_by_decoder_norm=rescale)
    x = torch.randn(B, d)
    out = sae.training_forward_pass(TrainStepInput(x, {}, None, 0, False))
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    ref = _reference_loss(sae, x, K, prefix_level_weights(K, levels), K)
    ref.backward()
    assert rel_err(out.losses["mse_loss"], ref) < 1e-5
    for n, p in sae.named_parameters():
        assert rel_err(got[n], p.grad) < 1e-4, n


def test_multi_topk_loss_is_lk_plus_l4k_over_8():
    d, F, k, B = 12, 64, 3, 40
    sae = _sae("multi_topk", d_in=d, d_sae=F, k=k)
    x = torch.randn(B, d)
    out = sae.training_forward_pass(TrainStepInput(x, {}, None, 0, False))
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    w = prefix_level_weights(4 * k, [k, 4 * k], [1.0, 0.125])
    ref = _reference_loss(sae, x, 4 * k, w, k)
    ref.backward()
    assert rel_err(out.loss, ref) < 1e-5
    for n, p in sae.named_parameters():
        assert rel_err(got[n], p.grad) < 1e-4, n
    # sae_out / feature_acts report the k-level reconstruction
    assert out.feature_acts.to_dense().bool().sum(-1).max() <= k


def test_aux_loss_with_dead_latents():
    d, F, K, B = 12, 64, 4, 32
    sae = _sae("hierarchical_topk", d_in=d, d_sae=F, k=K)
    dead = torch.arange(F) % 2 == 0
    out = sae.training_forward_pass(TrainStepInput(torch.randn(B, d), {}, dead, 0, False))
    assert float(out.losses["auxiliary_reconstruction_loss"]) > 0
    out.loss.backward()


@pytest.mark.parametrize("arch,k,kmax", [("hierarchical_topk", 6, 6), ("multi_topk", 2, 8)])
def test_round_trip_and_selectable_k(tmp_path, arch, k, kmax):
    d, F, B = 12, 48, 32
    sae = _sae(arch, d_in=d, d_sae=F, k=k)
    gen = torch.Generator().manual_seed(0)
    data = iter(lambda: torch.randn(B, d, generator=gen), None)
    cfg = SAETrainerConfig(total_training_samples=5 * B, train_batch_size_samples=B, lr=3e-3, lr_end=3e-3, dead_feature_window=2)
    SAETrainer(cfg, sae, data_provider=data).fit()
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert isinstance(loaded, HierarchicalTopKSAE)
    assert loaded.cfg.k == k and loaded.cfg.k_max == kmax
    x = torch.randn(B, d)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-5)
        assert torch.allclose(loaded(x), sae(x), atol=1e-5)
        for kk in (1, kmax):
            f = loaded.encode(x, k=kk)
            assert (f != 0).sum(-1).max() <= kk
        f2 = loaded.encode(x, k=2)
        loaded.set_k(2)
        assert torch.equal(loaded.encode(x), f2)
        # nested: the top-1 latents are among the top-2
        f1 = loaded.encode(x, k=1)
        assert ((f1 != 0) <= (f2 != 0)).all()
    with pytest.raises(ValueError, match=f"k must be an integer in 1..{kmax}"):
        loaded.set_k(kmax + 1)
    with pytest.raises(ValueError, match="k_max"):
        loaded.encode(x, k=kmax + 1)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(k=0), "k must be an integer"),
        (dict(k=4, levels=[]), "levels must be"),
        (dict(k=4, levels=[3, 2]), "strictly increasing"),
        (dict(k=4, levels=[2, 2]), "strictly increasing"),
        (dict(k=4, levels=[1, 5]), "levels must be an integer in 1..4"),
    ],
)
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        HierarchicalTopKTrainingSAEConfig(d_in=8, d_sae=32, **kw)


def test_bad_multi_config_raises():
    with pytest.raises(ValueError, match="multi_topk_factor"):
        MultiTopKTrainingSAEConfig(d_in=8, d_sae=32, k=2, multi_topk_factor=1)
    with pytest.raises(ValueError, match="k must be"):
        MultiTopKTrainingSAEConfig(d_in=8, d_sae=32, k=9)


def test_prefix_loss_gradient_is_bit_reproducible_on_two_workers(monkeypatch):
    """The two worker threads each sum their rows' decoder gradient into a buffer of their own,
    added in worker order after they join: the same inputs give the same bits every time (a
    shared buffer took the workers' blocks in thread-timing order, and training diverged)."""
    import importlib

    sd = importlib.import_module("sae_studies.saes.sparse_decode")
    monkeypatch.setattr(sd, "_PREFIX_WORKERS", 2)
    monkeypatch.setattr(sd, "_PREFIX_ROWS", 4)
    B, d, F, K = 512, 64, 96, 16  # few latents: both workers add into the same decoder rows
    g = torch.Generator().manual_seed(2)
    x, W, b = torch.randn(B, d, generator=g), torch.randn(F, d, generator=g) / d**0.5, torch.randn(d, generator=g)
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
    v = torch.rand(B, K, generator=g).sort(-1, descending=True).values
    pat, w = SparsePattern.from_topk(idx, F), prefix_level_weights(K)
    grads = []
    for _ in range(40):
        W_in = W.clone().requires_grad_()
        prefix_mse_loss(v, pat, W_in, b, x, w, chunk_elems=4 * d).backward()
        grads.append(W_in.grad)
    assert all(torch.equal(grads[0], other) for other in grads[1:])
