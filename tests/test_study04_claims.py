"""Study 4's verdict rules: each on a table where it must agree, one where it must disagree and
one where it must be inconclusive (paired per seed, 95 % t intervals), and the frequency
matching of the token-entropy comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sae_studies.studies import kron_claims as kc


def _two_models(kron, topk, metric="explained_variance", sizes=(512, 1024)):
    rows = []
    for F in sizes:
        rows += [{"d_sae": F, "seed": s, "model": "KronSAE", metric: v} for s, v in enumerate(kron)]
        rows += [{"d_sae": F, "seed": s, "model": "TopK", metric: v} for s, v in enumerate(topk)]
    return pd.DataFrame(rows)


def test_verdict_equal_tokens():
    agree = kc.verdict_equal_tokens(_two_models([0.895, 0.896, 0.894], [0.900, 0.901, 0.899]))
    assert agree.outcome == "agrees" and agree.n == 3 and agree.statistic == pytest.approx(-0.005)
    v = kc.verdict_equal_tokens(_two_models([0.85, 0.86, 0.855], [0.90, 0.91, 0.905]))
    assert v.outcome == "disagrees" and "F=512" in v.ours and v.previous
    # mean −0.01 exactly, seeds scattered: cannot tell
    assert kc.verdict_equal_tokens(_two_models([0.88, 0.90, 0.89], [0.90, 0.895, 0.905])).outcome == "inconclusive"


def test_verdict_equal_flops_is_paired():
    # seed-to-seed spread 0.01 but every seed's KronSAE is 0.002 ahead: an unpaired test would not see it
    topk = [0.89, 0.90, 0.91]
    agree = kc.verdict_equal_flops(_two_models([t + 0.002 + 1e-4 * i for i, t in enumerate(topk)], topk))
    assert agree.outcome == "agrees"
    assert kc.verdict_equal_flops(_two_models([t - 0.002 - 1e-4 * i for i, t in enumerate(topk)], topk)).outcome == "disagrees"
    assert kc.verdict_equal_flops(_two_models([0.90, 0.905, 0.895], [0.90, 0.901, 0.899])).outcome == "inconclusive"


def test_verdict_composition():
    def table(mand, relu, prod):
        return pd.DataFrame(
            [
                {"seed": s, "composition": c, "explained_variance": v}
                for c, vals in [("mand", mand), ("relu_product", relu), ("product", prod)]
                for s, v in enumerate(vals)
            ]
        )

    agree = kc.verdict_composition(table([0.845, 0.846, 0.844], [0.833, 0.832, 0.834], [0.829, 0.830, 0.828]))
    assert agree.outcome == "agrees" and "0.8445" in agree.paper
    assert (
        kc.verdict_composition(table([0.82, 0.821, 0.819], [0.833, 0.832, 0.834], [0.829, 0.830, 0.828])).outcome == "disagrees"
    )
    assert (
        kc.verdict_composition(table([0.831, 0.842, 0.820], [0.833, 0.832, 0.834], [0.829, 0.837, 0.826])).outcome
        == "inconclusive"
    )
    assert kc.verdict_composition(table([0.831, 0.832, 0.830], [0.833, 0.832, 0.834], [0.825, 0.824, 0.826])).outcome == "partly"


def _latents(shift_by_seed, kron_freq_shift=0.0, n=200, seeds=(0, 1, 2), sizes=(512,)):
    """Per-latent rows where entropy = 1 + 0.5·log10(frequency) + noise, plus a KronSAE shift."""
    rows = []
    rng = np.random.default_rng(0)
    for F in sizes:
        for s in seeds:
            for model in ("KronSAE", "TopK"):
                logf = rng.uniform(-4, -1, n) + (kron_freq_shift if model == "KronSAE" else 0.0)
                ent = 3 + 0.5 * logf + rng.normal(0, 0.05, n) + (shift_by_seed[s] if model == "KronSAE" else 0.0)
                rows += [
                    {"d_sae": F, "seed": s, "model": model, "frequency": 10**lf, "token_entropy": e} for lf, e in zip(logf, ent)
                ]
    return pd.DataFrame(rows)


def test_frequency_adjusted_gap_recovers_the_shift():
    lat = _latents({0: -0.2, 1: -0.2, 2: -0.2})
    gaps = kc.entropy_gaps(lat)
    assert np.allclose(gaps.adjusted, -0.2, atol=0.02)
    few = lat[(lat.model == "TopK") | (lat.index % 100 == 0)]  # KronSAE with 2 latents per seed
    assert np.isnan(kc.frequency_adjusted_gap(few[few.seed == 0]))


def test_entropy_rule_matches_frequency():
    assert kc.verdict_token_entropy(_latents({0: -0.2, 1: -0.21, 2: -0.19})).outcome == "agrees"
    assert kc.verdict_token_entropy(_latents({0: 0.2, 1: 0.21, 2: 0.19})).outcome == "disagrees"
    assert kc.verdict_token_entropy(_latents({0: -0.3, 1: 0.3, 2: 0.05})).outcome == "inconclusive"
    # KronSAE latents fire 10× less often, so their raw mean entropy is 0.5 bits lower, but at equal
    # frequency they are the same: the matched statistic is about 0, not −0.5
    same = _latents({0: 0.0, 1: 0.0, 2: 0.0}, kron_freq_shift=-1.0)
    assert (kc.entropy_gaps(same).raw < -0.4).all()
    assert abs(kc.verdict_token_entropy(same).statistic) < 0.02
    # ... and 0.2 bits *higher* at equal frequency: raw says lower (−0.3), the matched rule disagrees
    higher = _latents({0: 0.2, 1: 0.2, 2: 0.2}, kron_freq_shift=-1.0)
    assert (kc.entropy_gaps(higher).raw < -0.2).all()
    assert kc.verdict_token_entropy(higher).outcome == "disagrees"


def test_verdict_encoder_compute():
    def timing(ratios):
        return pd.DataFrame(
            [
                {"d": 768, "d_sae": F, "m": m, "n": n, "analytic_ratio": (m + n) / (m * n), "time_ratio": r}
                for F in (16384, 65536)
                for (m, n), r in zip([(2, 4), (4, 8), (1, 4)], ratios)
            ]
        )

    assert kc.verdict_encoder_compute(timing([0.8, 0.45, 1.3])).outcome == "agrees"  # m = 1 is not judged
    assert kc.verdict_encoder_compute(timing([1.2, 1.1, 1.3])).outcome == "disagrees"
    assert kc.verdict_encoder_compute(pd.DataFrame()).outcome == "untested"
