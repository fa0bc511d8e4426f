"""Compute precision: names, `auto`, the CPU fallback, cache keys, and bfloat16 SAE training."""

from __future__ import annotations

import dataclasses
import warnings
from types import SimpleNamespace

import pytest
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer

import sae_studies.saes  # noqa: F401  (registers the training classes)
from sae_studies import precision, train
from sae_studies.analyses.quality import explained_variance
from sae_studies.config import LMConfig, SAEConfig
from sae_studies.saes.registry import SAESpec
from sae_studies.saes.sparse_decode import SparsePattern, sparse_decode


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)


def test_names_resolve_and_unknown_names_fail(bf16_cpu):
    assert precision.resolve("float32") == torch.float32
    assert precision.resolve("bfloat16") == torch.bfloat16
    assert precision.resolve("auto", "cpu") == torch.bfloat16
    assert precision.resolve("auto", "cuda") == torch.bfloat16
    for bad in ("fp16", "float16", "bf16", ""):
        with pytest.raises(ValueError, match="float32.*bfloat16.*auto"):
            precision.resolve(bad)
    assert SAEConfig().dtype == "auto" and LMConfig().compute_dtype == "auto" and LMConfig().dtype == "float32"


@pytest.mark.parametrize("field", ["sae.dtype", "lm.compute_dtype"])
def test_an_unknown_precision_fails_at_profile_load(field):
    from sae_studies.config import load_profile

    for bad in ("float16", "bf16"):
        with pytest.raises(ValueError, match=rf"{field} must be one of \['float32', 'bfloat16', 'auto'\]"):
            load_profile("smoke", {field: bad})
    for good in precision.PRECISIONS:
        assert load_profile("smoke", {field: good})


def test_auto_is_float32_on_a_cpu_without_bf16_silently(plain_cpu):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("auto", "cpu") == torch.float32
        assert precision.resolve("auto", "cuda") == torch.bfloat16  # CUDA needs no CPU flag


def test_bfloat16_on_a_cpu_without_bf16_falls_back_with_a_warning(plain_cpu):
    with pytest.warns(RuntimeWarning, match="no bfloat16 matrix instructions.*float32"):
        assert precision.resolve("bfloat16", "cpu") == torch.float32
    with pytest.warns(RuntimeWarning):
        assert precision.resolved_name("bfloat16") == "float32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    real_path = precision.Path

    def fake_path(p):
        return info if p == "/proc/cpuinfo" else real_path(p)

    monkeypatch.setattr(precision, "Path", fake_path)
    for flags, expected in [("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True)]:
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        precision.cpu_has_bf16.cache_clear()
        assert precision.cpu_has_bf16() is expected
    precision.cpu_has_bf16.cache_clear()


def test_autocast_context_and_compute_dtype():
    with precision.autocast(torch.float32):
        assert not torch.is_autocast_enabled("cpu")
        assert precision.compute_dtype("cpu") == torch.float32
    with precision.autocast(torch.bfloat16, "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert precision.compute_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    assert precision.compute_dtype("cpu") == torch.float32
    with pytest.raises(ValueError, match="float32 or torch.bfloat16"):
        precision.autocast(torch.float16)


def test_sae_cache_key_holds_the_resolved_precision(monkeypatch):
    acts = SimpleNamespace(key="acts-key")
    spec = SAESpec("topk", 64, 4, seed=0)
    keys = {}
    for capable in (True, False):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda c=capable: c)
        keys[capable] = train.artifact_params(spec, acts, SAEConfig(dtype="auto"), 32)
    assert keys[True]["training"]["precision"] == "bfloat16"
    assert "precision" not in keys[False]["training"]  # float32: the keys cached before the setting
    assert "dtype" not in keys[True]["training"]  # the resolved value, never the name
    float32 = train.artifact_params(spec, acts, SAEConfig(dtype="float32"), 32)
    assert float32 == keys[False]


def test_lm_weights_key_ignores_the_forward_precision():
    from sae_studies.lm import lm_artifact_params

    keys = [lm_artifact_params(LMConfig(compute_dtype=c), "toks") for c in ("auto", "float32", "bfloat16")]
    assert keys[0] == keys[1] == keys[2] and "compute_dtype" not in keys[0]["lm"]
    assert lm_artifact_params(LMConfig(d_model=64), "toks") != keys[0]


def test_sparse_functions_run_in_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(50, 12, generator=g, requires_grad=True)
    vals = torch.randn(37, 5, generator=g, requires_grad=True)
    pattern = SparsePattern.from_topk(torch.randint(0, 50, (37, 5), generator=g), 50)
    ref = sparse_decode(vals, pattern, W)
    (gW_ref,) = torch.autograd.grad(ref.square().sum(), W)
    with precision.autocast(torch.bfloat16, "cpu"):
        out = sparse_decode(vals, pattern, W)
        loss = out.square().sum()
    (gW,) = torch.autograd.grad(loss, W)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert torch.allclose(gW, gW_ref, rtol=1e-6, atol=1e-6)


ARCHS = [
    ("sparse_topk", {}),
    ("sparse_batchtopk", {}),
    ("hierarchical_topk", {}),
    ("kron", {"m": 2, "n": 4}),
]


def _make(arch, extra, d=16, F=96, k=4):
    cls, cfg_cls = get_sae_training_class(arch)
    torch.manual_seed(0)
    return cls(cfg_cls(d_in=d, d_sae=F, k=k, **extra))


@pytest.mark.parametrize("arch,extra", ARCHS)
def test_bfloat16_step_selects_in_bfloat16_and_keeps_float32_values(arch, extra):
    """The encoder matmul runs in bfloat16; the selected activations equal the float32 ones at the
    same latents, and the loss and gradients are float32."""
    sae = _make(arch, extra)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)
    out32 = sae.training_forward_pass(step)
    dense32 = out32.feature_acts.to_dense()
    with precision.autocast(torch.bfloat16, "cpu"):
        out16 = sae.training_forward_pass(step)
    out16.loss.backward()
    assert out16.hidden_pre.dtype == torch.bfloat16
    assert out16.loss.dtype == torch.float32 and out16.sae_out.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 for p in sae.parameters())
    dense16 = out16.feature_acts.to_dense()
    both = (dense16 != 0) & (dense32 != 0)
    assert both.sum() > 0.9 * (dense32 != 0).sum()  # the selections differ only at near-ties
    assert torch.allclose(dense16[both], dense32[both], rtol=1e-5, atol=1e-6)  # float32 values
    assert float(out16.loss.detach()) == pytest.approx(float(out32.loss.detach()), rel=0.02)


def _synthetic(n_batches, B=128, d=24, n_feat=96, active=3, seed=0):
    """Sparse ground-truth features: each row a non-negative mix of `active` of `n_feat` unit directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_feat, d, generator=g), dim=-1)
    out = []
    for _ in range(n_batches):
        idx = torch.rand(B, n_feat, generator=g).argsort(-1)[:, :active]
        coef = torch.rand(B, active, generator=g) + 0.5
        out.append((coef.unsqueeze(-1) * dirs[idx]).sum(1) + 0.01 * torch.randn(B, d, generator=g))
    return out


def _train(arch, extra, batches, autocast):
    sae = _make(arch, extra, d=24, F=96, k=6)
    B = batches[0].shape[0]
    cfg = SAETrainerConfig(
        total_training_samples=B * len(batches),
        train_batch_size_samples=B,
        lr=4e-3,
        lr_end=4e-3,
        dead_feature_window=10,
        feature_sampling_window=1000,
        autocast=autocast,
    )
    SAETrainer(cfg, sae, data_provider=iter(batches)).fit()
    return sae


@pytest.mark.parametrize(
    "arch,extra",
    [*ARCHS, ("multi_topk", {"multi_topk_factor": 2}), ("matryoshka_batchtopk", {"matryoshka_widths": [32, 96]})],
)
def test_bfloat16_training_matches_float32_explained_variance(arch, extra):
    """Our sparse path and SAELens' dense path (Matryoshka) under SAETrainer's bfloat16 autocast."""
    batches = _synthetic(200)
    test = torch.cat(_synthetic(4, seed=9))
    ev = {}
    for autocast in (False, True):
        sae = _train(arch, extra, [b.clone() for b in batches], autocast)
        sae.eval()
        with torch.no_grad():
            ev[autocast] = explained_variance(test, sae(test))
    assert ev[False] > 0.4, ev  # it learned something (EV at initialisation is below 0)
    assert abs(ev[True] - ev[False]) < 0.005, ev


def test_train_sae_passes_the_precision_to_saetrainer(monkeypatch):
    seen = {}
    real = train.SAETrainer

    def spy(cfg, sae, data_provider):
        seen["autocast"] = cfg.autocast
        raise RuntimeError("stop")

    monkeypatch.setattr(train, "SAETrainer", spy)
    acts = SimpleNamespace(key="k", d=16, batches=lambda b, seed, **kw: iter(()), hook="blocks.0.hook_resid_post")
    monkeypatch.setattr(train, "normalised_mean", lambda a: torch.zeros(16))
    store = SimpleNamespace(get_or_build=lambda kind, params, build, code=(): build(None))
    spec = SAESpec("topk", 64, 4, seed=0)
    for name, capable, expected in [("auto", True, True), ("auto", False, False), ("float32", True, False)]:
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda c=capable: c)
        with pytest.raises(RuntimeError, match="stop"):
            train.train_sae(acts, spec, dataclasses.replace(SAEConfig(), dtype=name, train_tokens=64), store, 32)
        assert seen["autocast"] is expected
    assert real is not None


# ---------------------------------------------------------------------------------------
# the LM forward: harvest and spliced CE
# ---------------------------------------------------------------------------------------
def _tiny_loaded(compute_dtype):
    import numpy as np
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_studies.lm import LoadedModel
    from sae_studies.tokens import TokenStream

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, d_vocab=50, act_fn="gelu", seed=0, device="cpu"
    )
    model = HookedTransformer(cfg)
    model.eval()
    rng = np.random.default_rng(0)
    stream = TokenStream(rng.integers(0, 50, 16 * 40).astype(np.int32), np.zeros(16 * 40, dtype=np.int8))
    return LoadedModel(model, None, {"train": stream, "val": stream}, key="tiny", tokens_key="toks", compute_dtype=compute_dtype)


def test_harvest_runs_in_the_compute_dtype_stores_float32_and_keys_the_precision(tmp_path):
    from sae_studies import activations
    from sae_studies.store import Store

    store = Store(tmp_path)
    hooks = ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"]
    sets = {
        dt: activations.harvest(_tiny_loaded(dt), hooks, 16 * 32, store, batch_size=8) for dt in (torch.float32, torch.bfloat16)
    }
    for h in hooks:
        a32, a16 = sets[torch.float32][h], sets[torch.bfloat16][h]
        assert a32.key != a16.key  # the precision is part of the key
        assert "precision" not in a32.artifact.params and a16.artifact.params["precision"] == "bfloat16"
        x32, x16 = a32.tensor(), a16.tensor()
        assert x16.dtype == torch.float32
        assert not torch.equal(x32, x16)  # the forward really ran in bfloat16 ...
        assert float((x16 - x32).norm() / x32.norm()) < 0.02  # ... to bfloat16 accuracy


def test_spliced_ce_in_bfloat16_is_close_to_float32():
    from sae_studies.analyses.quality import Splicer

    loaded = _tiny_loaded(torch.float32)
    contexts = loaded.contexts("val")
    for hook in ("blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"):
        reports = {
            dt: Splicer(loaded.model, hook, contexts, batch_size=8, compute_dtype=dt).report(lambda a: 0.9 * a)
            for dt in (torch.float32, torch.bfloat16)
        }
        r32, r16 = reports[torch.float32], reports[torch.bfloat16]
        assert r16.ce_clean != r32.ce_clean
        for name in ("ce_clean", "ce_sae", "ce_zero"):
            assert getattr(r16, name) == pytest.approx(getattr(r32, name), abs=0.01), (hook, name)
