"""Study 2's positive control: study 1's stability pipeline run unchanged on the synthetic SAEs
(classes, Hungarian matching, the claim-4 subspace analysis), where the planted mechanism is
known. Split from :mod:`sae_studies.studies.synthetic` (which trains and evaluates the SAEs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..analyses import cosine, seed_stability
from ..study_config import Study02Config
from .synthetic import CellResult


def study1_classes(res: CellResult, cfg: Study02Config) -> pd.DataFrame:
    """Study 1's class of every latent (``stability_class`` with firing counts, unchanged) beside
    its ground-truth kind: one row per (seed, latent)."""
    out = res.latents.copy()
    out["class"] = np.concatenate(
        [seed_stability.stability_class(res.scores.fraction[s], res.firings[s], cfg.min_firings) for s in range(len(res.seeds))]
    )
    return out


def hungarian_rows(res: CellResult, tau: float) -> pd.DataFrame:
    """Study 1's Hungarian one-to-one matching of consecutive seeds: mean matched cosine and the
    share of pairs with cosine ≥ τ."""
    rows = []
    for i in range(len(res.seeds) - 1):
        _, _, cos = cosine.hungarian_match(res.decoders[i], res.decoders[i + 1])
        rows.append(
            {
                "architecture": res.architecture,
                "pair": f"{res.seeds[i]}-{res.seeds[i + 1]}",
                "hungarian_mean_cos": float(cos.mean()),
                "hungarian_share_ge_tau": float((cos >= tau).double().mean()),
            }
        )
    return pd.DataFrame(rows)


def study1_subspace(
    res: CellResult,
    classes: pd.DataFrame,
    cov: torch.Tensor,
    cfg: Study02Config,
    generator: torch.Generator,
    *,
    dim: int | None = None,
    not_stable: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Study 1's claim-4 analysis, unchanged, on consecutive seed pairs: ``(overlaps, ranks)`` from
    :func:`stability_claims.subspace_controls` and :func:`stability_claims.low_rank_rows`, at
    the dimension notebook 01 uses (:func:`stability_claims.comparison_dimension`).

    ``not_stable`` counts partial latents as unstable (matched in fewer than all other seeds):
    study 1's claim-4 set since issue 19 (``stability_claims.claim4_classes``), so the default.
    Sensitivity variant: ``dim`` fixes the subspace dimension instead (a class smaller than it is
    skipped)."""
    from . import stability_claims as claims

    ov, rk = [], []
    for i in range(len(res.seeds) - 1):
        a, b = res.seeds[i], res.seeds[i + 1]
        ca = classes[classes.seed == a]["class"].to_numpy()
        cb = classes[classes.seed == b]["class"].to_numpy()
        if not_stable:
            ca, cb = (np.where(c == "partial", "unstable", c) for c in (ca, cb))
        sizes = [int((c == g).sum()) for c in (ca, cb) for g in ("unstable", "stable")]
        da, db = res.decoders[i], res.decoders[i + 1]
        if dim is None:  # notebook 01's rule
            k = claims.comparison_dimension(da, db, ca, cb, min(cfg.subspace_dim, res.spec.d // 2))
        else:  # unstable class in both seeds must hold at least dim latents
            k = min(dim, res.spec.d // 2) if min(sizes[0], sizes[2]) >= min(dim, res.spec.d // 2) else 0
        if k < 1:
            continue
        ov.append(
            claims.subspace_controls(da, db, ca, cb, k, cov, generator, cfg.n_random_subspaces).assign(pair=f"{a}-{b}", dim=k)
        )
        rk.append(claims.low_rank_rows(da, ca, generator, cov=cov).assign(seed=a))
    ov = pd.concat(ov, ignore_index=True) if ov else pd.DataFrame(columns=["group", "control", "overlap", "pair", "dim"])
    rk = pd.concat(rk, ignore_index=True) if rk else pd.DataFrame(columns=["group", "eff_rank", "eff_rank_random_subset"])
    return ov, rk


def class_composition(classes: pd.DataFrame) -> pd.DataFrame:
    """Share of each ground-truth kind inside each of study 1's live classes (rows sum to 1)."""
    live = classes[classes["class"] != "dead"]
    return (
        pd.crosstab(live["class"], live["kind"], normalize="index")
        .reindex(index=["stable", "partial", "unstable"], columns=["isolated", "group", "none"], fill_value=0.0)
        .fillna(0.0)
    )
