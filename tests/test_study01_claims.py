"""Study 1: null baselines, within-seed duplication, and every verdict rule on a table where it
must agree, one where it must disagree and one where it must say inconclusive."""

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.analyses import seed_stability as ss
from sae_studies.studies import stability_claims as claims
from sae_studies.studies import stability_nulls as nulls_
from sae_studies.studies import stability_subspace as sub_
from sae_studies.studies.verdicts import both_outcomes, combine_outcomes


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
    assert ss.duplicate_share(w, 0.9) == pytest.approx(2 / 40)  # the one copied pair, out of 40
    assert ss.duplicate_share(w, 0.9) == float((best >= 0.9).double().mean())


# --------------------------------------------------------------------------------------------
# nulls
# --------------------------------------------------------------------------------------------


def _activations_with_massive(n=4000, d=32, dims=(3, 17), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    for j in dims:
        x[:, j] = 60 + 40 * torch.randn(n, generator=g, dtype=torch.float64)  # massive: large mean and variance
    return x


def test_massive_dimensions_are_named():
    x = _activations_with_massive()
    assert list(nulls_.massive_dimensions(x)) == [3, 17]
    assert len(nulls_.massive_dimensions(torch.randn(2000, 32, generator=torch.Generator().manual_seed(1)))) == 0
    table = nulls_.massive_table({1: x})
    assert table.massive_dims.iloc[0] == "3 17" and table.variance_share.iloc[0] > 0.9
    with pytest.raises(ValueError, match="factor"):
        nulls_.massive_dimensions(x, factor=0.5)


def test_chosen_null_does_not_inherit_massive_dimensions():
    """On activations with massive dimensions the covariance null reads random rows as matched;
    the chosen (clipped) null does not, and its per-layer table carries the 99th percentile."""
    x = _activations_with_massive()
    cov = torch.cov(x.T)
    assert nulls_.CHOSEN_NULL == "clipped"
    mb_cov, _, _ = nulls_.null_score_samples("covariance", 3, 64, cov, 0.7, torch.Generator().manual_seed(0))
    mb_clip, _, _ = nulls_.null_score_samples("clipped", 3, 64, cov, 0.7, torch.Generator().manual_seed(0))
    assert mb_cov.mean() > 0.9 and mb_clip.mean() < 0.6
    table, samples = nulls_.null_score_table([(1, 64), (2, 64)], {1: cov, 2: torch.eye(32)}, 3, 0.7, massive={1: [3, 17]})
    assert list(table.layer) == [1, 2] and table.massive_dims.iloc[0] == "3 17"
    assert (table.mean_best_p99 >= table.mean_best_p95).all() and (table.mean_best_p95 >= table.mean_best_mean).all()
    assert samples[(1, 64)].shape == (3 * 64,)
    clipped = torch.linalg.eigvalsh(nulls_.null_covariance(cov))
    assert clipped.max() <= ss.OUTLIER_FACTOR * clipped.median() + 1e-9
    with pytest.raises(ValueError, match="covs has no covariance for layer 5"):
        nulls_.null_score_table([(5, 8)], {1: cov}, 2, 0.7)


# --------------------------------------------------------------------------------------------
# outcome combination
# --------------------------------------------------------------------------------------------


def test_outcomes_combine():
    assert both_outcomes("agrees", "agrees") == "agrees"
    assert both_outcomes("agrees", "disagrees") == "partly"
    assert both_outcomes("agrees", "inconclusive") == "inconclusive"
    assert both_outcomes("disagrees", "disagrees") == "disagrees"
    assert both_outcomes("inconclusive", "disagrees") == "disagrees"  # the conjunction fails whatever the other does
    assert combine_outcomes({"a": "agrees", "b": "agrees"})[0] == "agrees"
    assert combine_outcomes({"a": "agrees", "b": "disagrees"})[0] == "partly"
    # none agrees and one disagrees: the claim is contradicted (one rule for every study)
    assert combine_outcomes({"a": "inconclusive", "b": "disagrees"})[0] == "disagrees"
    assert combine_outcomes({"a": "inconclusive", "b": "inconclusive"})[0] == "inconclusive"
    assert combine_outcomes({"a": "disagrees", "b": "untested"})[0] == "disagrees"
    assert combine_outcomes({})[0] == "untested"


# --------------------------------------------------------------------------------------------
# claim 1: separation
# --------------------------------------------------------------------------------------------


def test_bimodality_coefficient_known_values():
    rng = np.random.default_rng(0)
    assert claims.bimodality_coefficient(rng.normal(size=20000)) == pytest.approx(1 / 3, abs=0.02)
    assert claims.bimodality_coefficient(rng.uniform(size=20000)) == pytest.approx(5 / 9, abs=0.02)
    two = np.concatenate([rng.normal(0.2, 0.03, 8000), rng.normal(0.9, 0.03, 2000)])
    assert claims.bimodality_coefficient(two) > 0.8
    assert np.isnan(claims.bimodality_coefficient([1.0, 2.0]))


def _features(mode: str, n_seeds=5, n=400, layers=(1, 3), seed=0):
    """Per-feature mean best cosines: 'separated' (a null-like bulk and a stable mode near 1),
    'null' (all at the null level), 'noisy' (separated in some seeds, null-like in others)."""
    rng = np.random.default_rng(seed)
    frames = []
    for layer in layers:
        for s in range(n_seeds):
            bulk = rng.normal(0.3, 0.03, n)
            sep = mode == "separated" or (mode == "noisy" and s % 2 == 0)
            if sep:
                bulk[: n // 4] = rng.normal(0.92, 0.02, n // 4)
            frames.append(
                pd.DataFrame(
                    {"architecture": "topk", "layer": layer, "expansion": 8, "seed": s, "mean_best": bulk, "class": "unstable"}
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_separation_rule_agrees_disagrees_inconclusive():
    null_p99 = pd.Series({(1, 400): 0.37, (3, 400): 0.37})
    v = claims.verdict_separation(claims.separation_table(_features("separated"), null_p99), 5)
    assert v.outcome == "agrees" and v.n == 5 and v.interval[0] > 0.01 and "previous" not in v.previous[:0]
    assert claims.verdict_separation(claims.separation_table(_features("null"), null_p99), 5).outcome == "disagrees"
    noisy = claims.separation_table(_features("noisy", n_seeds=2), null_p99)
    assert claims.verdict_separation(noisy, 5, min_seeds=2).outcome == "inconclusive"
    assert claims.verdict_separation(noisy, 2).outcome == "untested"  # fewer than MIN_SEEDS compared seeds


def test_separation_is_read_per_layer():
    """Layer 1 separated, layer 3 at its null: partly, not a pooled pass."""
    f = pd.concat([_features("separated", layers=(1,)), _features("null", layers=(3,))], ignore_index=True)
    sep = claims.separation_table(f, pd.Series({(1, 400): 0.37, (3, 400): 0.37}))
    v = claims.verdict_separation(sep, 5)
    assert v.outcome == "partly" and "topk L3" in v.ours


# --------------------------------------------------------------------------------------------
# claim 2: total signal against size-matched random ablations
# --------------------------------------------------------------------------------------------


def _ablations(class_effect, random_effect, seeds=5, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        eff = class_effect + noise * rng.normal()
        rows.append(
            {"architecture": "topk", "layer": 1, "seed": s, "set": "class", "draw": -1, "n": 10, "d_fvu": eff, "d_ce": eff}
        )
        for draw in range(20):
            r = random_effect * (1 + 0.05 * rng.normal())
            rows.append(
                {"architecture": "topk", "layer": 1, "seed": s, "set": "random", "draw": draw, "n": 10, "d_fvu": r, "d_ce": r}
            )
    return pd.DataFrame(rows)


def test_signal_rule_agrees_disagrees_inconclusive():
    assert claims.verdict_signal(claims.signal_table(_ablations(0.3, 0.05))).outcome == "agrees"
    assert claims.verdict_signal(claims.signal_table(_ablations(0.02, 0.05))).outcome == "disagrees"
    noisy = claims.signal_table(_ablations(0.06, 0.05, seeds=3, noise=0.2))
    assert claims.verdict_signal(noisy).outcome == "inconclusive"


class _LinearSAE:
    """A tiny SAE with the interface the ablations use (encode, decode, cfg.d_sae)."""

    def __init__(self, w_dec):
        self.W_dec = w_dec
        self.cfg = type("Cfg", (), {"d_sae": w_dec.shape[0]})()

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T)

    def decode(self, z):
        return z @ self.W_dec


def test_random_ablation_rows_size_matched():
    """The class holding the data's high-variance directions carries more FVU than random live
    sets of its size."""
    g = torch.Generator().manual_seed(0)
    d = 16
    scale = torch.ones(d)
    scale[:2] = 10.0
    x = torch.randn(3000, d, generator=g) * scale
    w = torch.cat([torch.eye(d), -torch.eye(d)])  # ReLU pairs reconstruct x exactly
    classes = np.array(["unstable"] * 2 * d, dtype=object)
    classes[[0, 1, d, d + 1]] = "stable"
    cell = type("Cell", (), {"as_dict": lambda self: {"layer": 1, "architecture": "topk", "expansion": 2}})()
    rows = pd.DataFrame(claims.random_ablation_rows(cell, 0, _LinearSAE(w), x, classes, None, 8, g))
    assert len(rows) == 9 and (rows.n == 4).all() and rows.d_ce.isna().all()
    table = claims.signal_table(rows)
    assert table.fvu_class.iloc[0] > 0.9 and table.fvu_excess.iloc[0] > 0.5


# --------------------------------------------------------------------------------------------
# claim 3: two rows, paired over seeds
# --------------------------------------------------------------------------------------------


def _surface(unstable_density, unstable_single, seeds=5, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    idx = pd.MultiIndex.from_product([["topk"], range(seeds), ["stable", "unstable"]], names=["architecture", "seed", "class"])
    vals = []
    for _, _, c in idx:
        if c == "stable":
            vals.append((0.03, 0.5))
        else:
            e = noise * rng.normal()
            vals.append((unstable_density * 10**e, unstable_single + e))
    return pd.DataFrame(vals, index=idx, columns=["density_median", "single_token"]).assign(entropy_median=1.0)


def test_frequency_and_single_token_rows():
    assert claims.verdict_frequency(_surface(0.001, 0.9)).outcome == "agrees"
    assert claims.verdict_single_token(_surface(0.001, 0.9)).outcome == "agrees"
    assert claims.verdict_frequency(_surface(0.3, 0.2)).outcome == "disagrees"
    assert claims.verdict_single_token(_surface(0.3, 0.2)).outcome == "disagrees"
    # the two rows are read separately: rarer but not more single-token
    assert claims.verdict_frequency(_surface(0.001, 0.2)).outcome == "agrees"
    assert claims.verdict_single_token(_surface(0.001, 0.2)).outcome == "disagrees"
    noisy = _surface(0.03, 0.5, seeds=3, noise=0.5)
    assert claims.verdict_frequency(noisy).outcome == "inconclusive"
    assert claims.verdict_single_token(noisy).outcome == "inconclusive"


# --------------------------------------------------------------------------------------------
# claim 4: covariance-spectrum controls and the planted positive control
# --------------------------------------------------------------------------------------------


def _overlaps(unstable, control, pairs=4, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(pairs):
        rows.append(
            {"group": "unstable", "control": "across seeds", "draw": 0, "pair": p, "overlap": unstable + noise * rng.normal()}
        )
        rows += [
            {"group": "covariance", "control": "reference", "draw": i, "pair": p, "overlap": control + 0.01 * i} for i in range(8)
        ]
    return pd.DataFrame(rows)


def _ranks(share, seeds=4, d=40):
    return pd.DataFrame({"group": "unstable", "eff_rank": d * share + np.arange(seeds) % 2, "d": d, "seed": range(seeds)})


def test_subspace_rule_agrees_disagrees_inconclusive():
    assert claims.verdict_subspace(_overlaps(0.9, 0.4), _ranks(0.25)).outcome == "agrees"
    assert claims.verdict_subspace(_overlaps(0.3, 0.4), _ranks(0.9)).outcome == "disagrees"
    assert claims.verdict_subspace(_overlaps(0.9, 0.4), _ranks(0.9)).outcome == "partly"
    assert claims.verdict_subspace(_overlaps(0.45, 0.4, pairs=2, noise=0.3), _ranks(0.25)).outcome == "inconclusive"
    # a rule whose positive control fails cannot say anything
    v = claims.verdict_subspace(_overlaps(0.3, 0.4), _ranks(0.9), positive_control="disagrees")
    assert v.outcome == "inconclusive" and "no power" in v.ours


def test_claim4_reads_the_not_stable_set():
    cls = np.array(["stable", "partial", "unstable", "dead"], dtype=object)
    assert list(claims.claim4_classes(cls)) == ["stable", "unstable", "unstable", "dead"]


def test_positive_control_planted_subspace_agrees():
    """Planted mechanism: unstable rows drawn afresh in every seed inside one shared 12-dim
    subspace (of d = 48), stable rows shared. The revised rule finds it; its dimension is the
    planted one, not capped at the (smaller) stable class."""
    g = torch.Generator().manual_seed(0)
    d = 48
    cov = _cov(d=d, top=3) + torch.eye(d, dtype=torch.float64)
    v = claims.planted_control(cov, n_unstable=200, n_stable=8, rank=12, cap=d // 2, generator=g, n_draws=16, n_seeds=4)
    assert v.outcome == "agrees", v.ours
    decs, cls = sub_.planted_decoders(cov, 200, 8, 12, 2, g)
    assert claims.comparison_dimension(decs[0], decs[1], cls[0], cls[1], d // 2) > 8  # above the stable class's size


def test_positive_control_fails_without_a_planted_subspace():
    """Unstable rows drawn from the covariance itself (no shared subspace): the rule does not agree."""
    g = torch.Generator().manual_seed(1)
    d = 48
    cov = _cov(d=d, top=3) + torch.eye(d, dtype=torch.float64)
    decs, ranks_, ovs = [], [], []
    cls = np.array(["stable"] * 8 + ["unstable"] * 200, dtype=object)
    for _ in range(4):
        decs.append(torch.cat([torch.eye(d, dtype=torch.float64)[:8], sub_._covariance_draws(200, cov, g)]))
    for s in range(3):
        dim = claims.comparison_dimension(decs[s], decs[s + 1], cls, cls, d // 2)
        ovs.append(claims.subspace_controls(decs[s], decs[s + 1], cls, cls, dim, cov, g, 16).assign(pair=s))
        ranks_.append(claims.low_rank_rows(decs[s], cls, g, cov=cov))
    assert claims.verdict_subspace(pd.concat(ovs), pd.concat(ranks_)).outcome != "agrees"


def test_subspace_controls_on_planted_geometry():
    """Unstable latents planted in a shared 4-dim subspace: their overlap across seeds beats the
    covariance-spectrum control of the same dimension."""
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
    cov = out[out.group == "covariance"].overlap
    assert un > 0.99 and un > cov.max()
    ranks = claims.low_rank_rows(decs[0], classes[0], g, cov=torch.eye(d, dtype=torch.float64))
    r = ranks.set_index("group").loc["unstable"]
    assert r.eff_rank <= 4 and r.d == d and r.eff_rank_covariance > 2 * r.eff_rank


# --------------------------------------------------------------------------------------------
# claim 5 and the anchors
# --------------------------------------------------------------------------------------------


def _match(pooled, single, pairs=3):
    rows = []
    for p in range(pairs):
        rows.append({"kind": "pooled + refit", "tau": 0.7, "pair": f"{p}-x", "match": pooled[p % len(pooled)]})
        rows += [{"kind": "single seed", "tau": 0.7, "pair": f"{p}-x", "match": single + 0.01 * i} for i in range(4)]
    return pd.DataFrame(rows)


def _quality(pooled_ev):
    return pd.DataFrame(
        {
            "kind": ["pooled + refit"] * 3 + ["single seed + refit"] * 3,
            "explained_variance": [pooled_ev, pooled_ev + 0.001, pooled_ev - 0.001, 0.905, 0.91, 0.9],
        }
    )


def test_pooling_rule_agrees_disagrees_inconclusive():
    assert claims.verdict_pooling(_match([0.4, 0.41], 0.2), _quality(0.905), 0.7).outcome == "agrees"
    assert claims.verdict_pooling(_match([0.4, 0.41], 0.2), _quality(0.80), 0.7).outcome == "partly"
    assert claims.verdict_pooling(_match([0.1, 0.11], 0.2), _quality(0.80), 0.7).outcome == "disagrees"
    one_pair = claims.verdict_pooling(_match([0.4], 0.2, pairs=1), _quality(0.905), 0.7)
    assert one_pair.outcome == "inconclusive" and one_pair.n == 1  # n = 1 replicate pair: no interval


def _per_seed_sizes(small, large, seeds=5, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for layer in (1, 3):
            rows.append(
                {"architecture": "topk", "layer": layer, "seed": s, "expansion": 4, "stable": small + noise * rng.normal()}
            )
            rows.append(
                {"architecture": "topk", "layer": layer, "seed": s, "expansion": 16, "stable": large + noise * rng.normal()}
            )
    return pd.DataFrame(rows)


def test_size_trend_rule_uses_seeds_as_the_unit():
    assert claims.verdict_size_trend(_per_seed_sizes(0.5, 0.2)).outcome == "agrees"
    assert claims.verdict_size_trend(_per_seed_sizes(0.03, 0.08)).outcome == "disagrees"
    v = claims.verdict_size_trend(_per_seed_sizes(0.05, 0.05, seeds=3, noise=0.05))
    assert v.outcome == "inconclusive" and v.n == 3  # 3 seeds, not 3 seeds × 2 layers


def test_relu_rule_untested_when_the_standard_sae_collapsed():
    rows = []
    for s in range(5):
        for layer in (1, 3):
            rows += [
                {"architecture": "standard", "layer": layer, "seed": s, "expansion": 8, "stable": 0.9 + 0.01 * s},
                {"architecture": "topk", "layer": layer, "seed": s, "expansion": 8, "stable": 0.1 + 0.01 * layer},
            ]
    ps = pd.DataFrame(rows)
    dup_ok = pd.DataFrame({"architecture": "standard", "expansion": 8, "duplicate_share": [0.01, 0.02, 0.01]})
    assert claims.verdict_relu_vs_topk(ps, 8, dup_ok).outcome == "agrees"
    collapsed = claims.verdict_relu_vs_topk(ps, 8, dup_ok.assign(duplicate_share=0.995))
    assert collapsed.outcome == "untested" and "collapsed" in collapsed.ours
    swapped = ps.assign(architecture=ps.architecture.map({"standard": "topk", "topk": "standard"}))
    assert claims.verdict_relu_vs_topk(swapped, 8, dup_ok).outcome == "disagrees"
    noisy = ps.assign(stable=np.where(ps.architecture == "standard", 0.1, 0.1) + np.random.default_rng(0).normal(0, 0.1, len(ps)))
    assert claims.verdict_relu_vs_topk(noisy[noisy.seed < 3], 8, dup_ok).outcome == "inconclusive"


def test_every_revised_rule_names_its_previous_rule():
    f = claims.separation_table(_features("separated"), pd.Series({(1, 400): 0.37, (3, 400): 0.37}))
    for v in (
        claims.verdict_separation(f, 5),
        claims.verdict_signal(claims.signal_table(_ablations(0.3, 0.05))),
        claims.verdict_frequency(_surface(0.001, 0.9)),
        claims.verdict_single_token(_surface(0.001, 0.9)),
        claims.verdict_subspace(_overlaps(0.9, 0.4), _ranks(0.25)),
        claims.verdict_pooling(_match([0.4, 0.41], 0.2), _quality(0.905), 0.7),
        claims.verdict_size_trend(_per_seed_sizes(0.5, 0.2)),
    ):
        assert v.previous.startswith("before:") and v.statistic is not None and v.n
