"""Study 3's verdict rules: each on a table where it must agree, one where it must disagree and
one where it must be inconclusive (intervals over seeds, paired per seed)."""

import numpy as np
import pandas as pd
import pytest

from sae_studies.studies import hierarchical_claims as hc
from sae_studies.studies.rule_helpers import combine, paired, weakest


def _gap(delta_ev, delta_cut=None):
    n = len(delta_ev) // 2
    return pd.DataFrame(
        {
            "seed": list(range(n)) * 2,
            "k": [8] * n + [32] * n,
            "L0": 8.0,
            "ΔEV": delta_ev,
            "Δ loss recovered": 0.0,
            "ΔEV vs cut": delta_cut if delta_cut is not None else [0.3] * (2 * n),
        }
    )


def test_combine_outcomes():
    assert combine({"a": "agrees", "b": "agrees"})[0] == "agrees"
    assert combine({"a": "agrees", "b": "inconclusive"})[0] == "partly"
    assert combine({"a": "disagrees", "b": "inconclusive"})[0] == "disagrees"
    assert combine({"a": "inconclusive", "b": "inconclusive"})[0] == "inconclusive"
    assert combine({})[0] == "untested"
    assert combine({"a": "partly", "b": "disagrees"})[0] == "partly"
    with pytest.raises(ValueError, match="combine"):
        combine({"a": "maybe"})


def test_paired_differences_and_weakest():
    df = pd.DataFrame({"seed": [0, 1, 0, 1, 2], "arm": ["a", "a", "b", "b", "b"], "v": [1.0, 2.0, 0.5, 1.0, 9.0]})
    d = paired(df, "arm", "a", "b", "v")
    assert d["diff"].tolist() == [0.5, 1.0]  # seed 2 has no arm a: dropped
    with pytest.raises(ValueError, match="columns"):
        paired(df, "arm", "a", "b", "missing")
    per = {"x": (0.1, (0.05, 0.15), 3), "y": (0.2, (0.0, 0.4), 3)}
    assert weakest(per, "above")[0] == "y" and weakest(per, "below")[0] == "y"
    assert weakest({"x": (0.1, (0.05, 0.5), 3), "y": (0.2, (0.0, 0.4), 3)}, "below")[0] == "x"


def test_front_rule_agrees_disagrees_inconclusive():
    agree = hc.verdict_front(_gap([0.0, 0.001, 0.002, 0.003, 0.002, 0.001]))
    assert agree.outcome == "agrees" and agree.n == 3 and agree.interval[0] > -0.01
    assert agree.previous and "partly" in agree.previous
    assert hc.verdict_front(_gap([-0.05, -0.051, -0.052, -0.05, -0.06, -0.055])).outcome == "disagrees"
    # a spread that covers −0.01: the mean alone (−0.01) would have said pass / fail by a hair
    v = hc.verdict_front(_gap([-0.04, 0.02, -0.01, -0.04, 0.02, -0.01]))
    assert v.outcome == "inconclusive" and v.interval[0] < -0.01 < v.interval[1]
    assert hc.verdict_front(_gap([-0.05, -0.051, -0.052, 0.0, 0.001, 0.002])).outcome == "partly"
    assert hc.verdict_front(_gap([np.nan] * 6)).outcome == "untested"


def test_front_rule_interval_is_the_t_interval_of_the_weakest_k():
    v = hc.verdict_front(_gap([0.0199, 0.02, 0.0201, -0.001, 0.0, 0.001]))
    half = 4.302653 * np.std([-0.001, 0.0, 0.001], ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert v.statistic == pytest.approx(0.0) and v.interval == pytest.approx((-half, half))


def test_cut_rule():
    assert hc.verdict_cut(_gap([0.0] * 6, [0.3, 0.31, 0.32] * 2)).outcome == "agrees"
    assert hc.verdict_cut(_gap([0.0] * 6, [-0.3, -0.31, -0.32] * 2)).outcome == "disagrees"
    assert hc.verdict_cut(_gap([0.0] * 6, [-0.1, 0.2, 0.3] * 2)).outcome == "inconclusive"


def _prox(h, t, k=(8,)):
    n = len(h) // len(k)
    return pd.DataFrame(
        {
            "model": [hc.HIERARCHICAL] * len(h) + ["topk"] * len(t),
            "k": [kk for kk in k for _ in range(n)] * 2,
            "seed": list(range(n)) * len(k) * 2,
            "category_auroc": h + t,
        }
    )


def test_interpretability_rule_is_paired_per_seed():
    # seeds differ a lot but the paired difference is steady: agrees only because it is paired
    agree = hc.verdict_interpretability(_prox([0.60, 0.70, 0.80], [0.59, 0.69, 0.79]))
    assert agree.outcome == "agrees" and agree.statistic == pytest.approx(0.01)
    assert hc.verdict_interpretability(_prox([0.50, 0.51, 0.52], [0.70, 0.71, 0.72])).outcome == "disagrees"
    assert hc.verdict_interpretability(_prox([0.55, 0.70, 0.60], [0.60, 0.60, 0.60])).outcome == "inconclusive"
    two_k = hc.verdict_interpretability(_prox([0.6, 0.7, 0.8, 0.5, 0.5, 0.5], [0.59, 0.69, 0.79, 0.7, 0.7, 0.7], k=(8, 32)))
    assert two_k.outcome == "partly"


def _sweep(values_by_k, tokens=(2**18, 2**19, 2**20, 2**21)):
    return pd.DataFrame([{"tokens": t, "k": k, "ΔEV": v} for k, vals in values_by_k.items() for t, v in zip(tokens, vals)])


def test_budget_rule_reads_every_k():
    closing = {8: [-0.15, -0.10, -0.05, -0.005], 32: [-0.03, -0.02, -0.01, 0.0]}
    assert hc.verdict_budget(_sweep(closing)).outcome == "agrees"
    # the smallest k closes, k = 64 widens (the SmolLM2 pattern the old rule missed)
    widening = {16: [-0.05, -0.03, -0.01, 0.01], 64: [-0.014, -0.020, -0.026, -0.032]}
    assert hc.verdict_budget(_sweep(widening)).outcome == "partly"
    assert hc.verdict_budget(_sweep({8: [-0.01, -0.03, -0.05, -0.07], 32: [0.0, -0.01, -0.02, -0.03]})).outcome == "disagrees"
    noisy = {8: [-0.05, 0.0, -0.06, -0.01], 32: [0.0, -0.02, 0.01, -0.02]}
    assert hc.verdict_budget(_sweep(noisy)).outcome == "inconclusive"
    closing_not_closed = {8: [-0.30, -0.25, -0.20, -0.15], 32: [-0.03, -0.02, -0.01, 0.0]}
    assert hc.verdict_budget(_sweep(closing_not_closed)).outcome == "partly"


def test_budget_rule_two_budgets_one_seed_cannot_tell():
    v = hc.verdict_budget(_sweep({8: [-0.15, -0.03]}, tokens=(2**18, 2**22)))
    assert v.outcome == "inconclusive" and v.n == 2


def test_budget_slopes_over_seeds():
    rows = [
        {"tokens": t, "k": 8, "seed": s, "ΔEV": -0.1 + 0.02 * i + 0.001 * s}
        for s in range(3)
        for i, t in enumerate((2**18, 2**19, 2**20))
    ]
    slopes = hc.budget_slopes(pd.DataFrame(rows))
    assert slopes.slope.iloc[0] == pytest.approx(0.02) and slopes.n.iloc[0] == 3
    assert hc.verdict_budget(pd.DataFrame(rows)).outcome == "partly"  # closing at 0.02 per doubling, still at −0.06
