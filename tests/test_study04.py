"""Study 4 (KronSAE): analytic compute, the grid and its checks, tables and the efficiency
measurements (the verdict rules: test_study04_claims.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.config import load_profile
from sae_studies.studies import kron as ks
from sae_studies.study_config import Study04Config

CFG = Study04Config(
    expansion_factors=(2, 4),
    sweep_expansion_factor=4,
    sweep_mn=((1, 4), (2, 4), (4, 4)),
    seeds=(0, 1, 2),
    sweep_seeds=(0, 1),
    k=4,
    train_tokens=4096,
    batch_size=512,
    convergence_multiples=(0.5, 1.0, 2.0),
)
D = 16


# ---------------------------------------------------------------------------------------
# analytic compute
# ---------------------------------------------------------------------------------------
def test_flop_counts_known_answers():
    d, F, k = 10, 64, 4
    assert ks.encoder_flops(d, F, k) == 2 * (10 * 64 + 4 * 10)
    assert ks.encoder_flops(d, F, k, (2, 4)) == 2 * (10 * 8 * 6 + 4 * 10)  # h = 8 heads of 2 + 4
    assert ks.training_flops(d, F, k) == 2 * (640 + 40 + 120)
    assert ks.training_flops(d, F, k, (2, 4)) == 2 * (480 + 80 + 120)
    # encoder matmul ratio is (m+n)/(mn) exactly
    for m, n in [(2, 4), (4, 4), (4, 8), (1, 8)]:
        ratio = (ks.encoder_flops(768, 65536, 0, (m, n))) / ks.encoder_flops(768, 65536, 0)
        assert ratio == pytest.approx((m + n) / (m * n))


def test_flops_matched_tokens():
    tokens = ks.flops_matched_tokens(131072, 128, 1024, 32, (2, 4), 1024)
    ratio = ks.training_flops(128, 1024, 32) / ks.training_flops(128, 1024, 32, (2, 4))
    assert tokens % 1024 == 0 and tokens <= 131072 * ratio < tokens + 1024
    assert ks.flops_matched_tokens(1024, 128, 1024, 32, (1, 4), 1024) == 1024  # at least one batch


# ---------------------------------------------------------------------------------------
# grid and checks
# ---------------------------------------------------------------------------------------
def test_grid_is_distinct_and_covers_every_group():
    variants = ks.grid(CFG, D)
    keys = [dataclasses.astuple(v) for v in variants]
    assert len(keys) == len(set(keys))
    df = ks.results_frame([v.row() for v in variants])
    main = ks.main_table(df, CFG)
    assert set(main.model) == {"TopK", "KronSAE, equal tokens", "KronSAE, equal FLOPs"}
    assert main.groupby(["d_sae", "model"]).size().eq(3).all() and set(main.d_sae) == {32, 64}
    flops = main[main.model == "KronSAE, equal FLOPs"]
    assert (flops.train_tokens >= CFG.train_tokens).all() and (flops.train_tokens % CFG.batch_size == 0).all()
    assert (flops.train_tokens[flops.d_sae == 64] > CFG.train_tokens).all()
    sweep = ks.sweep_table(df, CFG)
    assert set(sweep.mn) == {"(1,4)", "(2,4)", "(4,4)"} and set(sweep.seed) == {0, 1}
    assert set(sweep.heads[sweep.mn == "(4,4)"]) == {4}
    comp = ks.composition_table(df, CFG)
    assert set(comp.composition) == {"mand", "relu_product", "product"} and len(comp) == 9
    conv = ks.convergence_table(df, CFG)
    assert sorted(conv.train_tokens[conv.arch == "topk"]) == [2048, 4096, 8192] and set(conv.seed) == {0}
    for v in variants:  # every spec is valid for its recipe
        assert v.spec(CFG.k).d_sae == v.d_sae


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seeds": (0,)}, "at least 2 distinct seeds"),
        ({"sweep_seeds": (5,)}, "sweep_seeds"),
        ({"main_mn": (4, 2), "sweep_mn": ((4, 2),)}, r"m ≤ n"),
        ({"sweep_mn": ((2, 4), (3, 4))}, r"\(3, 4\) at F = 2·16.*does not factor"),
        ({"main_mn": (4, 8)}, r"main_mn \(4, 8\) must be one of"),
        ({"compositions": ("relu_product",)}, "must include 'mand'"),
        ({"compositions": ("mand", "sum")}, "compositions entry must be one of"),
        ({"k": 40}, r"k must be an integer in 1..32"),
        ({"batch_size": 1000}, "must divide activations.n_tokens"),
        ({"convergence_multiples": (0.5, 2.0)}, "include 1.0"),
    ],
)
def test_bad_config_fails_naming_the_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        ks.check_config(dataclasses.replace(CFG, **change), D, 32768)


def test_profiles_build_their_grids():
    for name, d in [("smoke", 32), ("default", 128)]:
        profile = load_profile(name)
        ks.check_config(profile.study04, d, profile.activations.n_tokens)
        assert len(ks.grid(profile.study04, d)) > 10


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------
def test_summarise_difference_and_convergence_gap():
    df = pd.DataFrame({"g": ["a", "a", "b", "b"], "v": [1.0, 3.0, 2.0, 2.0]})
    s = ks.summarise(df, ["g"], ["v"]).set_index("g")
    assert s.loc["a", "v_mean"] == 2.0 and s.loc["a", "v_std"] == pytest.approx(2**0.5) and s.loc["b", "v_count"] == 2
    delta, se = ks.difference([1.0, 3.0], [2.0, 2.0])
    assert delta == 0.0 and se == pytest.approx(1.0)  # sqrt(2/2 + 0/2)
    conv = pd.DataFrame({"arch": ["topk"] * 3, "multiple": [0.5, 1.0, 2.0], "explained_variance": [0.8, 0.85, 0.87]})
    gap = ks.convergence_gap(conv).iloc[0]
    assert gap.at_budget == 0.85 and gap.gain_to_largest == pytest.approx(0.02) and gap.gain_last_step == pytest.approx(0.02)


# ---------------------------------------------------------------------------------------
# efficiency and evaluation
# ---------------------------------------------------------------------------------------
def test_peak_memory_counts_what_a_call_allocates():
    def fn():
        a = torch.ones(1 << 20)  # 4 MiB
        b = torch.ones(1 << 19)  # 2 MiB, while a is alive
        del a, b
        torch.ones(1 << 18)

    assert ks.peak_memory(fn) == pytest.approx(6 * 2**20, rel=0.01)


@pytest.mark.parametrize("arch, mn", [("topk", None), ("kron", (2, 4))])
def test_encoder_pass_trains_the_encoder_only_where_selected(arch, mn):
    fn = ks.EncoderPass(arch, 16, 64, 3, mn, batch=8)
    fn()
    grad = fn.sae.W_enc.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).any()
    cols_touched = (grad != 0).any(0).sum().item()
    assert cols_touched <= 8 * 3 * (2 if arch == "kron" else 1)  # ≤ k (TopK) or 2k (KronSAE) columns per row
    assert ks.peak_memory(fn) > 0


def test_time_round_robin_calls_every_function_once_per_round():
    calls = {"a": 0, "b": 0}

    def counter(key):
        def fn():
            calls[key] += 1

        return fn

    out = ks.time_round_robin({"a": counter("a"), "b": counter("b")}, repeats=4)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert calls == {"a": 5, "b": 5}  # one warm-up + 4 rounds


def test_efficiency_table_ratios():
    eff = ks.efficiency_table([(16, 64), (16, 128)], 3, [(2, 4), (4, 4)], batch=16, repeats=1)
    kron = eff[eff.arch == "kron"]
    assert len(kron) == 4 and len(eff[eff.arch == "topk"]) == 2
    assert np.allclose(kron.analytic_ratio, [(2 + 4) / 8, 0.5] * 2)
    assert (kron.flop_ratio < 1).all() and (kron.time_ratio > 0).all() and (kron.memory_ratio > 0).all()


def test_evaluate_reports_quality_and_proxies():
    from sae_lens.registry import get_sae_class

    cls, cfg_cls = get_sae_class("kron")
    torch.manual_seed(0)
    sae = cls(cfg_cls(d_in=8, d_sae=32, k=3, heads=4, m=2, n=4))
    x = torch.randn(400, 8)
    tokens = np.random.default_rng(0).integers(0, 5, 400)
    row, latents = ks.evaluate(sae, x, tokens, n_ctx=20, splicer=None, n_top=8, min_firings=4)
    density = latents.frequency.to_numpy()
    assert density.shape == (32,) and np.nanmean(latents.token_entropy) == pytest.approx(row["token_entropy"])
    assert 0 <= row["dead_fraction"] <= 1 and row["l0"] <= 3
    assert np.isnan(row["loss_recovered"]) and 0 <= row["token_entropy"] <= np.log2(5) + 1e-9


def test_evaluate_matches_the_shared_metrics():
    from sae_lens.registry import get_sae_class

    from sae_studies.analyses import quality

    cls, cfg_cls = get_sae_class("kron")
    torch.manual_seed(1)
    sae = cls(cfg_cls(d_in=8, d_sae=32, k=3, heads=4, m=2, n=4))
    x = torch.randn(5000, 8)  # more than one evaluation batch
    row, latents = ks.evaluate(sae, x, np.zeros(5000, dtype=int), n_ctx=50, splicer=None, n_top=4, min_firings=2)
    density = latents.frequency.to_numpy()
    ref = quality.sae_reconstruction_metrics(sae, x)
    assert row["explained_variance"] == pytest.approx(ref.explained_variance, abs=1e-12)
    assert row["l0"] == pytest.approx(ref.l0) and row["dead_fraction"] == ref.dead_fraction
    assert np.allclose(density, ref.density) and row["token_entropy"] == 0.0  # one token everywhere
