"""The convergence gate: has a quantity levelled off over the last doubling of training tokens?

A verdict is read only from SAEs whose read quantity has stopped moving. Given the quantity at
every rung of a token-budget ladder (one value per seed and rung), the gate compares its mean at
the last two rungs with its spread over seeds at the last rung:

* ``change`` = mean(last rung) − mean(rung before), the movement over the last doubling;
* ``seed_spread`` = sample standard deviation (ddof = 1) over seeds at the last rung;
* converged ⇔ ``|change| ≤ seed_spread`` (the last doubling moved the mean by no more than the
  seeds disagree with each other). With one seed there is no spread: the gate cannot say the
  quantity has levelled off and reports it as not converged.

``converged_at`` is the first rung from which every later doubling passes the same test: the
budget a profile should read the quantity at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convergence:
    """What the gate read and what it concluded (every field goes into the findings table)."""

    quantity: str
    """Name of the quantity read (e.g. "live fraction stable, topk")."""
    rungs: tuple[int, int]
    """Training tokens of the last two rungs (previous, last)."""
    means: tuple[float, float]
    """Mean over seeds at those two rungs."""
    change: float
    """means[1] − means[0]."""
    seed_spread: float
    """Sample sd over seeds at the last rung (NaN with one seed)."""
    n_seeds: int
    converged: bool
    converged_at: int | None
    """First rung from which every later doubling moved the mean by at most that rung's seed sd."""

    def describe(self) -> str:
        """One line for a findings table, e.g. "0.120 → 0.131 (Δ +0.011, seed sd 0.015, n=5)"."""
        a, b = self.means
        sd = "n/a" if not np.isfinite(self.seed_spread) else f"{self.seed_spread:.3g}"
        return f"{a:.3g} → {b:.3g} at {_tokens(self.rungs[0])} → {_tokens(self.rungs[1])} (Δ {self.change:+.3g}, seed sd {sd}, n={self.n_seeds})"


def _tokens(n: int) -> str:
    for unit, size in (("M", 2**20), ("k", 2**10)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return str(n)


def _passes(prev: np.ndarray, last: np.ndarray) -> bool:
    prev, last = prev[np.isfinite(prev)], last[np.isfinite(last)]
    if last.size < 2 or prev.size < 1:
        return False
    return bool(abs(last.mean() - prev.mean()) <= last.std(ddof=1))


def gate(quantity: str, rungs: Sequence[int], values: Sequence[Sequence[float]] | np.ndarray) -> Convergence:
    """Apply the gate to ``values[i][s]``, the quantity at rung ``rungs[i]`` (tokens, strictly
    increasing) for seed ``s``. Needs at least two rungs; NaN entries (a seed that could not be
    measured) are left out of that rung's mean and spread."""
    rungs = [int(r) for r in rungs]
    table = np.asarray(values, dtype=float)
    if table.ndim != 2 or table.shape[0] != len(rungs):
        raise ValueError(f"values must be [n_rungs, n_seeds] with n_rungs = len(rungs) = {len(rungs)}; got shape {table.shape}")
    if len(rungs) < 2:
        raise ValueError(f"the convergence gate needs at least two rungs; got rungs={rungs}")
    if any(a >= b for a, b in zip(rungs, rungs[1:])):
        raise ValueError(f"rungs must be strictly increasing token counts; got {rungs}")
    prev, last = table[-2], table[-1]
    means = (float(np.nanmean(prev)), float(np.nanmean(last)))
    finite_last = last[np.isfinite(last)]
    spread = float(finite_last.std(ddof=1)) if finite_last.size >= 2 else float("nan")
    passes = [_passes(table[i], table[i + 1]) for i in range(len(rungs) - 1)]
    converged_at = None
    for i in range(len(passes)):
        if all(passes[i:]):
            converged_at = rungs[i]
            break
    return Convergence(
        quantity=quantity,
        rungs=(rungs[-2], rungs[-1]),
        means=means,
        change=means[1] - means[0],
        seed_spread=spread,
        n_seeds=int(finite_last.size),
        converged=passes[-1],
        converged_at=converged_at,
    )
