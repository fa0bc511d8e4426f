"""Study 1's nulls: one principled null per quantity, chosen before the SAE numbers are read.

**The choice (fixed before reading any trained SAE's numbers; the same on every model).**

* Per-feature stability (fraction stable, mean best cosine, pair share): the **clipped** null
  (:func:`~sae_studies.analyses.seed_stability.null_decoders` ``"clipped"``): dictionaries of the
  cell's shape whose rows are drawn from the activation covariance with every eigenvalue above
  ``OUTLIER_FACTOR`` × the median clipped to that level. It keeps the data's shape (a trained
  dictionary lives in it too) but does not inherit the few *massive-activation dimensions* of real
  LMs (:func:`massive_dimensions`): with them, every row of the plain covariance null points along
  the same few axes, random rows look "matched" across seeds (SmolLM2: a covariance null of 0.56
  fraction stable, against 0.000 for the clipped null) and any trained dictionary reads as "below
  chance". On a model without massive dimensions (the embedded one) the clipped and the plain
  covariance null coincide up to the few directions above 10× the median.
* Cross-seed subspace overlap (claim 4): subspaces spanned by as many draws from the same clipped
  covariance (see :mod:`.stability_claims`), for the same reason.

The null is drawn **per layer** (each layer has its own covariance) and read against that layer's
curve only; :func:`null_score_table` is the per-layer table the notebook writes to
``01_nulls.csv``, and :func:`null_score_samples` the per-feature null scores whose 99th percentile
claim 1 reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import seed_stability
from ..checks import check_choice, check_matrix, check_positive_int, check_tau

#: The null of every per-feature stability quantity (see the module docstring for why).
CHOSEN_NULL = "clipped"
#: A dimension is massive when its mean |x| or its variance exceeds this × the median over dimensions.
MASSIVE_FACTOR = 10.0


def massive_dimensions(x: torch.Tensor, factor: float = MASSIVE_FACTOR) -> np.ndarray:
    """Indices (ascending) of the massive-activation dimensions of activations ``x`` ``[n, d]``:
    those whose mean |x_j| or whose variance exceeds ``factor`` × the median over the d dimensions
    (an outlier by orders of magnitude, as the massive dimensions of real LMs are; Sun et al. 2024).
    Such dimensions make random directions drawn from the covariance nearly parallel."""
    x = check_matrix("x", x)
    if not (isinstance(factor, (int, float)) and factor > 1):
        raise ValueError(f"factor must be a number > 1; got {factor!r}")
    x64 = x.detach().double()
    mean_abs = x64.abs().mean(0)
    var = x64.var(0) if x64.shape[0] > 1 else torch.zeros_like(mean_abs)
    out = (mean_abs > factor * mean_abs.median()) | (var > factor * var.median())
    return np.flatnonzero(out.cpu().numpy())


def massive_table(xs: dict[int, torch.Tensor], factor: float = MASSIVE_FACTOR) -> pd.DataFrame:
    """Per layer: the massive dimensions (:func:`massive_dimensions`), their share of the total
    variance and their largest mean |x| relative to the median dimension's."""
    rows = []
    for layer, x in xs.items():
        dims = massive_dimensions(x, factor)
        x64 = x.detach().double()
        var, mean_abs = x64.var(0), x64.abs().mean(0)
        rows.append(
            {
                "layer": layer,
                "massive_dims": " ".join(map(str, dims)),
                "n_massive": len(dims),
                "variance_share": float(var[dims].sum() / var.sum()) if len(dims) else 0.0,
                "max_mean_abs_ratio": float(mean_abs.max() / mean_abs.median()),
            }
        )
    return pd.DataFrame(rows)


def null_score_samples(
    kind: str, n_seeds: int, n_features: int, cov: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-feature scores of ``n_seeds`` null dictionaries of ``kind`` (see
    :func:`~sae_studies.analyses.seed_stability.null_decoders`): ``(mean_best [S·F], fraction
    [S·F], pair_share)`` at ``tau``; the distribution a trained cell's scores are read against."""
    check_choice("kind", kind, seed_stability.NULL_KINDS)
    check_positive_int("n_features", n_features)
    tau = check_tau(tau)
    decs = seed_stability.null_decoders(kind, n_seeds, n_features, cov, generator)
    sc = seed_stability.stability_scores(decs, tau)
    pair = seed_stability.pair_match_fraction(decs[0], decs[1], tau)
    return sc.mean_best.double().flatten().numpy(), sc.fraction.double().flatten().numpy(), pair


def null_score_table(
    shapes: Sequence[tuple[int, int]],
    covs: dict[int, torch.Tensor],
    n_seeds: int,
    tau: float,
    kind: str = CHOSEN_NULL,
    seed: int = 0,
    massive: dict[int, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, dict[tuple[int, int], np.ndarray]]:
    """The per-layer null table: one row per ``(layer, n_features)`` shape with the null's
    fraction stable, pair share, and the mean, 95th and 99th percentiles of its per-feature mean
    best cosine (what claim 1's separation reads), beside the layer's massive dimensions; and the
    per-feature null mean-best samples by ``(layer, n_features)``."""
    check_positive_int("n_seeds", n_seeds)
    gen = torch.Generator().manual_seed(seed)
    rows, samples = [], {}
    for layer, n_features in tqdm(sorted(set(shapes)), desc=f"{kind} null per layer"):
        if layer not in covs:
            raise ValueError(f"covs has no covariance for layer {layer}; layers given: {sorted(covs)}")
        mb, frac, pair = null_score_samples(kind, n_seeds, n_features, covs[layer], tau, gen)
        samples[(layer, n_features)] = mb
        rows.append(
            {
                "layer": layer,
                "n_features": n_features,
                "null": kind,
                "tau": tau,
                "n_seeds": n_seeds,
                "fraction_stable": float((frac >= 1 - 1e-9).mean()),
                "pair_share": pair,
                "mean_best_mean": float(mb.mean()),
                "mean_best_p95": float(np.quantile(mb, 0.95)),
                "mean_best_p99": float(np.quantile(mb, 0.99)),
                "massive_dims": " ".join(map(str, (massive or {}).get(layer, []))),
            }
        )
    return pd.DataFrame(rows), samples


def null_covariance(cov: torch.Tensor) -> torch.Tensor:
    """The covariance the chosen null draws from: ``cov`` with every eigenvalue above
    ``OUTLIER_FACTOR`` × the median eigenvalue clipped to that level (the ``"clipped"`` null of
    :func:`~sae_studies.analyses.seed_stability.null_decoders`, as a matrix: claim 4's subspace
    controls are drawn from it)."""
    c = check_matrix("cov", cov).detach().double().cpu()
    if c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square [d, d] covariance; got {list(c.shape)}")
    lam, vec = torch.linalg.eigh(0.5 * (c + c.T))
    lam = lam.clamp_min(0).clamp_max(seed_stability.OUTLIER_FACTOR * float(lam.clamp_min(0).median()))
    return (vec * lam) @ vec.T
