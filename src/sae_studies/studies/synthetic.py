"""Study 2: a synthetic low-rank model of seed dependence — checks, grid, training and tables
(verdict rules: `synthetic_claims`; study 1's pipeline as a positive control: `synthetic_control`).

The mechanism "Unstable Features, Reproducible Subspaces" (arXiv 2606.12138; abstract only)
proposes: features that live in a low-rank subspace with no preferred basis are recovered by SAEs
as a subspace, but any basis of it reconstructs equally well, so which latents a seed learns there
is arbitrary; isolated features have one right answer and are recovered by every seed. Here the
ground truth is known (:mod:`sae_studies.analyses.synthetic`), so every part of that claim is
measured directly, and study 1's stability pipeline is run unchanged on it as a positive control.

Definitions (this repository's): a latent is *live* when it fires ≥ ``min_firings`` times on the
held-out rows; it is *stable* when every other seed holds a latent with decoder cosine ≥ τ
(study 1); "fraction stable" of a kind is the share of its live latents that are stable, per seed.
Subspace numbers are ``cos² θ`` of the principal angles averaged over the r angles (the
projection overlap), with missing dimensions counted as 0.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..analyses import quality, seed_stability
from ..analyses import synthetic as syn
from ..analyses import synthetic_recovery as rec
from ..checks import check_choice, check_int, check_tau, check_unit_interval
from ..config import Profile, SAEConfig
from ..saes import registry
from ..store import Store
from ..study_config import Study02Config
from .budget_ladders import check_ladder

PAPER = "arXiv 2606.12138 (abstract only): unstable features are individually non-reproducible but live in reproducible low-rank subspaces"


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def spec_of(cfg: Study02Config, rank: int | None = None, directions: int | None | str = "same") -> syn.LowRankSpec:
    """The synthetic model of the config, optionally at another rank / number of directions."""
    return syn.LowRankSpec(
        d=cfg.d,
        n_isolated=cfg.n_isolated,
        n_groups=cfg.n_groups,
        rank=cfg.rank if rank is None else rank,
        directions=cfg.directions if directions == "same" else directions,
        p_isolated=cfg.p_isolated,
        p_group=cfg.p_group,
        magnitude_mean=cfg.magnitude_mean,
        magnitude_std=cfg.magnitude_std,
        noise_std=cfg.noise_std,
        layout=cfg.layout,
        seed=cfg.data_seed,
    )


def dictionary_size(factor: float, n_directions: int, n_isolated: int, name: str = "study02.dict_factor") -> int:
    """``F = round(factor × n_directions)``; fails unless every isolated feature can have a latent."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"{name} must be a number > 0; got {factor!r}")
    f = int(round(factor * n_directions))
    if f < max(n_isolated, 1):
        raise ValueError(
            f"dictionary size F = round({name}={factor} × {n_directions}) = {f} is smaller than the "
            f"n_isolated={n_isolated} isolated features; {name} must be >= {n_isolated / n_directions:.3g}"
        )
    return f


def phase_cells(cfg: Study02Config) -> list[tuple[int, int | None]]:
    """``(rank, directions)`` of every phase-diagram cell: ``directions = m × rank`` for each m in
    ``sweep_directions`` (None stays continuous); cells a rank cannot hold (k > 2 at r = 1) are left out."""
    cells = []
    for r in cfg.sweep_ranks:
        for m in cfg.sweep_directions:
            k = None if m is None else m * r
            if k is None or r > 1 or k <= 2:
                cells.append((r, k))
    return cells


def _seeds(name: str, seeds: Sequence[int], at_least: int = 2) -> None:
    seeds = list(seeds)
    if len(seeds) < at_least or len(set(seeds)) != len(seeds):
        raise ValueError(f"{name} must hold at least {at_least} distinct seed(s); got {seeds}")
    for s in seeds:
        check_int(f"each entry of {name}", s, 0)


def check(cfg: Study02Config, warmup_fraction: float = SAEConfig.lr_warm_up_fraction) -> syn.LowRankSpec:
    """Fail early, naming the parameter, on a study-2 configuration that cannot run; returns the
    main model's spec.
    ``warmup_fraction`` is the profile's ``sae.lr_warm_up_fraction`` (the ladder's warm-up)."""
    for m in cfg.sweep_directions:
        if m is not None:
            check_int("each entry of study02.sweep_directions", m, 1, hint=" or null (continuous)")
    check_int("study02.sweep_dict_directions", cfg.sweep_dict_directions, 1)
    try:
        spec = spec_of(cfg)
    except ValueError as err:
        raise ValueError(f"study02: {err}") from err
    cells = [(f"study02.sweep_ranks / sweep_directions cell (rank {r}, directions {k})", r, k) for r, k in phase_cells(cfg)]
    cells.append(
        ("study02.sweep_dict_rank / sweep_dict_directions", cfg.sweep_dict_rank, cfg.sweep_dict_directions * cfg.sweep_dict_rank)
    )
    for where, r, k in cells:
        try:
            spec_of(cfg, r, k)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    _seeds("study02.seeds", cfg.seeds)
    _seeds("study02.sweep_seeds", cfg.sweep_seeds)
    if not cfg.architectures:
        raise ValueError(f"study02.architectures must name at least one of {registry.names()}")
    for a in (*cfg.architectures, cfg.sweep_architecture):
        check_choice("study02.architectures / sweep_architecture entries", a, registry.names())
    if not cfg.sweep_ranks or not cfg.sweep_directions:
        raise ValueError("study02.sweep_ranks and study02.sweep_directions must each hold at least one value")
    d_sae = dictionary_size(cfg.dict_factor, spec.n_gt_dims, cfg.n_isolated)
    dict_spec = spec_of(cfg, cfg.sweep_dict_rank, cfg.sweep_dict_directions * cfg.sweep_dict_rank)
    for f in cfg.sweep_dict_factors:
        dictionary_size(f, dict_spec.n_gt_directions, cfg.n_isolated, "each entry of study02.sweep_dict_factors")
    check_int("study02.k", cfg.k, 1, d_sae, f" (at most the dictionary size F={d_sae})")
    check_int("study02.batch_size", cfg.batch_size, 1)
    check_int("study02.n_rows", cfg.n_rows, cfg.batch_size, hint=f" (at least one batch of {cfg.batch_size})")
    if cfg.n_rows % cfg.batch_size:
        raise ValueError(f"study02.batch_size ({cfg.batch_size}) must divide study02.n_rows ({cfg.n_rows})")
    for t in (cfg.train_tokens, cfg.sweep_train_tokens):
        check_int(
            "study02.train_tokens / sweep_train_tokens",
            t,
            cfg.batch_size,
            hint=f" (at least one batch of {cfg.batch_size})",
        )
    if cfg.convergence_tokens:
        check_ladder("study02", cfg, cfg.batch_size, warmup_fraction)
    check_int("study02.n_eval_rows", cfg.n_eval_rows, 1)
    check_tau(cfg.tau, "study02.tau")
    check_tau(cfg.recovered_cos, "study02.recovered_cos")
    check_unit_interval("study02.min_energy", cfg.min_energy)
    check_int("study02.min_firings", cfg.min_firings, 1)
    check_int("study02.subspace_dim", cfg.subspace_dim, 1)
    check_int("study02.n_random_subspaces", cfg.n_random_subspaces, 1)
    return spec


def sae_config(profile: Profile, train_tokens: int | None = None) -> SAEConfig:
    """The profile's SAE settings with this study's budget, learning rate and L1 coefficient."""
    cfg = profile.study02
    return dataclasses.replace(
        profile.sae, train_tokens=train_tokens or cfg.train_tokens, lr=cfg.lr, l1_coefficient=cfg.l1_coefficient
    )


def data(spec: syn.LowRankSpec, cfg: Study02Config, store: Store) -> tuple[syn.SyntheticActivations, torch.Tensor]:
    """Training rows (cached artifact, an ActivationSet) and held-out rows (in memory) of ``spec``."""
    return syn.materialise(spec, cfg.n_rows, store), syn.materialise(spec, cfg.n_eval_rows, store, "eval").tensor()


def jobs(acts, architecture: str, d_sae: int, cfg: Study02Config, sae_cfg: SAEConfig, seeds: Sequence[int]) -> list:
    """The sweep jobs (`sweep.SAEJob`) of one SAE per seed on `acts`."""
    from ..sweep import SAEJob

    spec = registry.get(architecture).spec(d_sae, cfg.k)
    return [SAEJob(acts, spec.with_seed(s), sae_cfg, cfg.batch_size) for s in seeds]


def train_models(
    acts,
    architecture: str,
    d_sae: int,
    cfg: Study02Config,
    sae_cfg: SAEConfig,
    store: Store,
    seeds: Sequence[int],
    runner=None,
) -> list:
    """One SAE per seed through `train.train_sae` (cached), as every LM study trains them, on the
    sweep `runner` (in process by default)."""
    from ..sweep import train_all

    return [
        sae for sae, _ in train_all(jobs(acts, architecture, d_sae, cfg, sae_cfg, seeds), store, runner, f"{architecture} seeds")
    ]


# --------------------------------------------------------------------------------------------
# evaluation of one set of seeds
# --------------------------------------------------------------------------------------------


@dataclass
class CellResult:
    """Everything measured on the seeds of one (model, architecture, dictionary size)."""

    architecture: str
    spec: syn.LowRankSpec
    seeds: list[int]
    decoders: list[torch.Tensor]
    firings: np.ndarray
    """``[S, F]`` firings on the held-out rows."""
    assignments: list[rec.Assignment]
    scores: seed_stability.StabilityScores
    rotated: seed_stability.StabilityScores
    """Stability after rotating each group's latents at random inside its subspace (the null)."""
    per_seed: pd.DataFrame
    latents: pd.DataFrame
    to_truth: np.ndarray
    """``[S, G, r]`` principal-angle cosines between each group's subspace and its latents' span."""
    cross_seed: np.ndarray
    """``[P, G, r]`` the same between the spans of two seeds, for every pair."""
    random: np.ndarray
    """``[n, r]`` the same between two uniformly random r-dim subspaces."""
    iso_best: np.ndarray
    """``[S, n_isolated]`` best cosine of each isolated feature to a latent."""
    dir_best: np.ndarray | None
    """``[S, G, k]`` best cosine of each direction of a discrete group (None: continuous)."""
    nulls: pd.DataFrame

    @property
    def d_sae(self) -> int:
        return int(self.firings.shape[1])


def _kind_stats(kind: np.ndarray, fraction: np.ndarray, mean_best: np.ndarray, name: str) -> dict:
    m = kind == name
    return {
        f"{name}_n": int(m.sum()),
        f"{name}_stable": float((fraction[m] >= 1 - 1e-9).mean()) if m.any() else np.nan,
        f"{name}_mean_best": float(mean_best[m].mean()) if m.any() else np.nan,
    }


def evaluate(
    saes: list,
    acts: syn.SyntheticActivations,
    eval_x: torch.Tensor,
    cfg: Study02Config,
    architecture: str,
    seeds: Sequence[int],
    generator: torch.Generator,
) -> CellResult:
    """Quality, assignment, recovery, subspace and stability numbers of one set of seeds."""
    truth, spec = acts.truth, acts.spec
    decs = [s.W_dec.detach().cpu() for s in saes]
    reps = [quality.sae_reconstruction_metrics(s, eval_x) for s in saes]
    firings = np.stack([r.density * len(eval_x) for r in reps])
    asg = [rec.assign_latents(w, truth, cfg.min_energy, f, cfg.min_firings) for w, f in zip(decs, firings)]
    scores = seed_stability.stability_scores(decs, cfg.tau)
    rotated = rec.rotation_null(decs, truth, asg, cfg.tau, generator)
    iso_best = np.stack([rec.isolated_recovery(w, truth).numpy() for w in decs])
    dirs = [rec.direction_recovery(w, truth) for w in decs]
    dir_best = None if dirs[0] is None else np.stack([x.numpy() for x in dirs])
    to_truth = np.stack([rec.subspace_recovery(w, truth, a) for w, a in zip(decs, asg)])
    cross = rec.cross_seed_span_agreement(decs, truth, asg)
    rows, lat = [], []
    for s, (seed, w, a, rep) in enumerate(zip(seeds, decs, asg, reps)):
        kind, fr, mb = a.kind, scores.fraction[s].numpy(), scores.mean_best[s].numpy()
        rfr, rmb = rotated.fraction[s].numpy(), rotated.mean_best[s].numpy()
        rot = _kind_stats(kind, rfr, rmb, "group")
        row = {
            "architecture": architecture,
            "seed": seed,
            "d_sae": w.shape[0],
            "ev": rep.explained_variance,
            "l0": rep.l0,
            "dead": float((kind == "dead").mean()),
            "iso_recovered": float((iso_best[s] >= cfg.recovered_cos).mean()) if iso_best.size else np.nan,
            "iso_best": float(iso_best[s].mean()) if iso_best.size else np.nan,
            "dir_recovered": float((dir_best[s] >= cfg.recovered_cos).mean()) if dir_best is not None else np.nan,
            "subspace_cos2": float((to_truth[s] ** 2).mean()) if to_truth.size else np.nan,
            **{f"mcc_{k}": v for k, v in rec.mcc(w, truth).items()},
            **_kind_stats(kind, fr, mb, "isolated"),
            **_kind_stats(kind, fr, mb, "group"),
            **_kind_stats(kind, fr, mb, "none"),
            "rot_group_stable": rot["group_stable"],
            "rot_group_mean_best": rot["group_mean_best"],
        }
        rows.append(row)
        lat.append(
            pd.DataFrame(
                {
                    "architecture": architecture,
                    "seed": seed,
                    "latent": np.arange(len(kind)),
                    "kind": kind,
                    "owner": a.owner,
                    "firings": firings[s],
                    "fraction": fr,
                    "mean_best": mb,
                    "rot_fraction": rfr,
                    "rot_mean_best": rmb,
                }
            )
        )
    per_seed = pd.DataFrame(rows)
    per_seed["cross_seed_cos2"] = _per_seed_pairs((cross**2).mean(axis=(1, 2)), len(seeds)) if cross.size else np.nan
    random = rec.random_subspace_cosines(spec.rank, spec.d, cfg.n_random_subspaces, generator)
    nulls = null_table(decs, eval_x, truth, asg, cfg, generator)
    return CellResult(
        architecture,
        spec,
        list(seeds),
        decs,
        firings,
        asg,
        scores,
        rotated,
        per_seed,
        pd.concat(lat, ignore_index=True),
        to_truth,
        cross,
        random,
        iso_best,
        dir_best,
        nulls,
    )


def _per_seed_pairs(values: np.ndarray, n: int) -> np.ndarray:
    """Mean of a per-pair quantity over the pairs each seed is in (``values`` in combinations order)."""
    out = np.zeros(n)
    for v, (s, t) in zip(values, itertools.combinations(range(n), 2)):
        out[s] += v / (n - 1)
        out[t] += v / (n - 1)
    return out


def null_table(
    decs: list[torch.Tensor],
    eval_x: torch.Tensor,
    truth: syn.GroundTruth,
    asg: list[rec.Assignment],
    cfg: Study02Config,
    generator: torch.Generator,
) -> pd.DataFrame:
    """Stability of dictionaries with no learned structure, same shape as the SAEs: study 1's three
    nulls drawn from the covariance of the generated rows, and ``within subspaces`` (as many
    random directions inside each group's subspace as the SAEs assigned to it, on average)."""
    cov = torch.cov(eval_x.double().T)
    n, f = len(decs), decs[0].shape[0]
    rows = [
        {"null": kind, **seed_stability.null_stability(seed_stability.null_decoders(kind, n, f, cov, generator), cfg.tau)}
        for kind in seed_stability.NULL_KINDS
    ]
    per_group = [int(round(np.mean([a.group_mask(g).sum() for a in asg]))) for g in range(truth.bases.shape[0])]
    if sum(per_group):
        rows.append({"null": "within subspaces", **rec.within_subspace_null(truth, per_group, n, cfg.tau, generator)})
    return pd.DataFrame(rows)


def summary_row(res: CellResult) -> dict:
    """Mean and sd over seeds of the numbers a sweep plots, for one cell."""
    ps = res.per_seed
    out = {
        "architecture": res.architecture,
        "rank": res.spec.rank,
        "directions": np.nan if res.spec.directions is None else res.spec.directions,
        "d_sae": res.d_sae,
        "random_cos2": float((res.random**2).mean()),
        "n_seeds": int(len(ps)),
    }
    for col in (
        "ev",
        "isolated_stable",
        "group_stable",
        "group_mean_best",
        "rot_group_mean_best",
        "dir_recovered",
        "subspace_cos2",
        "cross_seed_cos2",
        "group_n",
        "dead",
    ):
        out[col], out[f"{col}_sd"] = float(ps[col].mean()), float(ps[col].std(ddof=1))
    return out


# --------------------------------------------------------------------------------------------
# sweeps
# --------------------------------------------------------------------------------------------


def sweep(
    profile: Profile,
    store: Store,
    models: Sequence[tuple[syn.LowRankSpec, int]],
    label: Sequence[dict],
    progress: bool = True,
    runner=None,
) -> pd.DataFrame:
    """Train ``sweep_architecture`` for ``sweep_seeds`` on each ``(spec, d_sae)`` (at
    ``sweep_train_tokens``; one grid on the sweep `runner`, in process by default) and return one
    :func:`summary_row` per model, with its ``label``."""
    from tqdm.auto import tqdm

    from ..sweep import train_all

    cfg = profile.study02
    sae_cfg = sae_config(profile, cfg.sweep_train_tokens)
    cells = [(data(spec, cfg, store), d_sae) for spec, d_sae in models]
    grid = [j for (acts, _), d_sae in cells for j in jobs(acts, cfg.sweep_architecture, d_sae, cfg, sae_cfg, cfg.sweep_seeds)]
    trained = [sae for sae, _ in train_all(grid, store, runner, "sweep SAEs")]
    n = len(cfg.sweep_seeds)
    rows = []
    for i, (((acts, eval_x), _), (spec, _), extra) in enumerate(
        tqdm(list(zip(cells, models, label)), desc="sweep cells", disable=not progress)
    ):
        saes = trained[i * n : (i + 1) * n]
        res = evaluate(saes, acts, eval_x, cfg, cfg.sweep_architecture, cfg.sweep_seeds, torch.Generator().manual_seed(spec.seed))
        rows.append({**extra, **summary_row(res)})
    return pd.DataFrame(rows)


def phase_dictionary_size(cfg: Study02Config, spec: syn.LowRankSpec) -> int:
    """F of a phase-diagram cell: ``dict_factor`` × the cell's ground-truth dimensions, raised to
    at least the number of ground-truth *directions* where the cell has discrete directions.
    Rule: an SAE with fewer latents than directions cannot give each direction a latent, so low
    recovery there would be capacity, not identifiability (at r = 8, k / r = 4 the dimensions
    rule alone gives F = 2 × (8 + 3 × 8) = 64 latents for 8 + 3 × 32 = 104 directions)."""
    f = dictionary_size(cfg.dict_factor, spec.n_gt_dims, cfg.n_isolated)
    return max(f, spec.n_gt_directions or 0)


def phase_models(cfg: Study02Config) -> tuple[list[tuple[syn.LowRankSpec, int]], list[dict]]:
    """The (spec, d_sae) of every phase-diagram cell (F from :func:`phase_dictionary_size`: at
    least the cell's ground-truth directions) and its labels ``rank``, ``multiple`` (k / r; NaN
    when continuous)."""
    models, labels = [], []
    for r, k in phase_cells(cfg):
        spec = spec_of(cfg, r, k)
        models.append((spec, phase_dictionary_size(cfg, spec)))
        labels.append({"multiple": np.nan if k is None else k // r})
    return models, labels


def size_models(cfg: Study02Config) -> tuple[list[tuple[syn.LowRankSpec, int]], list[dict]]:
    """The (spec, d_sae) of the dictionary-size sweep: the discrete model with rank
    ``sweep_dict_rank`` and ``sweep_dict_directions × rank`` directions per group, F = factor ×
    its number of ground-truth directions; labels ``factor``, ``n_directions``."""
    spec = spec_of(cfg, cfg.sweep_dict_rank, cfg.sweep_dict_directions * cfg.sweep_dict_rank)
    n = spec.n_gt_directions
    return (
        [
            (spec, dictionary_size(f, n, cfg.n_isolated, "each entry of study02.sweep_dict_factors"))
            for f in cfg.sweep_dict_factors
        ],
        [{"factor": f, "n_directions": n} for f in cfg.sweep_dict_factors],
    )
