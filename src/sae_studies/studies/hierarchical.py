"""Study 3: HierarchicalTopK (one SAE for every k ≤ K) against SAEs trained per k.

Every SAE reads the same activations with the same token budget and dictionary size; the grid
is baselines × k × seeds plus one HierarchicalTopK model per seed at K = max(k). Models are
compared at equal *measured* L0 (BatchTopK-family SAEs are saved with a JumpReLU threshold, so
their L0 is near, not at, k): a baseline family's metric is interpolated in log2(L0) at the L0
of the hierarchical model, per seed, and Δ = hierarchical − best baseline there. The verdict
rules that read these tables are in :mod:`sae_studies.studies.hierarchical_claims`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import features, quality
from ..checks import check_sorted_ints
from ..config import Profile, SAEConfig
from ..saes import registry
from ..saes.registry import SAESpec
from ..study_config import Study03Config
from .budget_ladders import check_ladder

HIERARCHICAL = "hierarchical_topk"
CUT = "topk@K cut to k"


def check(
    cfg: Study03Config,
    d_sae: int,
    n_layers: int,
    batch_size: int | None = None,
    warmup_fraction: float = SAEConfig.lr_warm_up_fraction,
) -> list[int]:
    """Fail early on a configuration that cannot run; returns the sorted k grid. ``batch_size``
    (activations.batch_size, the rows per training step) checks the ladder's rungs against it.
    ``warmup_fraction`` is the profile's ``sae.lr_warm_up_fraction`` (the ladder's warm-up)."""
    ks = check_sorted_ints("study03.ks", cfg.ks, 1, d_sae)
    if not set(cfg.reduced_ks) <= set(ks):
        raise ValueError(f"study03.reduced_ks {list(cfg.reduced_ks)} must be a subset of study03.ks {ks}")
    if not 0 <= cfg.layer < n_layers:
        raise ValueError(f"study03.layer must be in [0, {n_layers - 1}]; got {cfg.layer}")
    unknown = [b for b in cfg.baselines if b not in registry.names()]
    if unknown:
        raise ValueError(f"study03.baselines has unknown {unknown}; valid: {registry.names()}")
    if "topk" not in cfg.baselines:
        raise ValueError("study03.baselines must include 'topk' (the cut-to-k reference is the TopK model at K)")
    if len(set(cfg.seeds)) != len(cfg.seeds) or not cfg.seeds:
        raise ValueError(f"study03.seeds must be distinct and non-empty; got {list(cfg.seeds)}")
    for t in cfg.budget_sweep:
        if t <= 0:
            raise ValueError(f"study03.budget_sweep must hold positive token counts; got {list(cfg.budget_sweep)}")
    if cfg.convergence_tokens:
        check_ladder("study03", cfg, batch_size, warmup_fraction)
    return ks


def sae_config(profile: Profile, train_tokens: int | None = None) -> SAEConfig:
    """The profile's SAE settings with this study's budget and learning rate."""
    cfg = profile.study03
    return dataclasses.replace(
        profile.sae, train_tokens=train_tokens or cfg.train_tokens, lr=cfg.lr if cfg.lr is not None else profile.sae.lr
    )


def specs(cfg: Study03Config, d_sae: int, seed: int) -> tuple[dict[tuple[str, int], SAESpec], list[str]]:
    """Every baseline spec at each k of the grid (reduced baselines only at ``reduced_ks``) and the
    HierarchicalTopK spec at K; also the cells skipped because the recipe cannot build them
    (e.g. Multi-TopK needs 4k ≤ d_sae), each with its reason."""
    ks = list(cfg.ks)
    out, skipped = {}, []
    for arch in cfg.baselines:
        recipe = registry.get(arch)
        options = {"prefixes": cfg.matryoshka_fractions} if arch == "matryoshka_batchtopk" else {}
        for k in cfg.reduced_ks if arch in cfg.reduced_baselines else ks:
            problem = recipe.problem(d_sae, k, **options)
            if problem:
                skipped.append(f"{arch} at k={k}: {problem}")
                continue
            out[(arch, k)] = recipe.spec(d_sae, k, seed, **options)
    out[(HIERARCHICAL, ks[-1])] = registry.get(HIERARCHICAL).spec(d_sae, ks[-1], seed)
    return out, skipped


def evaluate(saes: dict[tuple[str, int], object], ks: Sequence[int], eval_x: torch.Tensor, splicer, seed: int) -> pd.DataFrame:
    """EV, L0, dead fraction, CE and loss recovered of every model at every k, for one seed: the
    baselines as trained, the hierarchical model encoded at each k, and TopK@K cut to each k."""
    K = ks[-1]
    rows = []
    for (arch, k), sae in tqdm(saes.items(), desc=f"evaluating seed {seed}"):
        if arch != HIERARCHICAL:
            rows.append({"model": arch, "k": k, "seed": seed, **quality.sae_report(sae, eval_x, splicer)})
    hier = saes[(HIERARCHICAL, K)]
    for k in ks:
        rows.append(
            {
                "model": HIERARCHICAL,
                "k": k,
                "seed": seed,
                **quality.sae_report(hier, eval_x, splicer, encode=lambda x, k=k: hier.encode(x, k=k)),
            }
        )
        rows.append(
            {
                "model": CUT,
                "k": k,
                "seed": seed,
                **quality.sae_report(saes[("topk", K)], eval_x, splicer, encode=quality.cut_encoder(saes[("topk", K)], k)),
            }
        )
    return pd.DataFrame(rows)


def interpolate_at_l0(l0: np.ndarray, values: np.ndarray, at: float) -> float:
    """A model family's metric at L0 = `at`, interpolated linearly in log2(L0) between its trained
    points; NaN outside the measured L0 range (no extrapolation)."""
    order = np.argsort(l0)
    x, y = np.log2(np.asarray(l0, dtype=float)[order]), np.asarray(values, dtype=float)[order]
    if len(x) == 0 or not x[0] <= np.log2(at) <= x[-1]:
        return float("nan")
    return float(np.interp(np.log2(at), x, y))


def gap_at_equal_l0(results: pd.DataFrame, model: str, baselines: list[str], metric: str) -> pd.DataFrame:
    """For each row of `model` (one seed), its metric minus the best baseline's metric interpolated
    at the same measured L0 (positive = `model` is above the baselines' front there)."""
    rows = []
    for _, r in results[results.model == model].sort_values("k").iterrows():
        best, best_name = -np.inf, None
        for b in baselines:
            g = results[results.model == b]
            v = interpolate_at_l0(g.l0.to_numpy(), g[metric].to_numpy(), r.l0)
            if np.isfinite(v) and v > best:
                best, best_name = v, b
        rows.append(
            {
                "k": int(r.k),
                "l0": r.l0,
                model: r[metric],
                "best baseline at same L0": best if best_name else np.nan,
                "which": best_name,
                "Δ": r[metric] - best if best_name else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("k")


def gaps(results: pd.DataFrame, baselines: list[str]) -> pd.DataFrame:
    """Per seed and k: ΔEV and Δ loss recovered of HierarchicalTopK against the best separately
    trained baseline at equal L0, and ΔEV against TopK@K cut to k."""
    out = []
    for seed, res in results.groupby("seed"):
        ev = gap_at_equal_l0(res, HIERARCHICAL, baselines, "explained_variance")
        lr = gap_at_equal_l0(res, HIERARCHICAL, baselines, "loss_recovered")
        cut = gap_at_equal_l0(res, HIERARCHICAL, [CUT], "explained_variance")
        out.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "L0": ev.l0,
                    "EV hierarchical": ev[HIERARCHICAL],
                    "EV best separate": ev["best baseline at same L0"],
                    "which": ev["which"],
                    "ΔEV": ev["Δ"],
                    "Δ loss recovered": lr["Δ"],
                    "ΔEV vs cut": cut["Δ"],
                }
            )
        )
    return pd.concat(out).reset_index()


def pareto_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model and k, the Pareto figure's points: mean measured L0, and mean ± sd over seeds of
    explained variance (``ev``, ``ev_sd``) and loss recovered (``lr``, ``lr_sd``)."""
    return (
        results.groupby(["model", "k"])
        .agg(
            l0=("l0", "mean"),
            ev=("explained_variance", "mean"),
            ev_sd=("explained_variance", "std"),
            lr=("loss_recovered", "mean"),
            lr_sd=("loss_recovered", "std"),
        )
        .reset_index()
    )


def proxies(
    encoders: dict[tuple[str, int], object],
    eval_x: torch.Tensor,
    categories: np.ndarray,
    tokens: np.ndarray,
    n_ctx: int,
    n_top: int,
    seed: int,
) -> pd.DataFrame:
    """Interpretability proxies of each (model, k) encoder: category AUROC (best single latent per
    corpus category, mean over categories; 0.5 = chance; higher = latents track themes) and
    top-token entropy (bits, mean over latents with ≥ n_top firings; lower = more lexical)."""
    rows = []
    for (model, k), encode in encoders.items():
        codes = quality.encode_all(encode, eval_x)
        auc = features.category_auroc(codes, categories)
        top = features.top_activations(lambda z: z, codes, n_top)  # the codes above, not a second encoding
        ent = features.surface_statistics(top, tokens, n_ctx, min_firings=n_top).token_entropy.to_numpy()
        rows.append(
            {
                "model": model,
                "k": k,
                "seed": seed,
                "category_auroc": float(np.mean(list(auc.values()))),
                "top_token_entropy": float(np.nanmean(ent)),
                "live_latents": int(np.isfinite(ent).sum()),
            }
        )
    return pd.DataFrame(rows)


def budget_sweep(run, cfg: Study03Config, d_sae: int, eval_x: torch.Tensor, splicer, ks: Sequence[int]) -> pd.DataFrame:
    """TopK at every k and HierarchicalTopK at K (first seed) retrained at each budget of
    ``cfg.budget_sweep``; per budget and k the gap ΔEV (and Δ loss recovered) at equal L0 against
    TopK trained with the same budget."""
    from ..activations import hook_name
    from ..sweep import SAEJob

    hook = hook_name(cfg.layer)
    acts = run.activations([hook])[hook]
    seed = cfg.seeds[0]
    cells = [(t, (arch, k)) for t in cfg.budget_sweep for arch, k in [*(("topk", k) for k in ks), (HIERARCHICAL, ks[-1])]]
    jobs = [
        SAEJob(acts, registry.get(arch).spec(d_sae, k, seed), sae_config(run.profile, t), run.profile.activations.batch_size)
        for t, (arch, k) in cells
    ]
    trained: dict[int, dict] = {}
    for (t, model), (sae, _) in zip(cells, run.train(jobs, desc="budget sweep SAEs")):
        trained.setdefault(t, {})[model] = sae
    rows = []
    for tokens in tqdm(cfg.budget_sweep, desc="token budgets"):
        models = trained[tokens]
        res = evaluate(models, ks, eval_x, splicer, seed)
        g = gaps(res, ["topk"])
        cols = ["tokens", "k", "L0", "EV hierarchical", "EV best separate", "ΔEV", "Δ loss recovered"]
        rows.append(g.assign(tokens=tokens)[cols])
    return pd.concat(rows, ignore_index=True)
