"""Study 1, claims 1–5: the tables each claim is read from, and the verdict rules.

"Unstable Features, Reproducible Subspaces" (arXiv 2606.12138; only its abstract is public):

1. a per-feature stability score separates stable from unstable features;
2. stable features carry most of the reconstruction and prediction signal;
3. unstable features are dominated by low-frequency, surface-form (single-token) triggers;
4. unstable features are individually non-reproducible but live in reproducible low-rank subspaces;
5. pooling the unique cross-seed features gives a more stable SAE at the same explained variance.

Every table takes the classes of :func:`.stability.stability_tables` (dead latents are a class of
their own and are left out of stable / partial / unstable). Every verdict rule returns a
:class:`~sae_studies.studies.verdicts.Verdict`; the rules were fixed before looking at the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import features, subspaces
from ..analyses.cosine import unit_rows
from .verdicts import Verdict, per_group_outcome, spread

LIVE_CLASSES = ("stable", "partial", "unstable")


# --------------------------------------------------------------------------------------------
# claim 1: separation
# --------------------------------------------------------------------------------------------


def class_shares(features_table: pd.DataFrame) -> pd.DataFrame:
    """Share of live latents in each class, per architecture (pooled over layers and seeds)."""
    live = features_table[features_table["class"] != "dead"]
    share = pd.crosstab(live.architecture, live["class"], normalize="index")
    return share.reindex(columns=list(LIVE_CLASSES), fill_value=0.0)


def verdict_separation(shares: pd.DataFrame, excess: pd.Series, n_seeds: int) -> Verdict:
    """Claim 1. Rule: with ≥ 3 seeds, for every architecture fewer than 25 % of live latents are
    partial, the stable and the unstable class each hold ≥ 5 % of them, and the stable share
    exceeds the largest null baseline's (``excess`` = fraction stable − max null > 0)."""
    rule = (
        "≥ 3 seeds; per architecture: partial < 25 % of live latents, stable and unstable ≥ 5 % each, "
        "fraction stable above every null baseline"
    )
    paper = "a per-feature stability score separates stable from unstable features"
    ours = "; ".join(
        f"{a}: stable {r.stable:.2f} / partial {r.partial:.2f} / unstable {r.unstable:.2f}, "
        f"excess over null {excess.get(a, np.nan):+.3f}"
        for a, r in shares.iterrows()
    )
    if n_seeds < 3:
        return Verdict("1 · stability separates features", paper, ours + f" ({n_seeds} seeds)", "untested", rule)
    ok = (shares.partial < 0.25) & (shares[["stable", "unstable"]].min(axis=1) >= 0.05)
    ok &= excess.reindex(shares.index).fillna(-np.inf) > 0
    outcome, which = per_group_outcome(ok)
    return Verdict("1 · stability separates features", paper, f"{ours} ({which})", outcome, rule)


# --------------------------------------------------------------------------------------------
# claim 2: functional asymmetry
# --------------------------------------------------------------------------------------------


def asymmetry_rows(cell, seed: int, sae, x: torch.Tensor, classes: np.ndarray, splicer) -> list[dict]:
    """Ablate each live class of one SAE from its reconstruction: FVU and CE increases."""
    masks = {c: torch.from_numpy(classes == c) for c in LIVE_CLASSES if (classes == c).any()}
    evs = features.ablation_explained_variance(sae, x, masks)
    ce = features.ablation_ce(splicer, sae, masks)
    return [
        {
            **cell.as_dict(),
            "seed": seed,
            "class": c,
            "n": int(m.sum()),
            "feature_share": float(m.double().mean()),
            "d_fvu": evs["none"] - evs[c],
            "d_ce": ce[c] - ce["sae"],
        }
        for c, m in masks.items()
    ]


def per_feature_ratio(asym: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, architecture, seed): how much more one stable feature is worth than one unstable
    one, ``(Δ / n)_stable / (Δ / n)_unstable`` for FVU and CE (NaN where a class is empty)."""
    a = asym.assign(fvu=asym.d_fvu / asym.n, ce=asym.d_ce / asym.n)
    per = a.pivot_table(index=["layer", "architecture", "seed"], columns="class", values=["fvu", "ce"])
    out = pd.DataFrame(index=per.index)
    for q in ("fvu", "ce"):
        out[q] = per[q]["stable"] / per[q]["unstable"] if {"stable", "unstable"} <= set(per[q].columns) else np.nan
    return out


def verdict_signal(ratios: pd.DataFrame) -> Verdict:
    """Claim 2. Rule: per architecture, the median over layers and seeds of the per-feature ratio
    stable / unstable is ≥ 2 in both FVU and CE."""
    rule = "per architecture: median per-feature effect ratio stable / unstable ≥ 2 on both FVU and CE"
    paper = "stable features carry most of the reconstruction and prediction signal"
    r = ratios.dropna()
    if r.empty:
        return Verdict("2 · stable features carry the signal", paper, "a class is empty everywhere", "untested", rule)
    med = r.groupby(level="architecture").median()
    seed_med = r.groupby(level=["architecture", "seed"]).median()
    ours = "; ".join(f"{a}: FVU {spread(seed_med.loc[a].fvu, '.2f')}, CE {spread(seed_med.loc[a].ce, '.2f')}" for a in med.index)
    outcome, which = per_group_outcome((med.fvu >= 2) & (med.ce >= 2))
    return Verdict(
        "2 · stable features carry the signal", paper, f"per-feature ratio stable/unstable, {ours} ({which})", outcome, rule
    )


# --------------------------------------------------------------------------------------------
# claim 3: surface form
# --------------------------------------------------------------------------------------------


def surface_rows(
    cell, seed: int, sae, x: torch.Tensor, tokens: np.ndarray, n_ctx: int, classes: np.ndarray, n_top: int, min_firings: int
) -> tuple[pd.DataFrame, features.TopActivations]:
    """Per latent: firing frequency, token entropy, single-token share, and its class."""
    top = features.top_activations(sae, x, n_top)
    st = features.surface_statistics(top, tokens, n_ctx, min_firings)
    for key, value in {**cell.as_dict(), "seed": seed, "class": classes}.items():
        st[key] = value
    return st, top


def surface_by_class(surf: pd.DataFrame, single_token_share: float) -> pd.DataFrame:
    """Per (architecture, seed, class): median frequency, median token entropy, share explained by
    one token (≥ ``single_token_share`` of its top activations on one token)."""
    s = surf[surf["class"] != "dead"].assign(single_token=lambda t: t.single_token_share >= single_token_share)
    return s.groupby(["architecture", "seed", "class"]).agg(
        density_median=("density", "median"), entropy_median=("token_entropy", "median"), single_token=("single_token", "mean")
    )


def verdict_surface(by_class: pd.DataFrame) -> Verdict:
    """Claim 3. Rule: per architecture, in the median over seeds, unstable latents fire less often
    AND are more often explained by a single token than stable ones."""
    rule = "per architecture (median over seeds): unstable fire less often and are more often single-token than stable"
    paper = "unstable features are dominated by low-frequency, surface-form triggers"
    ok, parts = {}, []
    for arch, g in by_class.groupby(level="architecture"):
        g = g.droplevel("architecture")
        if not {"stable", "unstable"} <= set(g.index.get_level_values("class")):
            continue
        un, st = g.xs("unstable", level="class"), g.xs("stable", level="class")
        seeds = un.index.intersection(st.index)
        un, st = un.loc[seeds], st.loc[seeds]
        fewer = float((un.density_median - st.density_median).median()) < 0
        single = float((un.single_token - st.single_token).median()) > 0
        ok[arch] = fewer and single
        parts.append(
            f"{arch}: freq. {un.density_median.median():.1e} vs {st.density_median.median():.1e}, "
            f"single-token {spread(un.single_token, '.2f')} vs {spread(st.single_token, '.2f')}"
        )
    outcome, which = per_group_outcome(ok)
    return Verdict(
        "3 · unstable = rare surface-form triggers",
        paper,
        "unstable vs stable: " + "; ".join(parts) + (f" ({which})" if ok else ""),
        outcome,
        rule,
    )


# --------------------------------------------------------------------------------------------
# claim 4: reproducible subspaces, with size-matched controls
# --------------------------------------------------------------------------------------------


def class_dimension(
    dec_a: torch.Tensor, dec_b: torch.Tensor, cls_a: np.ndarray, cls_b: np.ndarray, group: str, cap: int, energy: float = 0.9
) -> int:
    """The dimension a class's subspace is compared at: the effective rank (``energy`` of the
    squared energy of its unit decoder rows) of the class, the smaller of the two seeds', capped
    at ``cap``; 0 if the class is empty in a seed. Comparing at a fixed smaller dimension would pick
    an arbitrary part of a larger shared subspace in each seed and miss the reproducibility (the
    synthetic positive control of study 2 shows it)."""
    dims = []
    for dec, cls in ((dec_a, cls_a), (dec_b, cls_b)):
        idx = np.flatnonzero(cls == group)
        if len(idx) == 0:
            return 0
        dims.append(subspaces.effective_rank(unit_rows(dec[idx].detach(), torch.float64), energy))
    return int(min(min(dims), cap))


def comparison_dimension(dec_a: torch.Tensor, dec_b: torch.Tensor, cls_a: np.ndarray, cls_b: np.ndarray, cap: int) -> int:
    """The dimension claim 4 compares at: the unstable class's (:func:`class_dimension`, at most
    ``cap``), and no more than the stable class holds in either seed (its control is compared at
    the same dimension)."""
    dim = class_dimension(dec_a, dec_b, cls_a, cls_b, "unstable", cap)
    return int(min(dim, *[int((c == "stable").sum()) for c in (cls_a, cls_b)]))


def _overlap(rows_a: torch.Tensor, rows_b: torch.Tensor, dim: int) -> float:
    return subspaces.projection_overlap(subspaces.top_subspace(rows_a, dim), subspaces.top_subspace(rows_b, dim))


def subspace_controls(
    dec_a: torch.Tensor,
    dec_b: torch.Tensor,
    cls_a: np.ndarray,
    cls_b: np.ndarray,
    dim: int,
    cov: torch.Tensor,
    generator: torch.Generator,
    n_draws: int,
) -> pd.DataFrame:
    """Projection overlap of two seeds' top-``dim`` subspaces of a class of latents, against
    controls of the same size: ``random subset`` (as many live latents as the class, drawn at
    random in each seed), ``data PCA`` (the overlap of the class's subspace in seed a with the
    data's own top-``dim`` principal subspace: a large set of rows in a low-dimensional space
    reproduces it whatever they are), ``covariance`` and ``random`` (two subspaces spanned by
    ``dim`` draws from N(0, cov), resp. Haar-random). One row per (group, draw)."""
    rows = []
    live_a, live_b = np.flatnonzero(cls_a != "dead"), np.flatnonzero(cls_b != "dead")
    lam, vec = torch.linalg.eigh(cov.double())
    pca = vec[:, torch.argsort(lam, descending=True)[:dim]].T
    for group in ("unstable", "stable"):
        ia, ib = np.flatnonzero(cls_a == group), np.flatnonzero(cls_b == group)
        if min(len(ia), len(ib)) < dim:
            continue
        qa = subspaces.top_subspace(dec_a[ia], dim)
        rows.append(
            {
                "group": group,
                "control": "across seeds",
                "draw": 0,
                "n": len(ia),
                "overlap": subspaces.projection_overlap(qa, subspaces.top_subspace(dec_b[ib], dim)),
            }
        )
        rows.append(
            {"group": group, "control": "data PCA", "draw": 0, "n": len(ia), "overlap": subspaces.projection_overlap(qa, pca)}
        )
        for draw in range(n_draws):
            pa = torch.from_numpy(np.sort(live_a[torch.randperm(len(live_a), generator=generator)[: len(ia)].numpy()]))
            pb = torch.from_numpy(np.sort(live_b[torch.randperm(len(live_b), generator=generator)[: len(ib)].numpy()]))
            rows.append(
                {
                    "group": group,
                    "control": "random subset",
                    "draw": draw,
                    "n": len(ia),
                    "overlap": _overlap(dec_a[pa], dec_b[pb], dim),
                }
            )
    d = dec_a.shape[1]
    for draw in range(n_draws):
        for ref in ("covariance", "random"):
            if ref == "random":
                qa, qb = (
                    subspaces.random_subspace(dim, d, generator, dtype=torch.float64),
                    subspaces.random_subspace(dim, d, generator, dtype=torch.float64),
                )
            else:
                qa, qb = (
                    subspaces.covariance_subspace(dim, cov.double(), generator),
                    subspaces.covariance_subspace(dim, cov.double(), generator),
                )
            rows.append(
                {"group": ref, "control": "reference", "draw": draw, "n": dim, "overlap": subspaces.projection_overlap(qa, qb)}
            )
    return pd.DataFrame(rows)


def principal_cosines(dec_a: torch.Tensor, dec_b: torch.Tensor, ia: np.ndarray, ib: np.ndarray, dim: int) -> np.ndarray:
    """cos θ of the principal angles between two seeds' top-``dim`` subspaces of a latent set."""
    qa, qb = subspaces.top_subspace(dec_a[ia], dim), subspaces.top_subspace(dec_b[ib], dim)
    return torch.cos(subspaces.principal_angles(qa, qb)).numpy()


def low_rank_rows(dec: torch.Tensor, classes: np.ndarray, generator: torch.Generator, energy: float = 0.9) -> pd.DataFrame:
    """Effective rank (``energy`` of the squared energy) of each live class's unit decoder rows,
    against as many live latents drawn at random (size-matched) and as many random unit vectors."""
    rows = []
    live = np.flatnonzero(classes != "dead")
    for group in LIVE_CLASSES:
        idx = np.flatnonzero(classes == group)
        if len(idx) < 2:
            continue
        sub = live[torch.randperm(len(live), generator=generator)[: len(idx)].numpy()]
        rows.append(
            {
                "group": group,
                "n": len(idx),
                "eff_rank": subspaces.effective_rank(unit_rows(dec[idx].detach(), torch.float64), energy),
                "eff_rank_random_subset": subspaces.effective_rank(unit_rows(dec[sub].detach(), torch.float64), energy),
                "eff_rank_random_vectors": subspaces.effective_rank(
                    torch.randn(len(idx), dec.shape[1], generator=generator), energy
                ),
            }
        )
    return pd.DataFrame(rows)


def verdict_subspace(overlaps: pd.DataFrame, ranks: pd.DataFrame) -> Verdict:
    """Claim 4. Rule: the unstable class's cross-seed subspace overlap exceeds the 95th percentile
    of size-matched random subsets of live latents and the covariance reference, AND its effective
    rank is below 0.8 × that of as many randomly chosen live latents."""
    rule = (
        "unstable overlap across seeds > 95th percentile of size-matched random subsets and of the covariance "
        "reference; effective rank < 0.8 × that of size-matched random live latents"
    )
    paper = "unstable features live in reproducible low-rank subspaces"
    un = overlaps[(overlaps.group == "unstable") & (overlaps.control == "across seeds")].overlap
    if un.empty:
        return Verdict(
            "4 · unstable features share reproducible subspaces", paper, "no unstable class large enough", "untested", rule
        )
    rnd = overlaps[(overlaps.group == "unstable") & (overlaps.control == "random subset")].overlap
    cov = overlaps[overlaps.group == "covariance"].overlap
    pca = overlaps[(overlaps.group == "unstable") & (overlaps.control == "data PCA")].overlap
    r = ranks[ranks.group == "unstable"]
    reproducible = un.mean() > max(
        np.quantile(rnd, 0.95) if len(rnd) else -np.inf, np.quantile(cov, 0.95) if len(cov) else -np.inf
    )
    low_rank = bool(len(r)) and float(r.eff_rank.mean()) < 0.8 * float(r.eff_rank_random_subset.mean())
    ours = (
        f"overlap {spread(un)} vs size-matched random subsets {rnd.mean():.3f} (95th pct {np.quantile(rnd, 0.95):.3f}), "
        f"covariance {cov.mean():.3f}, with data PCA {pca.mean():.3f}; effective rank {r.eff_rank.mean():.1f} vs "
        f"{r.eff_rank_random_subset.mean():.1f} for random live latents"
    )
    outcome = "agrees" if reproducible and low_rank else "partly" if reproducible or low_rank else "disagrees"
    return Verdict("4 · unstable features share reproducible subspaces", paper, ours, outcome, rule)


# --------------------------------------------------------------------------------------------
# claim 5: pooling
# --------------------------------------------------------------------------------------------


def pooled_procedure(
    acts,
    single: dict,
    single_keys: dict,
    groups: list[tuple[int, ...]],
    spec,
    sae_cfg,
    store,
    *,
    tau: float,
    refit_tokens: int,
    batch_size: int,
) -> tuple[list, dict, pd.DataFrame]:
    """Pool each disjoint seed group into one dictionary and refit it (frozen decoder), and refit
    every single seed the same way as a control. Returns ``(pooled SAEs, controls by seed, info)``."""
    from ..analyses import pooling

    refit = dict(train_tokens=refit_tokens, batch_size=batch_size, tau=tau)
    pooled, info = [], []
    for gi, grp in enumerate(tqdm(groups, desc="pooled replicates")):
        pdict = pooling.pool_decoders([single[s].W_dec for s in grp], tau, size=spec.d_sae)
        sae, art = pooling.refit_pooled_sae(
            acts,
            pdict.directions,
            spec.with_seed(1000 + gi),
            sae_cfg,
            store,
            sources=[single_keys[s] for s in grp],
            encoder_init=pooling.pooled_encoder_init(pdict, [single[s] for s in grp]),
            **refit,
        )
        pooled.append(sae)
        info.append(
            {
                "group": grp,
                "directions": len(pdict),
                "found_in_all_seeds": float((pdict.support == len(grp)).double().mean()),
                "refit_tokens_per_s": art.manifest["summary"]["tokens_per_second"],
            }
        )
    controls = {}
    for s in tqdm(list(single), desc="single-seed refit controls"):
        own = single[s]
        controls[s], _ = pooling.refit_pooled_sae(
            acts,
            own.W_dec.detach(),
            spec.with_seed(2000 + s),
            sae_cfg,
            store,
            sources=[single_keys[s]],
            encoder_init=(own.W_enc.detach().T, own.b_enc.detach()),
            **refit,
        )
    return pooled, controls, pd.DataFrame(info)


def replicate_match(pooled: list, single: dict, groups: list[tuple[int, ...]], taus: Sequence[float]) -> pd.DataFrame:
    """Share of features matched between independent replicates (both directions, at each τ):
    pooled replicate pairs, and single-seed SAEs drawn from different groups."""
    from ..analyses.seed_stability import pair_match_fraction

    rows = []
    for tau in taus:
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                rows.append(
                    {"kind": "pooled + refit", "tau": tau, "match": pair_match_fraction(pooled[a].W_dec, pooled[b].W_dec, tau)}
                )
                for sa in groups[a]:
                    for sb in groups[b]:
                        rows.append(
                            {
                                "kind": "single seed",
                                "tau": tau,
                                "match": pair_match_fraction(single[sa].W_dec, single[sb].W_dec, tau),
                            }
                        )
    return pd.DataFrame(rows)


def verdict_pooling(match: pd.DataFrame, quality_table: pd.DataFrame, tau: float, ev_tolerance: float = 0.01) -> Verdict:
    """Claim 5. Rule: the share of features matched between independent pooled replicates at τ is
    higher than between single-seed SAEs, at an EV within ``ev_tolerance`` of the single seed with
    the same refit (the fair control: the refit is extra training)."""
    rule = f"replicate match at τ: pooled > single seed, and EV pooled ≥ EV (single seed + same refit) − {ev_tolerance}"
    paper = "pooling unique cross-seed features gives a more stable SAE at the same explained variance"
    m = match[match.tau == tau]
    mp, ms = m[m.kind == "pooled + refit"].match, m[m.kind == "single seed"].match
    ev = quality_table.groupby("kind").explained_variance
    evp, evc = ev.mean().get("pooled + refit", np.nan), ev.mean().get("single seed + refit", np.nan)
    ok_match, ok_ev = mp.mean() > ms.mean(), evp >= evc - ev_tolerance
    ours = (
        f"match pooled {spread(mp)} vs single {spread(ms)}; EV pooled {spread(ev.get_group('pooled + refit'))} vs "
        f"single + refit {spread(ev.get_group('single seed + refit'))}"
    )
    outcome = "agrees" if ok_match and ok_ev else "partly" if ok_match or ok_ev else "disagrees"
    return Verdict("5 · pooling: more stable at the same EV", paper, ours, outcome, rule)


# --------------------------------------------------------------------------------------------
# anchors from prior work (Paulo & Belrose 2025)
# --------------------------------------------------------------------------------------------


def verdict_size_trend(per_seed: pd.DataFrame, architecture: str = "topk") -> Verdict:
    """Paulo & Belrose: larger SAEs share fewer latents across seeds. Rule: the live fraction stable
    of ``architecture`` at the largest size is below that at the smallest by more than the larger of
    the two seed sd's."""
    rule = "fraction stable (live) at the largest size < at the smallest, by more than the seed sd"
    paper = "larger SAEs share fewer latents across seeds (Paulo & Belrose 2025)"
    g = per_seed[per_seed.architecture == architecture].groupby("expansion").stable
    if g.ngroups < 2:
        return Verdict("larger dictionaries share less", paper, "one size only", "untested", rule)
    lo, hi = min(g.groups), max(g.groups)
    a, b = g.get_group(lo), g.get_group(hi)
    margin = np.nanmax([a.std(ddof=1), b.std(ddof=1), 0.0])
    outcome = "agrees" if b.mean() < a.mean() - margin else "disagrees"
    return Verdict(
        "larger dictionaries share less", paper, f"{architecture} {lo}× {spread(a)} → {hi}× {spread(b)}", outcome, rule
    )


def verdict_relu_vs_topk(per_seed: pd.DataFrame, expansion: int, dup: pd.DataFrame) -> Verdict:
    """Paulo & Belrose: ReLU + L1 SAEs are more stable than TopK at equal sparsity. Rule: the
    standard SAE's live fraction stable exceeds TopK's by more than the seed sd, AND its
    within-seed duplication is below 10 % (else its stability is a collapse, not agreement)."""
    rule = "standard > topk fraction stable (live) by more than the seed sd, with < 10 % within-seed duplicates"
    paper = "ReLU + L1 SAEs are more stable than TopK (Paulo & Belrose 2025)"
    at = per_seed[per_seed.expansion == expansion].groupby("architecture").stable
    if not {"standard", "topk"} <= set(at.groups):
        return Verdict("ReLU+L1 more stable than TopK", paper, "not both trained", "untested", rule)
    s, t = at.get_group("standard"), at.get_group("topk")
    dup_s = dup[(dup.architecture == "standard") & (dup.expansion == expansion)].duplicate_share
    margin = np.nanmax([s.std(ddof=1), t.std(ddof=1), 0.0])
    more, collapsed = s.mean() > t.mean() + margin, dup_s.mean() >= 0.10
    outcome = "agrees" if more and not collapsed else "partly" if more else "disagrees"
    return Verdict(
        "ReLU+L1 more stable than TopK",
        paper,
        f"standard {spread(s)} vs topk {spread(t)}; standard within-seed duplicates {spread(dup_s)}",
        outcome,
        rule,
    )


def null_excess(per_seed: pd.DataFrame, nulls: pd.DataFrame, expansion: int) -> pd.Series:
    """Per architecture at ``expansion``: live fraction stable minus the largest null's at the same
    layer (nulls differ by layer: they follow that layer's covariance), averaged over layers."""
    trained = per_seed[per_seed.expansion == expansion].groupby(["architecture", "layer"]).stable.mean()
    null = nulls[nulls.expansion == expansion].groupby(["architecture", "layer"]).fraction_stable.max()
    return (trained - null.reindex(trained.index)).groupby(level="architecture").mean().rename("excess over null")
