"""Study 5's verdict rules (each on a table where it must agree, one where it must disagree and
one where it must be inconclusive), the paired steering tests with Holm's correction, the seed
feature rule and the pruning of dead latents from flow graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from sae_studies.analyses.intervals import holm
from sae_studies.studies import flow as sf
from sae_studies.studies import flow_claims as fc
from sae_studies.studies import flow_plots as fp


def test_verdict_persistence_is_the_share_above_the_null_quantile():
    agree = fc.verdict_persistence({1: [0.30, 0.32, 0.31], 2: [0.20, 0.22, 0.21]}, 0.99, "m")
    assert agree.outcome == "agrees" and agree.n == 3 and agree.statistic == pytest.approx(0.21)
    assert agree.previous and "median" in agree.previous
    # at the 1 % a null feature reaches: no persistence
    assert fc.verdict_persistence({1: [0.001, 0.002, 0.0015], 2: [0.0, 0.001, 0.0005]}, 0.99, "m").outcome == "disagrees"
    assert fc.verdict_persistence({1: [0.0, 0.05], 2: [0.0, 0.04]}, 0.99, "m").outcome == "inconclusive"
    assert fc.verdict_persistence({1: [0.3, 0.31, 0.32], 2: [0.0, 0.001, 0.0005]}, 0.99, "m").outcome == "partly"
    assert fc.verdict_persistence({1: [0.06, 0.07, 0.065]}, 0.95, "m").outcome == "agrees"  # 5 % expected at q = 0.95


def test_deactivation_rules():
    assert fc.verdict_deactivation_level([0.74, 0.75, 0.76], [0.64, 0.65, 0.66]).outcome == "agrees"
    assert fc.verdict_deactivation_level([0.20, 0.21, 0.22], [0.10, 0.11, 0.12]).outcome == "disagrees"
    assert fc.verdict_deactivation_level([0.3, 0.9], [0.2, 0.9]).outcome == "inconclusive"
    assert fc.verdict_top1_vs_exhaustive([0.75, 0.7, 0.72], [0.8, 0.78, 0.79]).outcome == "agrees"
    assert fc.verdict_top1_vs_exhaustive([0.3, 0.35, 0.32], [0.8, 0.8, 0.8]).outcome == "disagrees"
    assert fc.verdict_top1_vs_exhaustive([0.3, 0.8], [0.8, 0.8]).outcome == "inconclusive"


def test_top1_vs_random_over_features_and_seeds():
    rng = np.random.default_rng(0)
    assert fc.verdict_top1_vs_random(0.3 + 0.1 * rng.normal(size=50)).outcome == "agrees"
    assert fc.verdict_top1_vs_random(-0.3 + 0.1 * rng.normal(size=50)).outcome == "disagrees"
    assert fc.verdict_top1_vs_random(0.0 + 0.1 * rng.normal(size=50)).outcome == "inconclusive"
    table = pd.DataFrame(
        {"seed": [0] * 20 + [1] * 20, "diff": np.r_[0.1 + 0.01 * rng.normal(size=20), 0.12 + 0.01 * rng.normal(size=20)]}
    )
    v = fc.verdict_top1_vs_random(table)
    assert v.n == 2 and "SAE seeds" in v.ours


def _scored(gains, base_theme=0.1, n=12, direction="toward", noise=0.02, seed=0):
    """Generations of one theme: an unsteered row and one row per condition for each (prompt,
    sample); ``gains[s]`` is the true gain of condition s (single-layer, constant)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        base = 0.3 + 0.05 * rng.normal()
        common = {"theme": "limerick", "feature": 7, "sae_seed": 0, "direction": direction, "prompt": p, "sample": 0}
        rows.append({**common, "span": "none", "schedule": "none", "s": 0.0, "combined": base, "theme_score": base_theme})
        for s, gain in gains.items():
            rows.append(
                {
                    **common,
                    "span": "single",
                    "schedule": "constant",
                    "s": s,
                    "combined": base + gain + noise * rng.normal(),
                    "theme_score": 0.5,
                }
            )
    return pd.DataFrame(rows)


def test_steering_tests_pair_generations_and_apply_holm():
    tests = fc.steering_tests(_scored({1.0: 0.2, 2.0: 0.0}), "toward")
    assert len(tests) == 2 and (tests.n == 12).all()
    assert tests.set_index("s").loc[1.0, "mean"] == pytest.approx(0.2, abs=0.02)
    assert np.allclose(tests.p_holm, holm(tests.p))
    assert tests.set_index("s").loc[1.0, "significant"] and not tests.set_index("s").loc[2.0, "significant"]
    with pytest.raises(ValueError, match="direction"):
        fc.steering_tests(_scored({1.0: 0.2}), "sideways")


def test_holm_turns_a_best_of_many_into_no_finding():
    # 20 conditions with no true gain: the best raw p-value looks significant, Holm's does not
    gains = {float(s): 0.0 for s in range(1, 21)}
    tests = fc.steering_tests(_scored(gains, n=8, noise=0.05, seed=3), "toward")
    assert tests.p.min() < 0.05 and not tests.significant.any()


def test_verdict_steering_agrees_disagrees_inconclusive():
    claim, paper = "c", "p"
    assert fc.verdict_steering(fc.steering_tests(_scored({1.0: 0.2, 2.0: 0.1}), "toward"), claim, paper).outcome == "agrees"
    assert fc.verdict_steering(fc.steering_tests(_scored({1.0: -0.2, 2.0: -0.1}), "toward"), claim, paper).outcome == "disagrees"
    noisy = fc.steering_tests(_scored({1.0: 0.03}, n=4, noise=0.2), "toward")
    assert fc.verdict_steering(noisy, claim, paper).outcome == "inconclusive"
    assert fc.verdict_steering(noisy, claim, paper, judged=[]).outcome == "untested"


def test_removal_is_tested_only_where_the_theme_is_present():
    absent = _scored({-1.0: 0.2}, base_theme=0.1, direction="away")
    assert fc.steering_tests(absent, "away", present=0.5).empty
    present = _scored({-1.0: 0.2}, base_theme=0.8, direction="away")
    t = fc.steering_tests(present, "away", present=0.5)
    assert len(t) == 1 and t.base_theme.iloc[0] == pytest.approx(0.8)


def test_multilayer_rule_on_useful_shares():
    shares = lambda single, multi: pd.DataFrame({"theme": ["a", "b", "c"], "single": single, "multi": multi})  # noqa: E731
    assert fc.verdict_multilayer(shares([0.2, 0.2, 0.25], [0.6, 0.65, 0.6])).outcome == "agrees"
    assert fc.verdict_multilayer(shares([0.6, 0.65, 0.6], [0.2, 0.2, 0.25])).outcome == "disagrees"
    assert fc.verdict_multilayer(shares([0.2, 0.6, 0.4], [0.6, 0.2, 0.45])).outcome == "inconclusive"
    tests = pd.DataFrame(
        {
            "theme": "a",
            "span": ["single", "single", "multi", "multi"],
            "schedule": "constant",
            "significant": [True, False, True, True],
        }
    )
    u = fc.useful_shares(tests).set_index("theme")
    assert u.loc["a", "single"] == 0.5 and u.loc["a", "multi"] == 1.0


def test_pick_seed_features_prefers_non_token_features_from_two_seeds():
    enr = {0: np.array([[0.0, 5.0, 4.0, 3.0, 1.0]]), 1: np.array([[2.0, 0.0, 6.0, 0.5, -1.0]])}
    share = {0: np.array([0.1, 0.9, 0.2, 0.3, 0.1]), 1: np.array([0.2, 0.1, 0.95, 0.1, np.nan])}
    picked = sf.pick_seed_features(enr, share, 0, n=3, n_sae_seeds=2, max_token_share=0.5)
    # seed 0: feature 1 is a token feature (0.9) → 2, 3 first; seed 1: feature 2 is (0.95) → 0, 3
    assert picked == [(0, 2, False), (1, 0, False), (0, 3, False)]
    assert {s for s, _, _ in picked} == {0, 1}
    # too few non-token features: token features fill in, flagged
    few = sf.pick_seed_features(enr, share, 0, n=6, n_sae_seeds=2, max_token_share=0.5)
    assert len(few) == 6 and few[-1][2] and sum(t for *_, t in few) == 1  # 5 non-token features in all
    with pytest.raises(ValueError, match="at least one SAE seed"):
        sf.pick_seed_features({}, {}, 0, 3, 2, 0.5)


def test_prune_dead_removes_dead_parents_and_what_they_cut_off():
    g = nx.DiGraph()
    for nid, kind, layer, f in [("s", "resid", 2, 0), ("p", "resid", 1, 5), ("m", "mlp", 2, 3), ("pp", "resid", 0, 1)]:
        g.add_node(nid, kind=kind, layer=layer, feature=f, label="")
    g.nodes["s"]["seed"] = True
    g.add_edges_from([("p", "s"), ("m", "s"), ("pp", "p")])
    alive = {("resid", 1): np.array([True] * 5 + [False]), ("mlp", 2): np.ones(4, bool)}
    h = fp.prune_dead(g, alive)
    assert set(h) == {"s", "m"}  # p is dead; pp hung only from p
    assert set(fp.prune_dead(g, {})) == set(g)
