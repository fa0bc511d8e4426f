"""Study 1: null baselines, within-seed duplication, and every verdict rule on a table where it
must agree and one where it must disagree."""

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.analyses import seed_stability as ss
from sae_studies.studies import stability_claims as claims


def _cov(d=24, top=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.ones(d, dtype=torch.float64)
    lam[:top] = 100.0  # a few massive directions, as in real LMs
    return (q * lam) @ q.T


def test_null_dictionaries_have_the_shape_and_the_named_geometry():
    cov = _cov()
    g = torch.Generator().manual_seed(1)
    for kind in ss.NULL_KINDS:
        decs = ss.null_decoders(kind, 3, 50, cov, g)
        assert len(decs) == 3 and decs[0].shape == (50, 24)
    span = ss.data_subspace(cov, 0.9)
    assert span.shape[0] == 3  # the three massive directions hold 300 / 321 ≥ 90 % of the variance, two only 62 %
    iso = ss.null_decoders("isotropic_span", 1, 200, cov, g, energy=0.9)[0].double()
    inside = (iso @ span.T).pow(2).sum(1) / iso.pow(2).sum(1)
    assert torch.allclose(inside, torch.ones_like(inside), atol=1e-9)

    # rows drawn from an anisotropic covariance are mutually similar; clipping the outliers removes that
    def mean_abs_cos(w):
        u = torch.nn.functional.normalize(w.double(), dim=1)
        c = (u @ u.T).abs()
        return float((c.sum() - c.diagonal().sum()) / (len(u) * (len(u) - 1)))

    assert mean_abs_cos(ss.null_decoders("covariance", 1, 200, cov, g)[0]) > 1.5 * mean_abs_cos(
        ss.null_decoders("clipped", 1, 200, cov, g)[0]
    )
    with pytest.raises(ValueError, match="kind must be one of"):
        ss.null_decoders("uniform", 2, 5, cov)


def test_within_seed_best_finds_duplicates():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 64, generator=g)
    w[1] = 3 * w[0]
    best = ss.within_seed_best(w)
    assert best[0] == pytest.approx(1.0, abs=1e-5) and best[1] == pytest.approx(1.0, abs=1e-5)
    assert best[2:].max() < 0.7
    with pytest.raises(ValueError, match="at least 2"):
        ss.within_seed_best(w[:1])


def test_separation_rule():
    shares = pd.DataFrame({"stable": [0.4, 0.5], "partial": [0.1, 0.2], "unstable": [0.5, 0.3]}, index=["topk", "batchtopk"])
    assert claims.verdict_separation(shares, pd.Series({"topk": 0.2, "batchtopk": 0.1}), 5).outcome == "agrees"
    bad = shares.assign(partial=[0.6, 0.7])
    assert claims.verdict_separation(bad, pd.Series({"topk": 0.2, "batchtopk": 0.1}), 5).outcome == "disagrees"
    assert claims.verdict_separation(shares, pd.Series({"topk": -0.1, "batchtopk": 0.1}), 5).outcome == "partly"
    assert claims.verdict_separation(shares, pd.Series({"topk": 0.2, "batchtopk": 0.1}), 2).outcome == "untested"


def _asym(stable_effect, unstable_effect):
    rows = []
    for arch in ("topk", "batchtopk"):
        for seed in (0, 1, 2):
            rows += [
                {
                    "layer": 1,
                    "architecture": arch,
                    "seed": seed,
                    "class": "stable",
                    "n": 10,
                    "d_fvu": 10 * stable_effect,
                    "d_ce": 10 * stable_effect,
                },
                {
                    "layer": 1,
                    "architecture": arch,
                    "seed": seed,
                    "class": "unstable",
                    "n": 20,
                    "d_fvu": 20 * unstable_effect,
                    "d_ce": 20 * unstable_effect,
                },
            ]
    return pd.DataFrame(rows)


def test_signal_rule_reads_the_per_feature_ratio():
    agree = claims.per_feature_ratio(_asym(0.03, 0.01))
    assert agree.fvu.iloc[0] == pytest.approx(3.0)
    assert claims.verdict_signal(agree).outcome == "agrees"
    assert claims.verdict_signal(claims.per_feature_ratio(_asym(0.01, 0.01))).outcome == "disagrees"


def _surface(unstable_density, unstable_single):
    idx = pd.MultiIndex.from_product([["topk"], [0, 1, 2], ["stable", "unstable"]], names=["architecture", "seed", "class"])
    vals = []
    for _, _, c in idx:
        vals.append((0.03, 0.5) if c == "stable" else (unstable_density, unstable_single))
    return pd.DataFrame(vals, index=idx, columns=["density_median", "single_token"]).assign(entropy_median=1.0)


def test_surface_rule():
    assert claims.verdict_surface(_surface(0.001, 0.9)).outcome == "agrees"
    assert claims.verdict_surface(_surface(0.05, 0.2)).outcome == "disagrees"


def _overlaps(unstable, random_subset):
    rows = [{"group": "unstable", "control": "across seeds", "draw": 0, "overlap": unstable}]
    rows += [{"group": "unstable", "control": "random subset", "draw": i, "overlap": random_subset + 0.01 * i} for i in range(5)]
    rows += [{"group": "unstable", "control": "data PCA", "draw": 0, "overlap": 0.5}]
    rows += [{"group": "covariance", "control": "reference", "draw": i, "overlap": 0.3} for i in range(5)]
    return pd.DataFrame(rows)


def test_subspace_rule_needs_size_matched_controls_and_low_rank():
    low = pd.DataFrame({"group": ["unstable"], "eff_rank": [5.0], "eff_rank_random_subset": [20.0]})
    high = low.assign(eff_rank=[19.0])
    assert claims.verdict_subspace(_overlaps(0.9, 0.5), low).outcome == "agrees"
    assert claims.verdict_subspace(_overlaps(0.52, 0.5), high).outcome == "disagrees"
    assert claims.verdict_subspace(_overlaps(0.9, 0.5), high).outcome == "partly"


def test_subspace_controls_on_planted_geometry():
    """Unstable latents planted in a shared 4-dim subspace: their overlap across seeds beats
    random subsets of the same size; the covariance reference is drawn."""
    g = torch.Generator().manual_seed(0)
    d, n = 32, 200
    basis = torch.linalg.qr(torch.randn(d, 4, generator=g, dtype=torch.float64))[0].T
    decs, classes = [], []
    for _ in range(2):
        w = torch.randn(n, d, generator=g, dtype=torch.float64)
        w[:40] = torch.randn(40, 4, generator=g, dtype=torch.float64) @ basis
        decs.append(w)
        classes.append(np.array(["unstable"] * 40 + ["stable"] * 160, dtype=object))
    dim = claims.class_dimension(decs[0], decs[1], classes[0], classes[1], "unstable", cap=16)
    assert dim == 4  # the planted subspace's dimension, not the cap
    assert claims.class_dimension(decs[0], decs[1], classes[0], classes[1], "unstable", cap=2) == 2
    assert claims.class_dimension(decs[0], decs[1], classes[0], classes[1], "partial", cap=16) == 0
    out = claims.subspace_controls(decs[0], decs[1], classes[0], classes[1], dim, torch.eye(d, dtype=torch.float64), g, 8)
    un = out[(out.group == "unstable") & (out.control == "across seeds")].overlap.iloc[0]
    rnd = out[(out.group == "unstable") & (out.control == "random subset")].overlap
    assert un > 0.99 and un > rnd.max()
    ranks = claims.low_rank_rows(decs[0], classes[0], g)
    assert ranks.set_index("group").loc["unstable", "eff_rank"] <= 4


def test_pooling_rule():
    match = pd.DataFrame({"kind": ["pooled + refit", "single seed", "single seed"], "tau": 0.7, "match": [0.4, 0.2, 0.22]})
    q = pd.DataFrame(
        {
            "kind": ["pooled + refit", "pooled + refit", "single seed + refit", "single seed + refit"],
            "explained_variance": [0.90, 0.91, 0.905, 0.91],
        }
    )
    assert claims.verdict_pooling(match, q, 0.7).outcome == "agrees"
    assert claims.verdict_pooling(match, q.assign(explained_variance=[0.80, 0.8, 0.9, 0.9]), 0.7).outcome == "partly"
    worse = match.assign(match=[0.1, 0.2, 0.22])
    assert claims.verdict_pooling(worse, q.assign(explained_variance=[0.80, 0.8, 0.9, 0.9]), 0.7).outcome == "disagrees"


def test_prior_work_anchors():
    per_seed = pd.DataFrame(
        {"architecture": "topk", "expansion": [4, 4, 4, 16, 16, 16], "stable": [0.5, 0.52, 0.51, 0.2, 0.22, 0.21]}
    )
    assert claims.verdict_size_trend(per_seed).outcome == "agrees"
    assert claims.verdict_size_trend(per_seed.assign(stable=per_seed.stable[::-1].to_numpy())).outcome == "disagrees"
    ps = pd.DataFrame(
        {"architecture": ["standard"] * 3 + ["topk"] * 3, "expansion": 8, "stable": [0.9, 0.91, 0.92, 0.1, 0.12, 0.11]}
    )
    dup_ok = pd.DataFrame({"architecture": "standard", "expansion": 8, "duplicate_share": [0.01, 0.02, 0.01]})
    assert claims.verdict_relu_vs_topk(ps, 8, dup_ok).outcome == "agrees"
    assert claims.verdict_relu_vs_topk(ps, 8, dup_ok.assign(duplicate_share=0.5)).outcome == "partly"
    assert claims.verdict_relu_vs_topk(ps.assign(stable=[0.1, 0.1, 0.1, 0.5, 0.5, 0.5]), 8, dup_ok).outcome == "disagrees"


def test_null_excess_compares_within_a_layer():
    per_seed = pd.DataFrame({"architecture": "topk", "expansion": 8, "layer": [1, 1, 3, 3], "stable": [0.1, 0.1, 0.3, 0.3]})
    nulls = pd.DataFrame(
        {
            "architecture": "topk",
            "expansion": 8,
            "layer": [1, 1, 3, 3],
            "null": ["a", "b"] * 2,
            "fraction_stable": [0.0, 0.05, 0.2, 0.25],
        }
    )
    assert claims.null_excess(per_seed, nulls, 8)["topk"] == pytest.approx(((0.1 - 0.05) + (0.3 - 0.25)) / 2)
