"""KronSAE: mAND, the no-[B, F] selection, the sparse training path against a direct dense
computation, SAELens training / saving / loading, and bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer

from sae_studies import activations as A
from sae_studies import saes, train
from sae_studies.saes.kron import (
    COMPOSITIONS,
    KronSAE,
    KronShape,
    KronTrainingSAEConfig,
    compose,
    kron_post_latents_dense,
    kron_select,
    kron_shape,
    mand,
)


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _kron(d=12, heads=6, m=2, n=4, k=5, composition="mand", rescale=True, apply_b_dec=True, seed=0):
    cls, cfg_cls = get_sae_training_class("kron")
    torch.manual_seed(seed)
    sae = cls(
        cfg_cls(
            d_in=d,
            d_sae=heads * m * n,
            k=k,
            heads=heads,
            m=m,
            n=n,
            composition=composition,
            rescale_acts_by_decoder_norm=rescale,
            apply_b_dec_to_input=apply_b_dec,
        )
    )
    with torch.no_grad():  # away from the symmetric init, so every parameter matters
        sae.W_dec.mul_(torch.rand(sae.cfg.d_sae, 1) + 0.5)
        sae.b_dec.normal_(0, 0.1)
        sae.b_enc.normal_(0, 0.05)
    return sae


# ---------------------------------------------------------------------------------------
# mAND
# ---------------------------------------------------------------------------------------
def test_mand_values_and_gradients_finite_at_zero():
    u = torch.tensor([4.0, 0.0, 0.0, -1.0, 2.0, 1e-30], dtype=torch.float32, requires_grad=True)
    v = torch.tensor([9.0, 3.0, 0.0, 5.0, -2.0, 1e-30], dtype=torch.float32, requires_grad=True)
    z = mand(u, v)
    assert z.tolist() == [6.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # exactly 0 unless both positive (no 1e-5 leak)
    z.sum().backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
    assert u.grad[0].item() == pytest.approx(0.5 * (9 / 4) ** 0.5)  # d sqrt(uv)/du = ½ sqrt(v/u)
    assert v.grad[0].item() == pytest.approx(0.5 * (4 / 9) ** 0.5)
    assert u.grad[1:].abs().max() == 0 and v.grad[1:].abs().max() == 0


def test_mand_gradient_matches_sqrt_on_active_pairs():
    g = torch.Generator().manual_seed(0)
    u = (torch.rand(50, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    v = (torch.rand(50, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(mand, (u, v))
    assert torch.allclose(mand(u, v), (u * v).sqrt())


def test_compositions_and_the_and_property():
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    active = compose(p, q, "mand") > 0
    assert torch.equal(active, (p > 0) & (q > 0))  # a post-latent fires only when both parents do
    assert torch.equal(compose(p, q, "relu_product") > 0, active)
    assert torch.allclose(compose(p, q, "mand") ** 2, compose(p, q, "relu_product"))
    assert torch.equal(compose(p, q, "product"), (p * q).relu())
    with pytest.raises(ValueError, match="composition must be one of"):
        compose(p, q, "sum")


# ---------------------------------------------------------------------------------------
# selection without the [B, F] matrix
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("composition", COMPOSITIONS)
@pytest.mark.parametrize(
    "heads,m,n,k", [(1, 1, 1, 1), (16, 1, 4, 7), (8, 2, 2, 3), (20, 2, 4, 9), (6, 4, 4, 40), (5, 4, 8, 160), (64, 2, 4, 64)]
)
def test_selection_equals_dense_topk(composition, heads, m, n, k):
    shape = KronShape(heads, m, n)
    g = torch.Generator().manual_seed(heads * 100 + k)
    pre = torch.randn(33, shape.n_pre, generator=g, dtype=torch.float64)
    pre[0] = -1.0  # a row with no active pair: ties at 0 (values still agree)
    cols = kron_select(pre, shape, k, composition)
    assert cols.shape == (33, k) and int(cols.max()) < shape.d_sae
    assert all(len(set(r.tolist())) == k for r in cols)  # k distinct latents per row
    dense = kron_post_latents_dense(pre, shape, composition)
    assert dense.shape == (33, shape.d_sae)
    ref_vals, ref_idx = dense.topk(k, dim=-1)
    got_vals = dense.gather(1, cols).sort(-1, descending=True).values
    assert torch.equal(got_vals, ref_vals)
    strict = ref_vals > ref_vals[:, -1:]  # above the k-th value: no ties, the same latents
    for r in range(33):
        assert set(ref_idx[r][strict[r]].tolist()) <= set(cols[r].tolist())


def test_dense_matrix_is_the_row_major_pair_layout():
    shape = KronShape(3, 2, 4)
    pre = torch.randn(5, shape.n_pre)
    dense = kron_post_latents_dense(pre, shape, "relu_product")
    for f in range(shape.d_sae):
        head, i, j = f // 8, (f % 8) // 4, f % 4
        expect = pre[:, head * 2 + i].relu() * pre[:, 6 + head * 4 + j].relu()
        assert torch.allclose(dense[:, f], expect)
        u_col, v_col = shape.parents(torch.tensor(f))
        assert (int(u_col), int(v_col)) == (head * 2 + i, 6 + head * 4 + j)


# ---------------------------------------------------------------------------------------
# sparse training path = direct dense computation (values and gradients)
# ---------------------------------------------------------------------------------------
def _dense_reference_loss(sae, x, dead=None):
    """Unfactorised: the [B, F] post-latent matrix, its top k, a dense decode (plain autograd)."""
    cfg, shape = sae.cfg, sae.factors
    sae_in = x - sae.b_dec if cfg.apply_b_dec_to_input else x
    pre = sae_in @ sae.W_enc + sae.b_enc
    hm = shape.heads * shape.m
    P = pre[:, :hm].reshape(-1, shape.heads, shape.m, 1)
    Q = pre[:, hm:].reshape(-1, shape.heads, 1, shape.n)
    acts_all = compose(P, Q, cfg.composition).reshape(x.shape[0], shape.d_sae)
    rank = kron_post_latents_dense(pre.detach(), shape, cfg.composition)
    idx = rank.topk(cfg.k, dim=-1).indices
    z = torch.zeros_like(acts_all).scatter(1, idx, acts_all.gather(1, idx))
    W = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True) if cfg.rescale_acts_by_decoder_norm else sae.W_dec
    x_hat = z @ W + sae.b_dec
    mse = (x_hat - x).pow(2).sum(-1).mean()
    if dead is None:
        return mse, mse
    k_aux = min(x.shape[1] // 2, int(dead.sum()))
    scale = min(int(dead.sum()) / (x.shape[1] // 2), 1.0)
    masked = torch.where(dead[None], rank, torch.tensor(-torch.inf, dtype=rank.dtype))
    aidx = masked.topk(k_aux, dim=-1).indices
    za = torch.zeros_like(acts_all).scatter(1, aidx, acts_all.gather(1, aidx))
    aux = (za @ W - (x - x_hat).detach()).pow(2).sum(-1).mean()
    return mse + cfg.aux_loss_coefficient * scale * aux, mse


@pytest.mark.parametrize("composition", COMPOSITIONS)
@pytest.mark.parametrize("rescale,apply_b_dec", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_path_matches_dense_loss_and_all_gradients(composition, rescale, apply_b_dec, with_dead):
    sae = _kron(composition=composition, rescale=rescale, apply_b_dec=apply_b_dec)
    sae.to(torch.float64)  # (.double() would leave sae.dtype, which casts the input, at float32)
    x = torch.randn(40, 12, dtype=torch.float64)
    dead = None
    if with_dead:
        dead = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
        dead[::3] = True
    out = sae.training_forward_pass(TrainStepInput(x, {}, dead, 0, False))
    out.loss.backward()
    got = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    ref_loss, ref_mse = _dense_reference_loss(sae, x, dead)
    ref_loss.backward()
    assert rel_err(out.losses["mse_loss"], ref_mse) < 1e-10
    assert rel_err(out.loss, ref_loss) < 1e-10
    for name, p in sae.named_parameters():
        assert rel_err(got[name], p.grad) < 1e-9, name
    # the training output is the inference computation at the same weights
    assert rel_err(out.sae_out, sae.decode(sae.encode(x))) < 1e-12
    assert torch.equal(out.feature_acts.to_dense() != 0, sae.encode(x) != 0)


@pytest.mark.parametrize("heads,m,n", [(16, 1, 8), (8, 4, 4), (4, 4, 8), (32, 2, 2)])
def test_shapes(heads, m, n):
    sae = _kron(d=10, heads=heads, m=m, n=n, k=4)
    F = heads * m * n
    assert sae.W_enc.shape == (10, heads * (m + n)) and sae.b_enc.shape == (heads * (m + n),)
    assert sae.W_dec.shape == (F, 10) and sae.b_dec.shape == (10,)
    x = torch.randn(3, 7, 10)  # leading batch dimensions are kept
    z = sae.encode(x)
    assert z.shape == (3, 7, F) and ((z != 0).sum(-1) <= 4).all() and (z >= 0).all()
    assert sae.decode(z).shape == (3, 7, 10)


def test_initialisation():
    cls, cfg_cls = get_sae_training_class("kron")
    torch.manual_seed(0)
    d, heads, m, n = 64, 128, 2, 4
    F = heads * m * n
    sae = cls(cfg_cls(d_in=d, d_sae=F, k=8, heads=heads, m=m, n=n))
    assert sae.W_enc.std().item() == pytest.approx((2 * F) ** -0.5, rel=0.05)
    assert torch.count_nonzero(sae.b_enc) == 0
    hm = heads * m
    P, Q = sae.W_enc[:, :hm].T, sae.W_enc[:, hm:].T
    k_, i, j = 5, 1, 3
    expect = P[k_ * m + i] + Q[k_ * n + j]
    assert torch.allclose(sae.W_dec[k_ * m * n + i * n + j], expect / expect.norm(), atol=1e-6)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(F))


# ---------------------------------------------------------------------------------------
# SAELens: SAETrainer, saving and loading, train.train_sae
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_saetrainer_round_trip(tmp_path, composition):
    sae = _kron(d=16, heads=8, m=2, n=4, k=6, composition=composition)
    sae.cfg.normalize_activations = "expected_average_only_in"
    xs = [3.0 * torch.randn(64, 16) + 1.0 for _ in range(6)]
    cfg = SAETrainerConfig(
        total_training_samples=64 * 4,
        train_batch_size_samples=64,
        lr=1e-3,
        lr_end=1e-3,
        dead_feature_window=1,
        n_batches_for_norm_estimate=2,
    )
    SAETrainer(cfg, sae, data_provider=iter(xs)).fit()  # dead window 1: AuxK runs too
    assert sae.cfg.rescale_acts_by_decoder_norm is False  # the fold made the rows unit, then / scale
    norms = sae.W_dec.norm(dim=-1)
    assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-5)
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(str(tmp_path))
    assert isinstance(loaded, KronSAE) and loaded.cfg.composition == composition
    assert (loaded.cfg.heads, loaded.cfg.m, loaded.cfg.n, loaded.cfg.k) == (8, 2, 4, 6)
    x = 3.0 * torch.randn(50, 16) + 1.0
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.allclose(loaded.decode(loaded.encode(x)), sae.decode(sae.encode(x)))


def test_fold_keeps_output():
    sae = _kron()
    x = torch.randn(20, 12)
    before = sae.decode(sae.encode(x))
    sae.fold_W_dec_norm()  # a weight-normalised decoder becomes unit rows
    assert sae.cfg.rescale_acts_by_decoder_norm is False
    assert torch.allclose(sae.decode(sae.encode(x)), before, atol=1e-5)
    sae.fold_W_dec_norm()  # nothing left to fold
    sae.fold_activation_norm_scaling_factor(2.5)
    assert torch.allclose(sae.decode(sae.encode(x / 2.5)), before / 2.5, atol=1e-5)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(1), atol=1e-5)
    raw = _kron(rescale=False)
    with pytest.raises(NotImplementedError, match="factorised encoder"):
        raw.fold_W_dec_norm()


@pytest.fixture(scope="module")
def acts(micro_run):
    hook = A.hook_name(1)
    return micro_run.activations([hook])[hook], micro_run.activations([hook], split="val")[hook]


def test_train_sae_on_micro_profile(micro_run, acts):
    from sae_studies.analyses import quality

    train_acts, eval_acts = acts
    spec = saes.get("kron").spec(4 * train_acts.d, 8, seed=0, m=2, n=4)
    cfg = dataclasses.replace(micro_run.profile.sae, train_tokens=32768)
    sae, art = train.train_sae(train_acts, spec, cfg, micro_run.store, batch_size=512)
    assert isinstance(sae, KronSAE) and art.manifest["summary"]["training_class"] == "kron"
    again = SAE.load_from_disk(str(art.path))
    x = eval_acts.tensor(256)
    assert torch.equal(sae.encode(x), again.encode(x))
    report = quality.sae_reconstruction_metrics(sae, eval_acts.tensor())
    assert report.explained_variance > 0.2 and report.l0 <= 8


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
def test_bad_input_names_the_values():
    recipe = saes.get("kron")
    with pytest.raises(ValueError, match=r"d_sae=100 does not factor.*m·n=8"):
        recipe.spec(100, 4, m=2, n=4)
    with pytest.raises(ValueError, match=r"heads=3, m=2, n=4 \(24 latents\) for d_sae=64"):
        recipe.spec(64, 4, heads=3, m=2, n=4)
    with pytest.raises(ValueError, match=r"m ≤ n.*m=4, n=2"):
        recipe.spec(64, 4, m=4, n=2)
    with pytest.raises(ValueError, match=r"m must be an integer >= 1.*m=0"):
        recipe.spec(64, 4, m=0, n=4)
    with pytest.raises(ValueError, match=r"n must be an integer >= 1.*n=-2"):
        kron_shape(64, None, 1, -2)
    with pytest.raises(ValueError, match=r"k must be an integer in 1..64.*k=65"):
        recipe.spec(64, 65)
    with pytest.raises(ValueError, match=r"composition must be one of \['mand', 'relu_product', 'product'\]"):
        recipe.spec(64, 4, composition="and")
    with pytest.raises(ValueError, match="d_sae=100 does not factor"):
        KronTrainingSAEConfig(d_in=8, d_sae=100, k=4)
    assert recipe.spec(64, 4, m=2, n=4).extra == (("heads", 8), ("m", 2), ("n", 4), ("composition", "mand"))


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_activation_norm_fold_scales_like_saelens_topk(composition):
    """After folding an input scale s, SAELens' TopK (exported) gives activations / s from unit
    decoder rows; KronSAE does the same, on the same raw inputs."""
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    s = 2.5
    x = torch.randn(40, 12)
    torch.manual_seed(1)
    topk = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=12, d_sae=64, k=6))
    kron = _kron(composition=composition)
    for sae in (topk, kron):
        with torch.no_grad():
            sae.W_dec.mul_(torch.rand(sae.W_dec.shape[0], 1) + 0.5)  # non-unit rows
            sae.b_dec.normal_(0, 0.1)
        acts = sae.encode(x * s)
        out = sae.decode(acts) / s
        sae.fold_activation_norm_scaling_factor(s)
        state = {k: v.clone() for k, v in sae.state_dict().items()}
        sae.process_state_dict_for_saving_inference(state)  # what save_inference_model exports
        sae.load_state_dict(state)
        if sae is topk:
            sae.cfg.rescale_acts_by_decoder_norm = False  # the export folded the norms
        assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(1), atol=1e-5), type(sae).__name__
        assert torch.allclose(sae.encode(x), acts / s, atol=1e-5), type(sae).__name__
        assert torch.allclose(sae.decode(sae.encode(x)), out, atol=1e-5), type(sae).__name__
