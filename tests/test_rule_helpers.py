"""The shared pieces of the interval-based verdict rules (studies.rule_helpers): known answers."""

import numpy as np
import pytest
from scipy import stats

from sae_studies.studies import rule_helpers as rh


def test_summary_interval_equals_the_t_interval_of_the_values():
    v = np.array([0.2, 0.25, 0.3, 0.28])
    from sae_studies.analyses.intervals import t_interval

    assert rh.summary_interval(v.mean(), v.std(ddof=1), len(v)) == pytest.approx(t_interval(v)[1])
    assert rh.summary_interval(0.5, 0.1, 1) == (-np.inf, np.inf)
    assert rh.summary_interval(0.5, float("nan"), 3) == (-np.inf, np.inf)


def test_difference_interval_is_welch_with_conservative_df():
    d, (lo, hi) = rh.difference_interval((1.0, 0.1, 3), (0.4, 0.2, 5))
    half = stats.t.ppf(0.975, 2) * np.sqrt(0.1**2 / 3 + 0.2**2 / 5)
    assert d == pytest.approx(0.6) and (lo, hi) == pytest.approx((0.6 - half, 0.6 + half))
    assert rh.difference_interval((1.0, 0.1, 1), (0.4, 0.2, 5))[1] == (-np.inf, np.inf)


def test_decide_condition_and_interval_text():
    outcome, mean, interval, n = rh.decide_condition([0.1, 0.11, 0.12], 0.0, "above")
    assert outcome == "agrees" and mean == pytest.approx(0.11) and n == 3
    assert rh.decide_condition([0.1], 0.0)[0] == "inconclusive"  # one replicate: no interval
    assert rh.interval_text(0.0123, (-0.001, 0.0256), 3) == "+0.012 [-0.001, +0.026] (n=3)"
