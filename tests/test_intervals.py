"""Intervals and decisions against plain reference computations."""

import numpy as np
import pytest
from scipy import stats

from sae_studies.analyses.convergence import gate
from sae_studies.analyses.intervals import bootstrap_interval, decide, holm, t_interval, t_pvalue
from sae_studies.studies import verdicts


def test_t_interval_matches_scipy():
    v = [0.1, 0.3, 0.2, 0.25, 0.15]
    mean, (lo, hi), n = t_interval(v)
    ref = stats.t.interval(0.95, 4, loc=np.mean(v), scale=stats.sem(v))
    assert n == 5 and mean == pytest.approx(0.2) and (lo, hi) == pytest.approx(ref)
    assert t_interval([0.4])[1] == (-np.inf, np.inf)


def test_decide_has_three_answers():
    assert decide((0.01, 0.2)) == "agrees"
    assert decide((-0.3, -0.1)) == "disagrees"
    assert decide((-0.1, 0.2)) == "inconclusive"
    assert decide((-0.3, -0.1), claim="below") == "agrees"
    with pytest.raises(ValueError, match="claim"):
        decide((0, 1), claim="sideways")


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> monotone 0.09, 0.2*1 -> 0.2
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_bootstrap_covers_the_mean_and_is_seeded():
    x = np.random.default_rng(1).normal(1.0, 0.5, 200)
    stat, (lo, hi), n = bootstrap_interval(x)
    assert lo < 1.0 < hi and n == 200 and stat == pytest.approx(x.mean())
    assert bootstrap_interval(x)[1] == (lo, hi)


def test_t_pvalue_direction():
    assert t_pvalue([0.5, 0.6, 0.55, 0.52], 0.0) < 0.01
    assert t_pvalue([0.5, 0.6, 0.55, 0.52], 0.0, alternative="less") > 0.99


def test_gated_verdict_is_untested_until_converged():
    v = verdicts.Verdict("c", "p", "0.2", "agrees", "r", statistic=0.2, interval=(0.1, 0.3), n=5)
    moving = gate("q", [1, 2], [[0.0, 0.01, 0.02], [0.2, 0.21, 0.22]])
    flat = gate("q", [1, 2], [[0.2, 0.21, 0.22], [0.2, 0.22, 0.21]])
    assert v.gated(moving).outcome == "untested" and "rule alone would say agrees" in v.gated(moving).ours
    assert v.gated(flat).outcome == "agrees" and v.gated(flat).converged_at == "1 tokens"
    assert v.converged_at == "no ladder"
    collapsed = verdicts.Verdict("c", "p", "dead share 0.52 > 0.5", "untested", "r")
    assert collapsed.gated(moving).ours == "dead share 0.52 > 0.5"  # its own reason, not "the rule alone would say untested"
    assert collapsed.gated(moving).converged_at == "not converged"
    with pytest.raises(ValueError, match="interval"):
        verdicts.Verdict("c", "p", "o", "agrees", "r", interval=(0.3, 0.1))
