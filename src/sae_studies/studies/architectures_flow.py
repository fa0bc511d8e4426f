"""Study 6, part 2: stability along the flow — are features that persist across layers more
stable across seeds than features born at their layer?

Study 5 (:mod:`.flow`) classifies every live residual feature of layer L by data-free matching
against layer L − 1's residual, MLP-out and attention-out SAEs: *translated* (matched in the
previous residual, above the null's quantile, and in neither module), *processed*, *newborn*
(matched only in a module) or *unexplained*. Study 1's stability score needs several seeds of the
same SAE: study 5 trains its window once per seed in ``study05.seeds``, so each residual feature
of seed s has both a group (from seed s's own flow matching) and a stability fraction (share of
the other seeds whose residual SAE at that layer holds a decoder row with cosine ≥ τ).

Rule (:func:`flow_stability_verdict`): per seed, Δ = fraction stable among translated − among
newborn features (pooled over the window's layers); 95 % t interval of Δ over seeds above 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..analyses import features, flow, seed_stability
from ..analyses.intervals import decide, t_interval
from . import flow as sf
from .verdicts import Verdict, spread

__all__ = ["flow_groups", "stability_by_group", "group_stability_per_seed", "flow_stability_verdict"]


def flow_groups(run, progress: bool = True) -> tuple[pd.DataFrame, dict, list[int]]:
    """Study 5's window for the run's profile (its SAEs come from the cache when notebook 05 ran):
    ``(groups, decoders, layers)`` with one row per live residual feature and seed (as notebook 05's
    group table), ``decoders[seed][("resid", layer)]``."""
    P, C = run.profile, run.profile.study05
    model = run.model
    layers = sf.check_study05(C, model.cfg.n_layers, P.sae.k, model.cfg.d_model, P.corpus.source, P.sae.lr_warm_up_fraction)
    hooks = {p: flow.position_hook(p) for p in flow.window_positions(layers)}
    train_acts = run.activations(list(hooks.values()))
    val_acts = run.activations(list(hooks.values()), split="val")
    saes = sf.train_window(train_acts, layers, C, model.cfg.d_model, P.sae.k, sf.sae_config(P.sae, C), run.store)
    decoders = {s: sf.decoders_of(saes[s]) for s in C.seeds}
    covs = {p: torch.cov(train_acts[h].tensor(C.null_cov_tokens).T.double()) for p, h in hooks.items()}
    parts = []
    for s in C.seeds:
        matches = flow.match_decoders(decoders[s], layers, C.match_k)
        null = flow.match_window(
            {lay: decoders[s][("resid", lay)] for lay in layers}, sf.null_sources(decoders[s], covs, C.null_kind, s), layers, 1
        )
        thresholds = flow.null_thresholds(null, C.null_quantile)
        alive = {}
        for lay in layers:
            x = val_acts[hooks[("resid", lay)]].tensor()
            alive[lay] = (
                features.top_activations(saes[s][("resid", lay)], x, C.n_top_activations).density * len(x) >= C.min_firings
            )
        parts.append(sf.group_table(matches, thresholds, alive).assign(seed=s))
    return pd.concat(parts, ignore_index=True), decoders, layers


def stability_by_group(groups: pd.DataFrame, decoders: Mapping[int, Mapping], layers: Sequence[int], tau: float) -> pd.DataFrame:
    """``groups`` with a ``fraction`` column: the stability fraction of each (seed, layer, feature)
    across the seeds of ``decoders`` (study 1's score on the residual SAEs of that layer)."""
    seeds = sorted(decoders)
    if len(seeds) < 2:
        raise ValueError(f"stability needs at least 2 seeds of study 5's window; got {seeds}")
    frac = {}
    for lay in layers:
        sc = seed_stability.stability_scores([decoders[s][("resid", lay)] for s in seeds], tau)
        for i, s in enumerate(seeds):
            frac[(s, lay)] = sc.fraction[i].numpy()
    out = groups.copy()
    out["fraction"] = [float(frac[(s, lay)][f]) for s, lay, f in zip(out.seed, out.layer, out.feature)]
    return out


def group_stability_per_seed(table: pd.DataFrame, a: str = "translated", b: str = "newborn") -> pd.DataFrame:
    """Per seed: the share of stable features (fraction 1: matched in every other seed) in group
    ``a`` and in group ``b`` (pooled over layers), their counts and ``delta`` = a − b (NaN where a
    group is empty)."""
    rows = []
    for seed, g in table.groupby("seed"):
        stable = g.fraction >= 1 - 1e-9
        sa, sb = stable[g.group == a], stable[g.group == b]
        va = float(sa.mean()) if len(sa) else np.nan
        vb = float(sb.mean()) if len(sb) else np.nan
        rows.append({"seed": seed, f"stable_{a}": va, f"stable_{b}": vb, f"n_{a}": len(sa), f"n_{b}": len(sb), "delta": va - vb})
    return pd.DataFrame(rows)


def flow_stability_verdict(per_seed: pd.DataFrame, a: str = "translated", b: str = "newborn", model: str = "") -> Verdict:
    """Are ``a`` (translated) features more stable across seeds than ``b`` (newborn) ones?
    95 % t interval over seeds of the per-seed difference in the stable share, :func:`decide`
    above 0; fewer than 2 seeds with both groups non-empty: untested."""
    claim = f"features that persist across layers ({a}) are more stable across seeds than {b} ones"
    paper = "not measured (issue 20: study 5's flow groups × study 1's stability)"
    rule = f"per seed Δ = fraction stable among {a} − among {b} (live residual features, window pooled); 95 % t interval above 0"
    d = per_seed.delta.to_numpy(dtype=float)
    if np.isfinite(d).sum() < 2:
        return Verdict(claim, paper, f"{model}fewer than 2 seeds with both groups present", "untested", rule)
    mean, interval, n = t_interval(d)
    ours = (
        f"{model}Δ {mean:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}] (n={n} seeds); {a} {spread(per_seed[f'stable_{a}'])} "
        f"(≈{per_seed[f'n_{a}'].mean():.0f} features per seed) vs {b} {spread(per_seed[f'stable_{b}'])} "
        f"(≈{per_seed[f'n_{b}'].mean():.0f})"
    )
    return Verdict(claim, paper, ours, decide(interval, 0.0, "above"), rule, statistic=mean, interval=interval, n=n)
