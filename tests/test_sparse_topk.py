"""Sparse TopK building blocks and the fast TopK/BatchTopK training classes vs SAELens."""

from __future__ import annotations

import pytest
import torch

from sae_studies.saes.sparse_decode import (
    SparsePattern,
    row_norms,
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


def test_row_norms_value_and_gradient_match_autograd_with_a_zero_row():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(30, 7, generator=g, dtype=torch.float64)
    W[11] = 0.0  # a dead, zeroed decoder row: norm 0, gradient 0 (not nan)
    upstream = torch.randn(30, generator=g, dtype=torch.float64)
    W1 = W.clone().requires_grad_()
    W2 = W.clone().requires_grad_()
    n1 = row_norms(W1)
    n2 = W2.norm(dim=-1)
    (n1 * upstream).sum().backward()
    (n2 * upstream).sum().backward()
    assert rel_err(n1, n2) < 1e-14
    assert torch.isfinite(W1.grad).all()
    assert rel_err(W1.grad, W2.grad) < 1e-14
    assert torch.all(W1.grad[11] == 0)


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


# ---------------------------------------------------------------------------------------
# training classes vs SAELens
# ---------------------------------------------------------------------------------------
import copy  # noqa: E402

from sae_lens import SAE  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.registry import get_sae_training_class  # noqa: E402
from sae_lens.saes.sae import TrainStepInput  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

from sae_studies.saes.sparse_topk import use_fast_bookkeeping  # noqa: E402


def _make(arch: str, **kw):
    cls, cfg_cls = get_sae_training_class(arch)
    torch.manual_seed(0)
    return cls(cfg_cls(**kw))


def _step_grads(sae, x, dead):
    sae.zero_grad(set_to_none=True)
    out = sae.training_forward_pass(
        TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False)
    )
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in sae.named_parameters()}
    fa = out.feature_acts
    fa = fa.to_dense() if fa.is_sparse else fa
    return out, grads, fa.detach()


@pytest.mark.parametrize("slow,fast", [("topk", "sparse_topk"), ("batchtopk", "sparse_batchtopk")])
@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("with_dead", [False, True])
def test_fast_matches_saelens_loss_and_gradients(slow, fast, rescale, apply_b_dec, with_dead):
    d, F, k, B = 16, 96, 4, 64
    kw = dict(
        d_in=d, d_sae=F, k=k, rescale_acts_by_decoder_norm=rescale, apply_b_dec_to_input=apply_b_dec, aux_loss_coefficient=1 / 32
    )
    ref = _make(slow, **kw)
    with torch.no_grad():  # break the tied init a little, non-unit decoder norms, non-zero biases
        ref.W_dec.mul_(torch.rand(F, 1) + 0.5)
        ref.b_dec.normal_(0, 0.1)
        ref.b_enc.normal_(0, 0.05)
    fast_sae = _make(fast, **kw)
    fast_sae.load_state_dict(ref.state_dict())
    x = torch.randn(B, d)
    dead = (torch.arange(F) % 3 == 0) if with_dead else torch.zeros(F, dtype=torch.bool)
    o_ref, g_ref, fa_ref = _step_grads(ref, x, dead)
    o_fast, g_fast, fa_fast = _step_grads(fast_sae, x, dead)
    assert float(o_fast.loss) == pytest.approx(float(o_ref.loss), rel=1e-5)
    for key in o_ref.losses:
        assert float(o_fast.losses[key]) == pytest.approx(float(o_ref.losses[key]), rel=1e-5, abs=1e-7)
    if with_dead:
        assert float(o_ref.losses["auxiliary_reconstruction_loss"]) > 0
    assert rel_err(o_fast.sae_out, o_ref.sae_out) < 1e-5
    assert rel_err(fa_fast, fa_ref) < 1e-5
    for name in g_ref:
        assert rel_err(g_fast[name], g_ref[name]) < 1e-4, name
    if slow == "batchtopk":
        assert float(fast_sae.topk_threshold) == pytest.approx(float(ref.topk_threshold), rel=1e-6)


def test_fast_topk_layer_norm_matches():
    d, F, k, B = 12, 48, 3, 32
    kw = dict(d_in=d, d_sae=F, k=k, normalize_activations="layer_norm")
    ref = _make("topk", **kw)
    fast_sae = _make("sparse_topk", **kw)
    fast_sae.load_state_dict(ref.state_dict())
    x = torch.randn(B, d) * 3 + 1
    o_ref, g_ref, _ = _step_grads(ref, x, None)
    o_fast, g_fast, _ = _step_grads(fast_sae, x, None)
    assert float(o_fast.loss) == pytest.approx(float(o_ref.loss), rel=1e-5)
    for name in g_ref:
        assert rel_err(g_fast[name], g_ref[name]) < 1e-4, name


def test_batch_topk_select_matches_flat_topk():
    from sae_studies.saes.sparse_topk import batch_topk_select

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 200, generator=g).relu()
    acts[3, :150] += 10  # one row holding many winners: forces the fallback
    for a in (acts, torch.randn(64, 200, generator=g).relu()):
        v, i = batch_topk_select(a, 64 * 8)
        ref_v, ref_i = a.flatten().topk(64 * 8)
        assert torch.equal(torch.sort(v).values, torch.sort(ref_v).values)
        assert torch.equal(a.flatten()[i], v)


def _trainer(sae, B, steps, data):
    cfg = SAETrainerConfig(
        total_training_samples=B * steps,
        train_batch_size_samples=B,
        lr=3e-3,
        lr_end=3e-3,
        dead_feature_window=2,
        feature_sampling_window=1000,
    )
    return SAETrainer(cfg, sae, data_provider=data)


@pytest.mark.parametrize("arch,saved", [("sparse_topk", "topk"), ("sparse_batchtopk", "jumprelu")])
def test_round_trip_through_saetrainer(tmp_path, arch, saved):
    d, F, k, B = 16, 64, 4, 32
    sae = _make(arch, d_in=d, d_sae=F, k=k)
    gen = torch.Generator().manual_seed(0)
    data = iter(lambda: torch.randn(B, d, generator=gen), None)
    trainer = _trainer(sae, B, 6, data)
    trainer.fit()
    assert trainer.dead_neurons.dtype == torch.bool
    sae.save_inference_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert loaded.cfg.architecture() == saved
    x = torch.randn(B, d)
    sae.eval()
    with torch.no_grad():
        if arch == "sparse_topk":
            assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-5)
            assert torch.allclose(loaded(x), sae(x), atol=1e-5)
        else:  # BatchTopK -> JumpReLU: the threshold replaces the batch top-k at inference
            f = loaded.encode(x)
            assert (f[f > 0] > float(sae.topk_threshold) - 1e-5).all()
            assert torch.allclose(loaded.decode(f), loaded(x), atol=1e-5)


def test_fast_and_slow_train_the_same():
    d, F, k, B = 16, 64, 4, 32
    a = _make("topk", d_in=d, d_sae=F, k=k)
    b = _make("sparse_topk", d_in=d, d_sae=F, k=k)
    b.load_state_dict(a.state_dict())
    batches = [torch.randn(B, d, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    _trainer(a, B, 5, iter(batches)).fit()
    _trainer(b, B, 5, iter(copy.deepcopy(batches))).fit()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert rel_err(q, p) < 1e-4, n


def test_register_is_idempotent_and_recipes_name_the_fast_path():
    import importlib

    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    from sae_studies.saes import registry, sparse_topk

    before = dict(SAE_TRAINING_CLASS_REGISTRY)
    importlib.reload(sparse_topk)  # a notebook re-running its imports re-creates the classes
    assert set(SAE_TRAINING_CLASS_REGISTRY) == set(before)
    assert get_sae_training_class("sparse_topk")[0] is sparse_topk.SparseTopKTrainingSAE
    assert registry.get("topk").training_class_for(fast=True) == "sparse_topk"
    assert registry.get("topk").training_class_for(fast=False) == "topk"
    assert registry.get("batchtopk").training_class_for(fast=True) == "sparse_batchtopk"
    assert registry.get("batchtopk").batch_threshold and not registry.get("topk").batch_threshold
    with pytest.raises(ValueError, match="unknown SAE architecture 'gated'"):
        registry.get("gated")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(
            training={"sparse_topk": (sparse_topk.SparseBatchTopKTrainingSAE, sparse_topk.SparseBatchTopKTrainingSAEConfig)}
        )


@pytest.mark.parametrize("slow,fast", [("topk", "sparse_topk"), ("batchtopk", "sparse_batchtopk")])
@pytest.mark.parametrize("layout", ["coo", "dense"])
def test_fast_accepts_leading_dimensions_like_saelens(slow, fast, layout):
    """[batch, pos, d_in] input: same loss, output, activations and gradients as SAELens' class
    on the same weights, output shapes [batch, pos, ...]."""
    d, F, k = 16, 96, 4
    ref = _make(slow, d_in=d, d_sae=F, k=k)
    fast_sae = _make(fast, d_in=d, d_sae=F, k=k)
    fast_sae.load_state_dict(ref.state_dict())
    fast_sae.feature_acts_layout = layout
    x = torch.randn(4, 8, d)
    dead = torch.arange(F) % 3 == 0
    o_ref, g_ref, fa_ref = _step_grads(ref, x, dead)
    o_fast, g_fast, fa_fast = _step_grads(fast_sae, x, dead)
    assert o_fast.sae_out.shape == x.shape and fa_fast.shape == (4, 8, F) and o_fast.hidden_pre.shape == (4, 8, F)
    assert float(o_fast.loss) == pytest.approx(float(o_ref.loss), rel=1e-5)
    assert rel_err(o_fast.sae_out, o_ref.sae_out) < 1e-5
    assert rel_err(fa_fast, fa_ref) < 1e-5
    for name in g_ref:
        assert rel_err(g_fast[name], g_ref[name]) < 1e-4, name


@pytest.mark.parametrize("slow,fast", [("topk", "sparse_topk"), ("topk", "hierarchical_topk")])
def test_activation_hooks_fire_during_a_training_step(slow, fast):
    """hook_sae_acts_pre sees the encoder pre-activations and hook_sae_acts_post the activations,
    as in SAELens' training step."""
    d, F, k = 16, 96, 4
    seen: dict[str, list] = {}
    x = torch.randn(32, d)
    ref_state = _make(slow, d_in=d, d_sae=F, k=k).state_dict()
    for name in (slow, fast):
        sae = _make(name, d_in=d, d_sae=F, k=k)
        sae.load_state_dict(ref_state)
        got = seen.setdefault(name, [])
        sae.hook_sae_acts_pre.add_hook(lambda t, hook, got=got: got.append(("pre", t.detach().clone())))
        sae.hook_sae_acts_post.add_hook(lambda t, hook, got=got: got.append(("post", t.detach().clone())))
        _step_grads(sae, x, None)
    assert [n for n, _ in seen[slow]] == [n for n, _ in seen[fast]] == ["pre", "post"]
    assert rel_err(seen[fast][0][1], seen[slow][0][1]) < 1e-5
    post = seen[fast][1][1]
    assert rel_err(post.to_dense() if post.is_sparse else post, seen[slow][1][1]) < 1e-5


@pytest.mark.parametrize(
    "slow,fast", [("topk", "sparse_topk"), ("batchtopk", "sparse_batchtopk"), ("topk", "hierarchical_topk"), ("topk", "kron")]
)
@pytest.mark.parametrize("use_sparse", [False, True])
def test_feature_acts_layout_follows_use_sparse_activations_like_saelens(slow, fast, use_sparse):
    """SAELens' contract: dense feature_acts unless the config sets use_sparse_activations (then
    sparse COO, for TopK); the fast classes follow it until use_fast_bookkeeping opts an instance
    into COO."""
    d, F, k = 16, 64, 4
    x = torch.randn(32, d)
    ref = _make(slow, d_in=d, d_sae=F, k=k, use_sparse_activations=use_sparse)
    ref = ref.training_forward_pass(  # forward only: SAELens' sparse path has no CPU backward here
        TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)
    )
    out, _, fa = _step_grads(_make(fast, d_in=d, d_sae=F, k=k, use_sparse_activations=use_sparse), x, None)
    # SAELens' BatchTopK ignores the flag (always dense); the fast class does the same
    assert out.feature_acts.is_sparse == ref.feature_acts.is_sparse == (use_sparse and slow == "topk")
    assert fa.shape == (32, F) and int((fa != 0).sum(-1).max()) <= k * (32 if fast == "sparse_batchtopk" else 1)
    opted = use_fast_bookkeeping(_make(fast, d_in=d, d_sae=F, k=k, use_sparse_activations=use_sparse))
    assert _step_grads(opted, x, None)[0].feature_acts.is_sparse
    slow_sae = _make(slow, d_in=d, d_sae=F, k=k)
    assert use_fast_bookkeeping(slow_sae) is slow_sae and not hasattr(slow_sae, "reuse_hidden_pre")  # left as it is


@pytest.mark.parametrize("fast", ["sparse_topk", "sparse_batchtopk", "hierarchical_topk", "kron"])
def test_hidden_pre_is_the_steps_own_tensor_unless_the_fast_bookkeeping_is_on(fast):
    """By default a step's hidden_pre survives the next step (SAELens returns a fresh tensor);
    use_fast_bookkeeping makes it the reused encoder buffer, which the next step overwrites."""
    d, F, k = 16, 64, 4
    x1, x2 = torch.randn(32, d), torch.randn(32, d)
    sae = _make(fast, d_in=d, d_sae=F, k=k)
    first = _step_grads(sae, x1, None)[0].hidden_pre
    kept = first.clone()
    second = _step_grads(sae, x2, None)[0].hidden_pre
    assert torch.equal(first, kept) and second.data_ptr() != first.data_ptr()
    use_fast_bookkeeping(sae)
    first = _step_grads(sae, x1, None)[0].hidden_pre
    kept = first.clone()
    second = _step_grads(sae, x2, None)[0].hidden_pre
    assert second.data_ptr() == first.data_ptr() and not torch.equal(first, kept)


def test_train_builds_its_saes_with_the_fast_bookkeeping_and_saves_saelens_defaults(tmp_path):
    """train.build_training_sae opts the instance in; the config (what is saved) keeps SAELens'
    default use_sparse_activations=False."""
    from sae_studies.config import SAEConfig
    from sae_studies.saes import registry
    from sae_studies.train import build_training_sae

    sae = build_training_sae(registry.get("topk").spec(64, 4, 0), 16, SAEConfig(), steps=10)
    assert sae.feature_acts_layout == "coo" and sae.reuse_hidden_pre
    assert sae.cfg.use_sparse_activations is False
