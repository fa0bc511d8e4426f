"""Intervals and decisions for verdict rules: seeds are the unit of replication.

* :func:`t_interval` — mean and two-sided t confidence interval over replicates (seeds);
  for a paired design pass the per-seed differences.
* :func:`bootstrap_interval` — percentile bootstrap of any statistic (seeded, for pooled
  per-feature data where a t interval does not fit).
* :func:`holm` — Holm's step-down correction of several p-values (a rule's conditions).
* :func:`decide` — the outcome an interval gives against a threshold: "agrees" when it lies
  wholly on the claim's side, "disagrees" when wholly on the other side, "inconclusive" when it
  covers the threshold (the data cannot tell).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, tuple[float, float], int]:
    """``(mean, (low, high), n)`` of a two-sided t interval at `level` over the finite values.
    One value gives an infinite interval (a single seed says nothing about the spread)."""
    v = _finite(values)
    if v.size == 0:
        raise ValueError("t_interval needs at least one finite value")
    mean = float(v.mean())
    if v.size == 1:
        return mean, (-np.inf, np.inf), 1
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, (mean - half, mean + half), int(v.size)


def t_pvalue(values: Sequence[float] | np.ndarray, threshold: float = 0.0, alternative: str = "greater") -> float:
    """One-sample t-test p-value of mean > threshold (`alternative` "greater", "less" or
    "two-sided"); 1.0 with fewer than two values or zero spread."""
    v = _finite(values)
    if v.size < 2:
        return 1.0
    if v.std(ddof=1) == 0:  # identical seeds: the test is degenerate; the side of the mean decides
        side = {"greater": v.mean() > threshold, "less": v.mean() < threshold, "two-sided": v.mean() != threshold}
        return 0.0 if side[alternative] else 1.0
    return float(stats.ttest_1samp(v, threshold, alternative=alternative).pvalue)


def bootstrap_interval(
    data: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, tuple[float, float], int]:
    """``(statistic(data), (low, high), n)``: a percentile bootstrap interval (seeded)."""
    v = _finite(data)
    if v.size == 0:
        raise ValueError("bootstrap_interval needs at least one finite value")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(v[rng.integers(0, v.size, v.size)]) for _ in range(n_resamples)])
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    return float(statistic(v)), (float(lo), float(hi)), int(v.size)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (same order as given): step-down, monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def decide(interval: tuple[float, float], threshold: float = 0.0, claim: str = "above") -> str:
    """The outcome of an interval against `threshold` for a claim that the quantity is "above"
    (or "below") it: agrees / disagrees when the interval lies wholly on one side, inconclusive
    when it covers the threshold."""
    if claim not in ("above", "below"):
        raise ValueError(f"claim must be 'above' or 'below'; got {claim!r}")
    lo, hi = interval
    above, below = lo > threshold, hi < threshold
    if claim == "below":
        above, below = below, above
    return "agrees" if above else "disagrees" if below else "inconclusive"
