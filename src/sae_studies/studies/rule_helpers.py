"""Small pieces the interval-based verdict rules of studies 2-5 share.

* :func:`combine` — `verdicts.combine_outcomes`, the one rule by which every study combines its
  conditions' outcomes (each already decided by an interval, e.g. per k, per F or per theme).
* :func:`paired` — per-seed differences of two arms that share data and seeds (a paired design:
  the interval is over these differences, not over two independent means).
* :func:`interval_text` — ``"+0.012 [−0.003, +0.027] (n=3)"``, the form a findings cell shows.
* :func:`decide_condition` — the outcome of one condition from its replicates: t interval of
  the values against a threshold (two-sided level 95 % unless given).
* :func:`weakest` — the condition an "every condition" rule hinges on (its statistic, interval
  and n go into the Verdict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..analyses.intervals import decide, t_interval
from .verdicts import combine_outcomes as combine  # noqa: F401  (the one rule; re-exported for the studies)


def paired(df: pd.DataFrame, arm: str, a: str, b: str, value: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per seed (and per ``by`` group): ``value`` of arm ``a`` minus that of arm ``b`` (rows where
    column ``arm`` equals a or b), only for seeds where both arms exist. Returns the ``by``
    columns, ``seed`` and ``diff``."""
    keys = [*by, "seed"]
    missing = [c for c in [*keys, arm, value] if c not in df]
    if missing:
        raise ValueError(f"paired needs columns {missing} in the table; it has {list(df.columns)}")
    wide = df[df[arm].isin([a, b])].pivot_table(index=keys, columns=arm, values=value, aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=[*keys, "diff"])
    out = (wide[a] - wide[b]).dropna().rename("diff").reset_index()
    return out


def interval_text(mean: float, interval: tuple[float, float], n: int, fmt: str = "+.3f") -> str:
    """``"+0.012 [−0.003, +0.027] (n=3)"``: a statistic with its interval and replicates."""
    lo, hi = interval
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}] (n={n})"


def decide_condition(
    values: Sequence[float] | np.ndarray, threshold: float = 0.0, claim: str = "above", level: float = 0.95
) -> tuple[str, float, tuple[float, float], int]:
    """``(outcome, mean, interval, n)``: the t interval of the replicates against ``threshold``
    (:func:`~sae_studies.analyses.intervals.decide`); one replicate gives an infinite interval,
    hence "inconclusive"."""
    mean, interval, n = t_interval(values, level)
    return decide(interval, threshold, claim), mean, interval, n


def weakest(
    per: Mapping[str, tuple[float, tuple[float, float], int]], claim: str = "above"
) -> tuple[str, tuple[float, tuple[float, float], int]]:
    """The condition whose interval lies worst for the claim (lowest lower bound for "above",
    highest upper bound for "below"): the one an "every condition" rule hinges on, whose
    statistic, interval and n the Verdict carries. ``per`` maps condition → (mean, interval, n)."""
    if not per:
        raise ValueError("weakest needs at least one condition")
    if claim not in ("above", "below"):
        raise ValueError(f"claim must be 'above' or 'below'; got {claim!r}")
    key = (lambda kv: kv[1][1][0]) if claim == "above" else (lambda kv: -kv[1][1][1])
    return min(per.items(), key=key)


def summary_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The t interval of a mean from its summary (sd over n replicates, ddof=1); infinite for
    n < 2 or a missing sd. For tables that keep only mean, sd and n per cell."""
    from scipy import stats

    if n is None or n < 2 or not np.isfinite(sd):
        return (-np.inf, np.inf)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    return (mean - half, mean + half)


def difference_interval(
    a: tuple[float, float, int], b: tuple[float, float, int], level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """``(mean_a − mean_b, interval)`` of two independent cells given as (mean, sd, n), with the
    Welch standard error and the conservative min(n_a, n_b) − 1 degrees of freedom (cells of a
    sweep are trained on different data, so they are not paired); infinite when either n < 2."""
    from scipy import stats

    (ma, sa, na), (mb, sb, nb) = a, b
    d = float(ma - mb)
    if min(na, nb) < 2 or not (np.isfinite(sa) and np.isfinite(sb)):
        return d, (-np.inf, np.inf)
    half = float(stats.t.ppf(0.5 + level / 2, min(na, nb) - 1) * np.sqrt(sa**2 / na + sb**2 / nb))
    return d, (d - half, d + half)
