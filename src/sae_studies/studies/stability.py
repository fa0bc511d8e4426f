"""Study 1: feature stability across seeds — the grid, its training, stability tables and nulls.

The grid is layers × architectures × dictionary sizes, every cell trained for every seed on the
same harvested activations (the seed changes only the SAE's initialisation and data order).
Section 1 of notebook 01 reads everything here; the functional, surface-form, subspace and
pooling analyses (claims 2–5) and every verdict rule are in :mod:`.stability_claims`.

Definitions (this repository's; see :mod:`sae_studies.analyses.seed_stability`): a feature is
stable when every other seed holds a decoder direction with cosine ≥ τ to it; "fraction stable"
of a cell is the share of its *live* latents (≥ ``min_firings`` firings on held-out tokens) that
are stable, averaged per seed and reported as mean ± sd over seeds; the all-latent share (dead
latents counted as unstable, the first version's number) is kept beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import cosine, quality, seed_stability
from ..checks import check_int, check_sorted_ints, check_tau
from ..config import Profile, SAEConfig
from ..devices import device_of, to_device, to_numpy
from ..saes import registry
from ..saes.registry import SAESpec
from ..study_config import Study01Config
from .budget_ladders import check_ladder, check_sweep_rung

__all__ = [
    "GridCell",
    "check",
    "grid",
    "cell_spec",
    "sae_config",
    "firing_counts",
    "quality_table",
    "stability_tables",
    "seed_spread",
    "tau_table",
    "hungarian_table",
    "null_table",
    "init_decoders",
    "duplication_table",
    "convergence_row",
]


@dataclass(frozen=True)
class GridCell:
    """One (layer, architecture, dictionary size) of the study-1 grid; all seeds share it."""

    layer: int
    architecture: str
    expansion_factor: int

    @property
    def label(self) -> str:
        return f"L{self.layer} {self.architecture} {self.expansion_factor}×"

    def as_dict(self) -> dict:
        return {"layer": self.layer, "architecture": self.architecture, "expansion": self.expansion_factor}


def check(cfg: Study01Config, n_layers: int, warmup_fraction: float = SAEConfig.lr_warm_up_fraction) -> None:
    """Fail early, naming the parameter, on a study-1 configuration that cannot run.
    ``warmup_fraction`` is the profile's ``sae.lr_warm_up_fraction`` (the ladder's warm-up)."""
    from ..analyses.pooling import seed_groups

    seeds = list(cfg.seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"study01.seeds must hold at least 2 distinct seeds; got {seeds}")
    check_tau(cfg.tau, "study01.tau")
    for t in cfg.tau_sweep:
        check_tau(t, "study01.tau_sweep entries")
    bad = [a for a in cfg.architectures if a not in registry.names()]
    if bad or not cfg.architectures:
        raise ValueError(f"study01.architectures has unknown {bad}; valid: {registry.names()}")
    bad = [layer for layer in cfg.layers if not 0 <= layer < n_layers]
    if bad or not cfg.layers:
        raise ValueError(f"study01.layers must be in [0, {n_layers - 1}]; got {list(cfg.layers)}")
    check_sorted_ints("study01.expansion_factors", cfg.expansion_factors)
    if cfg.analysis_expansion_factor not in cfg.expansion_factors:
        raise ValueError(
            f"study01.analysis_expansion_factor ({cfg.analysis_expansion_factor}) must be one of "
            f"study01.expansion_factors {list(cfg.expansion_factors)}"
        )
    if cfg.reduced_architectures and cfg.analysis_expansion_factor not in cfg.reduced_expansion_factors:
        raise ValueError(
            f"study01.analysis_expansion_factor ({cfg.analysis_expansion_factor}) must be one of "
            f"study01.reduced_expansion_factors {list(cfg.reduced_expansion_factors)}"
        )
    if not 0 < cfg.single_token_share <= 1:
        raise ValueError(f"study01.single_token_share must be in (0, 1]; got {cfg.single_token_share}")
    if cfg.pool_architecture not in cfg.architectures:
        raise ValueError(f"study01.pool_architecture must be one of study01.architectures {list(cfg.architectures)}")
    seed_groups(cfg.pool_seeds, cfg.pool_group_size)
    prefixes = list(cfg.matryoshka_prefixes)
    if any(not 0 < p < 1 for p in prefixes) or prefixes != sorted(set(prefixes)):
        raise ValueError(f"study01.matryoshka_prefixes must be strictly increasing fractions in (0, 1); got {prefixes}")
    check_int("study01.min_firings", cfg.min_firings, 1)
    check_int("study01.n_random_ablations", cfg.n_random_ablations, 1)
    if cfg.convergence_tokens:
        check_ladder("study01", cfg, cfg.batch_size, warmup_fraction, cfg.ladder_warmup_tokens)
        check_sweep_rung("study01", cfg)
        if not cfg.convergence_lrs:  # (check_ladder has checked the seeds)
            raise ValueError("study01.convergence_lrs needs at least one rate")


def grid(cfg: Study01Config) -> list[GridCell]:
    """Every cell: layers × architectures × sizes, the reduced architectures only at
    ``reduced_expansion_factors``."""
    cells = []
    for layer in cfg.layers:
        for arch in cfg.architectures:
            sizes = cfg.reduced_expansion_factors if arch in cfg.reduced_architectures else cfg.expansion_factors
            cells.extend(GridCell(layer, arch, ef) for ef in sizes if ef in cfg.expansion_factors)
    return cells


def cell_spec(cell: GridCell, d_in: int, k: int, cfg: Study01Config, seed: int = 0) -> SAESpec:
    """The SAE spec of a grid cell: ``d_sae = ef × d_in``, ``k`` for the TopK family, Matryoshka
    prefixes from ``cfg.matryoshka_prefixes``."""
    recipe = registry.get(cell.architecture)
    options = {"prefixes": cfg.matryoshka_prefixes} if cell.architecture == "matryoshka_batchtopk" else {}
    return recipe.spec(cell.expansion_factor * d_in, k, seed, **options)


def sae_config(profile: Profile, train_tokens: int | None = None, lr: float | None = None) -> SAEConfig:
    """The profile's SAE settings with this study's budget, learning rate and L1 coefficient."""
    cfg = profile.study01
    return dataclasses.replace(
        profile.sae,
        train_tokens=train_tokens or cfg.train_tokens,
        lr=lr or (cfg.lr if cfg.lr is not None else profile.sae.lr),
        l1_coefficient=cfg.l1_coefficient if cfg.l1_coefficient is not None else profile.sae.l1_coefficient,
    )


@torch.no_grad()
def firing_counts(sae, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """[F] number of tokens of ``x`` on which each latent is non-zero (counted on the SAE's device,
    ``x`` from anywhere)."""
    dev = device_of(sae)
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=dev)
    for xb in x.split(batch_size):
        fires += (sae.encode(to_device(xb, dev)) != 0).sum(0).double()
    return to_numpy(fires)


def quality_table(saes: dict[GridCell, list], eval_x: dict[int, torch.Tensor], seeds: Sequence[int]) -> pd.DataFrame:
    """EV (about the mean), L0, dead fraction per cell and seed on held-out activations."""
    rows = []
    for cell, models in saes.items():
        for seed, sae in zip(seeds, models):
            rep = quality.sae_reconstruction_metrics(sae, eval_x[cell.layer])
            rows.append({**cell.as_dict(), "d_sae": sae.cfg.d_sae, "seed": seed, **rep.as_row()})
    return pd.DataFrame(rows)


def stability_tables(
    saes: dict[GridCell, list], eval_x: dict[int, torch.Tensor], seeds: Sequence[int], tau: float, min_firings: int
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Stability of every cell: ``(scores, per_seed, features)``.

    ``scores[cell]`` is the :class:`StabilityScores`; ``per_seed`` has one row per (cell, seed) with
    ``stable_all`` (share of all latents matched in every other seed), ``stable`` (the same among
    live latents), ``partial``, ``unstable`` (live), ``dead`` (share of latents with fewer than
    ``min_firings`` firings on ``eval_x``) and ``mean_best`` (live); ``features`` one row per latent
    with its fraction, mean best cosine, firings and class.
    """
    scores, rows, feats = {}, [], []
    for cell, models in tqdm(saes.items(), desc="cross-seed cosines"):
        sc = seed_stability.stability_scores([s.W_dec for s in models], tau)
        scores[cell] = sc
        for s, (seed, sae) in enumerate(zip(seeds, models)):
            fires = firing_counts(sae, eval_x[cell.layer])
            cls = seed_stability.stability_class(sc.fraction[s], fires, min_firings)
            live = cls != "dead"
            frac, mb = sc.fraction[s].numpy(), sc.mean_best[s].numpy()
            rows.append(
                {
                    **cell.as_dict(),
                    "seed": seed,
                    "stable_all": float((frac >= 1 - 1e-9).mean()),
                    "stable": float((cls[live] == "stable").mean()) if live.any() else np.nan,
                    "partial": float((cls[live] == "partial").mean()) if live.any() else np.nan,
                    "unstable": float((cls[live] == "unstable").mean()) if live.any() else np.nan,
                    "dead": float((~live).mean()),
                    "mean_best": float(mb[live].mean()) if live.any() else np.nan,
                }
            )
            feats.append(
                pd.DataFrame(
                    {
                        **cell.as_dict(),
                        "seed": seed,
                        "feature": np.arange(len(frac)),
                        "fraction": frac,
                        "mean_best": mb,
                        "firings": fires,
                        "class": cls,
                    }
                )
            )
    return scores, pd.DataFrame(rows), pd.concat(feats, ignore_index=True)


def seed_spread(per_seed: pd.DataFrame, value: str, by: Sequence[str] = ("layer", "architecture", "expansion")) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1) and count of ``value`` over seeds, per group."""
    g = per_seed.groupby(list(by))[value]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()})


def tau_table(scores: dict, taus: Sequence[float], seeds: Sequence[int]) -> pd.DataFrame:
    """Fraction stable (all latents) per cell, τ and seed, from the cells' best cosines."""
    rows = []
    for cell, sc in scores.items():
        fr = seed_stability.tau_sweep(sc.best, taus)
        for t, tau in enumerate(taus):
            for s, seed in enumerate(seeds):
                rows.append({**cell.as_dict(), "tau": tau, "seed": seed, "stable": float((fr[t, s] >= 1 - 1e-9).double().mean())})
    return pd.DataFrame(rows)


def hungarian_table(saes: dict[GridCell, list], seeds: Sequence[int], tau: float, max_features: int) -> pd.DataFrame:
    """One-to-one (Hungarian) matching of consecutive seed pairs per cell: mean matched cosine and
    the share of pairs with cosine ≥ τ, beside the best-cosine share of the same pair
    (Paulo & Belrose's share is one pair; consecutive pairs give its spread)."""
    rows = []
    for cell, models in tqdm(saes.items(), desc="Hungarian matching"):
        if models[0].cfg.d_sae > max_features:
            continue
        for i in range(len(models) - 1):
            a, b = models[i].W_dec, models[i + 1].W_dec
            _, _, cos = cosine.hungarian_match(a, b)
            best_ab, _ = cosine.best_cosine(a, b)
            rows.append(
                {
                    **cell.as_dict(),
                    "pair": f"{seeds[i]}-{seeds[i + 1]}",
                    "hungarian_mean_cos": float(cos.mean()),
                    "hungarian_share_ge_tau": float((cos >= tau).double().mean()),
                    "best_share_ge_tau": float((best_ab >= tau).double().mean()),
                }
            )
    return pd.DataFrame(rows)


def init_decoders(
    cell: GridCell, d_in: int, k: int, cfg: Study01Config, sae_cfg: SAEConfig, seeds: Sequence[int]
) -> list[torch.Tensor]:
    """Decoders of the cell's SAEs at initialisation (before any training step), one per seed."""
    from ..train import build_training_sae

    return [build_training_sae(cell_spec(cell, d_in, k, cfg, seed), d_in, sae_cfg, 1).W_dec.detach().clone() for seed in seeds]


def null_table(
    cells: Sequence[GridCell],
    d_in: int,
    k: int,
    cfg: Study01Config,
    sae_cfg: SAEConfig,
    covs: dict[int, torch.Tensor],
    n_seeds: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Stability of dictionaries with no learned structure, per cell shape, at ``cfg.tau``:
    rows drawn from the activation covariance (``covariance``), from it with its outlier
    directions clipped (``clipped``), uniform in the data's 90 %-variance span
    (``isotropic_span``), and the SAEs at initialisation (``init``); ``fraction_stable`` and
    ``pair_share`` are what a trained cell's numbers are read against."""
    rows = []
    shapes = sorted({(c.layer, c.architecture, c.expansion_factor) for c in cells})
    gen = torch.Generator().manual_seed(seed)
    for layer, arch, ef in tqdm(shapes, desc="null dictionaries"):
        cell = GridCell(layer, arch, ef)
        nulls = {
            kind: seed_stability.null_decoders(kind, n_seeds, ef * d_in, covs[layer], gen) for kind in seed_stability.NULL_KINDS
        }
        nulls["init"] = init_decoders(cell, d_in, k, cfg, sae_cfg, list(range(n_seeds)))
        for kind, decs in nulls.items():
            rows.append({**cell.as_dict(), "null": kind, **seed_stability.null_stability(decs, cfg.tau)})
    return pd.DataFrame(rows)


def duplication_table(saes: dict[GridCell, list], seeds: Sequence[int], tau: float, firings: dict | None = None) -> pd.DataFrame:
    """Within-seed duplication per cell and seed: each latent's best cosine to another latent of
    the same dictionary; ``duplicate_share`` = share with that cosine ≥ τ (a collapsed dictionary is
    "stable" across seeds for the wrong reason); ``median_self_cos`` its median."""
    rows = []
    for cell, models in saes.items():
        for seed, sae in zip(seeds, models):
            v = seed_stability.within_seed_best(sae.W_dec).numpy()
            rows.append(
                {
                    **cell.as_dict(),
                    "seed": seed,
                    "duplicate_share": float((v >= tau).mean()),
                    "median_self_cos": float(np.median(v)),
                }
            )
    return pd.DataFrame(rows)


def convergence_row(models: list, eval_x: torch.Tensor, tau: float, min_firings: int) -> dict:
    """The quantities study 1 reads for one set of seeds of the same length and rate (per-seed
    rows: `stability_ladder.rung_rows`):
    EV and dead share (mean over seeds), fraction stable among live latents and the Hungarian
    share ≥ τ of the first two seeds."""
    reps = [quality.sae_reconstruction_metrics(m, eval_x) for m in models]
    sc = seed_stability.stability_scores([m.W_dec for m in models], tau)
    stable = []
    for s, m in enumerate(models):
        cls = seed_stability.stability_class(sc.fraction[s], firing_counts(m, eval_x), min_firings)
        live = cls != "dead"
        stable.append(float((cls[live] == "stable").mean()) if live.any() else np.nan)
    _, _, cos = cosine.hungarian_match(models[0].W_dec, models[1].W_dec)
    return {
        "explained_variance": float(np.mean([r.explained_variance for r in reps])),
        "dead_fraction": float(np.mean([r.dead_fraction for r in reps])),
        "stable": float(np.nanmean(stable)),
        "stable_sd": float(np.nanstd(stable, ddof=1)) if len(stable) > 1 else np.nan,
        "hungarian_share": float((cos >= tau).double().mean()),
    }
