"""Device handling: the sparse path, SAE training and every analysis with the device as a parameter.

Each test runs on ``cpu`` always and on ``cuda`` when this machine has a GPU (marked ``gpu``:
``make test-gpu`` runs only those; without a GPU they are skipped). In the cuda cases the
models and SAEs live on the GPU while the activations come from disk on the CPU, as in the
notebooks; every result must come back on the CPU (tensors) or as numpy / floats, and agree with
the same computation done entirely on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_studies import devices, feed, train
from sae_studies.activations import ActivationSet, harvest
from sae_studies.analyses import features, flow, quality, seed_stability, steering
from sae_studies.analyses import flow_deactivation as deactivation
from sae_studies.config import SAEConfig
from sae_studies.lm import LoadedModel
from sae_studies.saes import registry
from sae_studies.saes import sparse_decode as sd
from sae_studies.saes.sparse_decode import SparsePattern
from sae_studies.store import Artifact, Store
from sae_studies.studies import flow as flow_study
from sae_studies.studies import stability
from sae_studies.tokens import TokenStream

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")])]
FAST = ["topk", "batchtopk", "hierarchical_topk", "multi_topk", "kron"]  # the sparse training path
D, F, K, B = 16, 64, 4, 64


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def rel_err(a, b) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def is_cpu_result(x) -> bool:
    return isinstance(x, np.ndarray) or (isinstance(x, torch.Tensor) and x.device.type == "cpu")


# --------------------------------------------------------------------------------------------
# the sparse path
# --------------------------------------------------------------------------------------------


def _patterns(device):
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])  # unsorted within rows
    yield "topk", SparsePattern.from_topk(idx.to(device), F)
    mask = torch.rand(B, F, generator=g) < 0.1
    mask[5] = False  # an empty row
    flat = mask.flatten().nonzero().squeeze(1)
    yield "flat", SparsePattern.from_flat(flat[torch.randperm(flat.numel(), generator=g)].to(device), B, F)
    rows, cols = mask.nonzero(as_tuple=True)
    perm = torch.cat(
        [torch.randperm(int(n), generator=g) + int(s) for s, n in zip(torch.cumsum(mask.sum(1), 0) - mask.sum(1), mask.sum(1))]
    )
    yield "ragged, unsorted", SparsePattern(rows[perm].to(device), cols[perm].to(device), B, F)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_dots_on_unsorted_patterns(device, dtype):
    """Sampled dot products on patterns whose columns are unsorted within rows: the sorted-column
    path (what CUDA takes) and the direct CSR path agree with a gathered reference, and on the CPU
    they are bitwise identical."""
    g = torch.Generator().manual_seed(1)
    G = torch.randn(B, D, generator=g, dtype=dtype).to(device)
    W = torch.randn(F, D, generator=g, dtype=dtype).to(device)
    for name, pat in _patterns(device):
        ref = (G.double().cpu()[pat.rows.cpu()] * W.double().cpu()[pat.cols.cpu()]).sum(-1)
        auto = pat.row_dots(G, W)
        srt = pat.row_dots(G, W, sorted_columns=True)
        assert rel_err(auto, ref) < (1e-6 if dtype == torch.float32 else 1e-13), name
        assert rel_err(srt, ref) < (1e-6 if dtype == torch.float32 else 1e-13), name
        if device.type == "cpu":
            assert torch.equal(srt, pat.row_dots(G, W, sorted_columns=False)), name
        cols, perm = pat.row_sorted
        assert torch.equal(cols, pat.cols[perm])
        for b in range(B):  # sorted within each row, rows kept in place
            seg = cols[pat.crow[b] : pat.crow[b + 1]]
            assert torch.all(seg[1:] >= seg[:-1])


def test_crow_without_bincount(device):
    for _, pat in _patterns(device):
        counts = torch.bincount(pat.rows.cpu(), minlength=B)
        assert torch.equal(pat.crow.cpu(), torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))
        order, t_crow, t_rows = pat.transpose
        t_counts = torch.bincount(pat.cols.cpu(), minlength=F)
        assert torch.equal(t_crow.cpu(), torch.cat([torch.zeros(1, dtype=torch.long), t_counts.cumsum(0)]))
        assert torch.equal(t_rows, pat.rows[order])


def test_single_thread_only_for_cpu_tensors(one_thread):
    torch.set_num_threads(2)
    with sd.single_thread(torch.zeros(3, device="meta")):
        assert torch.get_num_threads() == 2  # a non-CPU tensor: the process-wide setting is left alone
    with sd.single_thread(torch.zeros(3)):
        assert torch.get_num_threads() == 1
    with sd.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_prefix_loss_chunks_by_device():
    """CPU: 192-row chunks on two threads; a GPU: one chunk of every row, no threads."""
    assert sd._prefix_chunks(torch.device("cpu"), 4096, 768, 32, 1 << 21) == (192, 14, 2)
    assert sd._prefix_chunks(torch.device("cuda"), 4096, 768, 32, 1 << 21) == (4096, 1, 1)
    assert sd._prefix_chunks(torch.device("cuda"), 256, 64, 32, 1 << 21) == (256, 32, 1)


def _make(arch: str, dtype: str, device, reference: bool = False):
    recipe = registry.get(arch)
    spec = recipe.spec(F, K)
    name = recipe.reference_class if reference else recipe.training_class_for(True)
    cls, cfg_cls = get_sae_training_class(name)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    values = {"d_in": D, "d_sae": F, "k": K, "dtype": dtype, "device": str(device), "aux_loss_coefficient": 1 / 32}
    values.update(dict(spec.extra))
    torch.manual_seed(0)
    return cls(cfg_cls(**{k: v for k, v in values.items() if k in fields}))


def _step(sae, x, dead):
    sae.zero_grad(set_to_none=True)
    out = sae.training_forward_pass(TrainStepInput(x, {}, dead, 0, False))
    out.loss.backward()
    fa = out.feature_acts.to_dense() if out.feature_acts.is_sparse else out.feature_acts
    grads = {n: p.grad.detach().cpu().double() for n, p in sae.named_parameters() if p.grad is not None}
    return out, fa.detach().cpu().double(), grads


@pytest.mark.parametrize("arch", FAST)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sparse_path_parity(device, arch, dtype):
    """Loss, reconstruction, codes, every gradient (AuxK with dead latents included) and the
    BatchTopK threshold of the sparse step on ``device`` against the same step on the CPU in
    float64 (the CPU path is itself checked against dense references in test_sparse_topk,
    test_hierarchical_topk and test_kron)."""
    ref = _make(arch, "float64", "cpu")
    with torch.no_grad():  # away from the tied init: unequal decoder norms, non-zero biases
        ref.W_dec.mul_(torch.rand(F, 1, dtype=torch.float64) + 0.5)
        ref.b_dec.normal_(0, 0.1)
        ref.b_enc.normal_(0, 0.05)
    sae = _make(arch, dtype, device)
    sae.load_state_dict(ref.state_dict())
    x = torch.randn(B, D, dtype=torch.float64)
    dead = torch.arange(F) % 3 == 0
    o_ref, fa_ref, g_ref = _step(ref, x, dead)
    o, fa, g = _step(sae, x.to(device, getattr(torch, dtype)), dead.to(device))
    tol = 1e-9 if dtype == "float64" else 2e-4
    assert float(o_ref.losses["auxiliary_reconstruction_loss"]) > 0
    assert rel_err(o.loss, o_ref.loss) < tol
    assert rel_err(o.sae_out, o_ref.sae_out) < tol
    assert rel_err(fa, fa_ref) < tol
    assert set(g) == set(g_ref)
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < tol, name
    if registry.get(arch).batch_threshold:
        assert float(sae.topk_threshold) == pytest.approx(float(ref.topk_threshold), rel=tol)
        assert float(sae.topk_threshold) > 0


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_path_matches_saelens_on_the_device(device, arch):
    """The fast TopK / BatchTopK step against SAELens' own dense classes, both on ``device``."""
    ref = _make(arch, "float32", device, reference=True)
    sae = _make(arch, "float32", device)
    sae.load_state_dict(ref.state_dict())
    x = torch.randn(B, D, device=device)
    dead = (torch.arange(F) % 3 == 0).to(device)
    o_ref, fa_ref, g_ref = _step(ref, x, dead)
    o, fa, g = _step(sae, x, dead)
    assert rel_err(o.loss, o_ref.loss) < 1e-5
    assert rel_err(fa, fa_ref) < 1e-5
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < 1e-4, name
    if arch == "batchtopk":
        assert float(sae.topk_threshold) == pytest.approx(float(ref.topk_threshold), rel=1e-6)


# --------------------------------------------------------------------------------------------
# training through SAETrainer, fed by the prefetcher
# --------------------------------------------------------------------------------------------


@pytest.fixture
def acts(tmp_path):
    g = np.random.default_rng(0)
    x = (g.standard_normal((2048, D)) @ g.standard_normal((D, D)) + 0.5).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    return ActivationSet("blocks.0.hook_resid_post", Artifact("activations", "t" * 16, tmp_path))


@pytest.mark.parametrize("arch", registry.names())
def test_saetrainer_steps(device, arch, acts, one_thread):
    """About 20 SAETrainer steps of every architecture on ``device``, batches prefetched onto it
    (pinned buffers and non-blocking copies on CUDA): finite, moved, on the device."""
    spec = registry.get(arch).spec(F, K)
    sae_cfg = SAEConfig(device=str(device), dead_feature_window=4)
    sae = train.build_training_sae(spec, D, sae_cfg, 20)
    before = sae.W_dec.detach().clone()
    cfg = SAETrainerConfig(
        total_training_samples=20 * B,
        train_batch_size_samples=B,
        lr=3e-3,
        lr_end=3e-4,
        device=str(device),
        dead_feature_window=4,
        feature_sampling_window=1000,
        n_batches_for_norm_estimate=2,
    )
    with feed.data_feed(acts, B, seed=0, device=device, prefetch=2) as data:
        SAETrainer(cfg, sae, data_provider=data).fit()
        assert data.batches == 22 and data.wait_seconds >= 0  # 2 for the norm estimate, 20 steps
    assert not data.alive
    for name, p in sae.named_parameters():
        assert p.device.type == device.type and torch.isfinite(p).all(), name
    assert not torch.equal(sae.W_dec.detach(), before)


# --------------------------------------------------------------------------------------------
# analyses: CPU activations, model and SAEs on the device
# --------------------------------------------------------------------------------------------


def _tiny_lm(device) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D, n_ctx=12, d_head=4, n_heads=4, d_mlp=32, d_vocab=40, act_fn="gelu", device=str(device), seed=0
    )
    return HookedTransformer(cfg).eval()


def _contexts(n=24, n_ctx=12) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 40, size=(n, n_ctx))


def _hook_acts(model, contexts, hook) -> torch.Tensor:
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.as_tensor(contexts, device=model.cfg.device), names_filter=[hook])
    return cache[hook].reshape(-1, D).cpu()  # activations as read from disk: on the CPU


def _sae(device, tmp_path, seed=0, arch="topk"):
    """An inference SAE saved and loaded back onto ``device`` (train.load_sae), a little trained
    away from the tied initialisation so that codes are not symmetric."""
    sae = train.build_training_sae(registry.get(arch).spec(F, K, seed), D, SAEConfig(), 1)
    with torch.no_grad():
        sae.W_dec.add_(0.3 * torch.randn_like(sae.W_dec))
        sae.b_enc.normal_(0, 0.1)
    path = tmp_path / f"sae-{arch}-{seed}"
    sae.save_inference_model(path)
    return train.load_sae(path, str(device))


def _on_cpu(obj):
    return copy.deepcopy(obj).to("cpu")


def test_sae_report_with_cpu_eval_x(device, tmp_path):
    """The notebooks' call: a CPU eval_x, an SAE and an LM on the device, the splicer's LM
    activations fed to the SAE there; same numbers as everything on the CPU."""
    model, ctx = _tiny_lm(device), _contexts()
    hook = "blocks.0.hook_resid_post"
    x = _hook_acts(model, ctx, hook)
    sae = _sae(device, tmp_path)
    assert devices.device_of(sae).type == device.type
    got = quality.sae_report(sae, x, quality.Splicer(model, hook, ctx, batch_size=8))
    cut = quality.sae_report(sae, x, quality.Splicer(model, hook, ctx, batch_size=8), encode=quality.cut_encoder(sae, 2))
    cpu_model, cpu_sae = _on_cpu(model), _on_cpu(sae)
    ref = quality.sae_report(cpu_sae, x, quality.Splicer(cpu_model, hook, ctx, batch_size=8))
    assert all(isinstance(v, float) for v in got.values())
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert cut["l0"] <= 2 + 1e-9
    rep = quality.sae_reconstruction_metrics(sae, x)
    assert isinstance(rep.density, np.ndarray) and rep.l0 == pytest.approx(got["l0"])
    mfvu = features.marginal_fvu(sae, x)
    assert isinstance(mfvu, np.ndarray) and np.allclose(mfvu, features.marginal_fvu(cpu_sae, x), rtol=1e-4, atol=1e-7)
    ev = features.ablation_explained_variance(sae, x, {"first": torch.arange(F) < 8})
    assert ev["none"] == pytest.approx(got["explained_variance"], rel=1e-6)
    ce = features.marginal_ce(quality.Splicer(model, hook, ctx[:8], batch_size=8), sae, np.array([0, 5]))
    assert len(ce) == 2 and np.isfinite(ce["delta_ce"]).all()


def test_top_activations_and_codes(device, tmp_path):
    model, ctx = _tiny_lm(device), _contexts()
    x = _hook_acts(model, ctx, "blocks.0.hook_resid_post")
    sae = _sae(device, tmp_path)
    top = features.top_activations(sae, x, 5)
    ref = features.top_activations(_on_cpu(sae), x, 5)
    assert is_cpu_result(top.values) and is_cpu_result(top.rows) and isinstance(top.density, np.ndarray)
    assert torch.allclose(top.values, ref.values, atol=1e-5) and np.allclose(top.density, ref.density)
    cut = features.top_activations(quality.cut_encoder(sae, 2), x, 5)
    assert is_cpu_result(cut.values) and (cut.density <= top.density + 1e-12).all()
    codes = quality.encode_all(quality.cut_encoder(sae, 2), x)
    assert is_cpu_result(codes) and codes.shape == (len(x), F)
    cats = np.arange(len(x)) % 3
    assert set(features.category_auroc(codes, cats)) == {0, 1, 2}
    enr = steering.theme_enrichment(sae.encode, x, cats, 3)
    assert isinstance(enr, np.ndarray) and np.allclose(enr, steering.theme_enrichment(_on_cpu(sae).encode, x, cats, 3), atol=1e-4)


def test_stability_tables(device, tmp_path):
    """Study 1's tables from SAEs on the device and CPU eval activations."""
    x = torch.randn(512, D)
    cell = stability.GridCell(0, "topk", F // D)
    saes = {cell: [_sae(device, tmp_path, seed=s) for s in range(3)]}
    scores, per_seed, feats = stability.stability_tables(saes, {0: x}, [0, 1, 2], 0.7, 1)
    cpu = {cell: [_on_cpu(s) for s in saes[cell]]}
    _, ref_per_seed, ref_feats = stability.stability_tables(cpu, {0: x}, [0, 1, 2], 0.7, 1)
    assert is_cpu_result(scores[cell].fraction) and is_cpu_result(scores[cell].best.values)
    assert np.allclose(per_seed["stable"], ref_per_seed["stable"], equal_nan=True)
    assert np.allclose(feats["mean_best"], ref_feats["mean_best"], atol=1e-6)
    q = stability.quality_table(saes, {0: x}, [0, 1, 2])
    assert np.allclose(q["explained_variance"], stability.quality_table(cpu, {0: x}, [0, 1, 2])["explained_variance"], atol=1e-6)
    assert len(stability.duplication_table(saes, [0, 1, 2], 0.7)) == 3
    assert len(stability.hungarian_table(saes, [0, 1, 2], 0.7, 1024)) == 2
    assert 0 <= seed_stability.pair_match_fraction(saes[cell][0].W_dec, _on_cpu(saes[cell][1]).W_dec) <= 1  # mixed devices


def test_flow_matching_with_null_sources(device, tmp_path):
    """Study 5's matching: decoders on the device, null dictionaries drawn on the CPU."""
    layers = [0, 1]
    g = torch.Generator().manual_seed(0)
    decs = {pos: torch.randn(F, D, generator=g).to(device) for pos in flow.window_positions(layers)}
    covs = {pos: torch.eye(D) + 0.1 for pos in decs}
    null = flow_study.null_sources(decs, covs, "covariance", seed=0)
    assert all(w.device.type == device.type for w in null.values())
    real = flow.match_decoders(decs, layers, k=2)
    base = flow.match_window({layer: decs[("resid", layer)] for layer in layers}, null, layers, k=2)
    cpu_null = flow.match_window(
        {layer: decs[("resid", layer)] for layer in layers}, {p: w.cpu() for p, w in null.items()}, layers, 2
    )
    for key in base.values:
        assert is_cpu_result(base.values[key]) and is_cpu_result(real.indices[key])
        assert torch.allclose(base.values[key], cpu_null.values[key])
    thresholds = flow.null_thresholds(base, 0.95)
    table = flow_study.group_table(real, thresholds)
    assert len(table) == 2 * F and set(table["group"]) <= set(flow.GROUPS)
    graph = flow.flow_graph(real, 1, 0, resid_threshold=0.0, module_threshold=0.0, k=2)
    assert graph.number_of_nodes() > 1


def test_deactivation_and_steering_hooks(device, tmp_path):
    """The deactivation test and removal steering with the LM and SAEs on the device."""
    model, ctx = _tiny_lm(device), _contexts(8)
    saes = {key: _sae(device, tmp_path, seed=i) for i, key in enumerate(("target", "resid", "mlp", "attn"))}
    ld = deactivation.LayerDeactivation(model, 1, saes, ctx, batch_size=4)
    f = int(torch.argmax((ld.codes["target"] > 0).sum((0, 1))))
    windows = torch.nonzero(ld.firing(f).any(1)).flatten().cpu().tolist()[:3]
    cands = ld.active_predecessors(f, windows)[:4]
    eff = ld.effects(f, cands, windows)
    assert len(eff) == len(cands) and np.isfinite(eff["change"]).all()
    plan = steering.SteeringPlan("remove", removals={1: (saes["target"], f)})
    out = steering.sample(model, [[1, 2, 3], [4, 5]], 4, temperature=1.0, seeds=0, hooks=steering.batch_hooks([plan, None]))
    assert len(out) == 2 and all(len(o) == 4 for o in out)
    add = steering.add_plan({1: f}, {1: saes["target"].W_dec}, {1: 1.0}, {1: 2.0})
    assert len(steering.sample(model, [[1, 2]], 3, temperature=0, hooks=add.hooks())[0]) == 3


def test_tiny_harvest(device, tmp_path):
    """Harvest from an LM on the device: the rows on disk are the CPU model's activations."""
    model = _tiny_lm(device)
    g = np.random.default_rng(2)
    streams = {
        s: TokenStream(g.integers(0, 40, 12 * 16).astype(np.int32), np.zeros(12 * 16, dtype=np.int8)) for s in ("train", "val")
    }
    loaded = LoadedModel(model=model, tokenizer=None, streams=streams, key="tiny", tokens_key="tiny-tokens")
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    got = harvest(loaded, hooks, 12 * 16, Store(tmp_path), batch_size=4)
    ctx = loaded.contexts("train", 12 * 16)
    for h in hooks:
        ref = _hook_acts(_on_cpu(model), ctx, h)
        assert torch.allclose(got[h].tensor(), ref, atol=1e-5), h


# --------------------------------------------------------------------------------------------
# the helpers themselves (CPU only)
# --------------------------------------------------------------------------------------------


def test_device_of_and_conversions(tmp_path):
    sae = _sae("cpu", tmp_path)
    meta = torch.zeros(2, device="meta")
    assert devices.device_of(meta).type == "meta"
    assert devices.device_of(sae) == torch.device("cpu") == devices.device_of(sae.encode)
    assert devices.device_of(quality.cut_encoder(sae, 2)) == torch.device("cpu")
    assert devices.device_of(lambda x: x) is None

    def closure(model):
        return lambda x: model.encode(x)

    assert devices.device_of(closure(sae)) == torch.device("cpu")
    assert devices.to_device(torch.ones(2), meta).device.type == "meta"
    lam = torch.ones(2)
    assert devices.to_device(lam, lambda x: x) is lam
    out = devices.to_numpy(torch.ones(3, dtype=torch.bfloat16))
    assert out.dtype == np.float32 and out.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
def test_check_device_names_the_parameter():
    with pytest.raises(ValueError, match="sae.device is 'cuda' but this machine has no CUDA device"):
        devices.check_device("sae.device", "cuda")
    with pytest.raises(ValueError, match="lm.device must be a torch device"):
        devices.check_device("lm.device", "gpu0")
    assert devices.check_device("sae.device", "cpu") == torch.device("cpu")
