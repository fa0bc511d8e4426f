"""Study 6, part 4: steering handles — do unstable features steer worse than stable ones of the
same theme, or as well once their low-rank subspace is used?

SAEs: study 5's residual TopK SAEs at its steering layer (``flow.steer_layer``), one per seed of
``study05.seeds`` (from the cache when notebook 05 ran on the profile, else trained through
``flow.train_window``). Each live latent (at least ``study05.min_firings`` firings on held-out
tokens) gets study 1's stability class across those seeds at cosine ≥ ``study06.tau``: stable
(matched in every other seed) or unstable (in none); partial and dead latents take no part.

Per theme and SAE seed (:func:`pick_pair`): the candidates of each class are its latents with
positive theme enrichment (``steering.theme_enrichment``), non-token features only where the class
has any (as ``flow.pick_seed_features``). The class whose best candidate is less enriched gives
that candidate; the other class gives its candidate nearest in enrichment, so the two picks are
matched on enrichment as far as the SAE allows (both are reported).

Three handles per (theme, seed), each a unit direction:

* ``stable``: the stable pick's decoder row;
* ``unstable``: the unstable pick's decoder row;
* ``unstable subspace`` (:func:`subspace_handle`): the unit mean of the unit decoder rows of the
  unstable pick and of every live unstable latent of every seed whose decoder row has cosine ≥
  ``study06.handle_subspace_cosine`` with it — the reproducible low-rank subspace study 1 finds
  the unstable features in, steered along its mean direction instead of one basis vector.

Each handle is added at the steering layer at every token, ``s · n · v̂`` with ``n`` the median
residual norm there, at each ``s`` of ``study06.handle_scales`` (study 5's constant single-layer
schedule), on study 5's neutral prompts and sampling (same seeds per prompt and sample, so the
three handles see the same draws); each generation is scored by study 5's scorer,
combined = theme probability × coherence (``flow.score_generations``). A handle's score is the
mean combined score over its generations (prompts × samples × strengths).

Rule (:func:`handle_verdicts`, fixed before any number was read): paired per (theme, SAE seed),
d1 = score(stable) − score(unstable) and d2 = score(stable) − score(unstable subspace); 95 % t
intervals over the pairs; Holm over the two comparisons (two-sided p against each threshold; a
decided outcome whose adjusted p ≥ 0.05 becomes inconclusive).

* "unstable features steer worse": ``decide(d1 interval, 0, "above")``;
* "as well once the subspace is used": non-inferiority, ``decide(d2 interval, EQUIVALENCE_MARGIN,
  "below")`` — agrees when the whole interval lies below the margin (the subspace is at most
  0.05 worse than the stable feature, or better), disagrees when it lies above it.

Premise (added before the rule met any real profile's numbers, after the smoke run showed handles
that do not steer at all, where the margin makes "as well" trivially true): the comparison means
something only where the stable handle steers. Only themes whose unsteered theme score is below
``study05.judge_ceiling`` take part (as in study 5), and the paired gain of the stable handle over
the unsteered baseline, ``steer`` = score(stable) − score(unsteered), must have a t interval above 0;
where it does not, a decided outcome becomes inconclusive.

Fewer than ``MIN_PAIRS`` pairs: untested.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import corpus
from ..analyses import features, flow, seed_stability, steering
from ..analyses.cosine import unit_rows
from ..analyses.intervals import decide, holm, t_interval, t_pvalue
from . import flow as sf
from .verdicts import Verdict, spread

#: The three steering handles, in plotting order.
HANDLES = ("stable", "unstable", "unstable subspace")
#: Non-inferiority margin of the subspace rule, in combined-score units (theme × coherence, 0..1).
EQUIVALENCE_MARGIN = 0.05
#: Fewer (theme, seed) pairs than this: the rule says untested.
MIN_PAIRS = 3
#: The rule's premise, as the findings table states it.
PREMISE = (
    "premise: only themes whose unsteered theme score is below study05.judge_ceiling, and the stable handles steer "
    "(stable − unsteered, paired, t interval above 0); otherwise inconclusive"
)

__all__ = [
    "HANDLES",
    "EQUIVALENCE_MARGIN",
    "MIN_PAIRS",
    "pick_pair",
    "subspace_handle",
    "Handles",
    "steer_handles",
    "pair_table",
    "handle_verdicts",
    "handle_summary",
]


def pick_pair(enrichment: np.ndarray, classes: np.ndarray, token_feature: np.ndarray) -> dict | None:
    """The stable and the unstable latent of one theme in one SAE, matched on enrichment (rule in
    the module docstring): ``{"stable": f, "unstable": g}`` or None when a class has no latent
    with positive enrichment. ``enrichment`` [F] for the theme, ``classes`` [F] from
    ``seed_stability.stability_class``, ``token_feature`` [F] bool."""
    e, cls, tok = np.asarray(enrichment, float), np.asarray(classes), np.asarray(token_feature, bool)
    pools = {}
    for c in ("stable", "unstable"):
        cand = (cls == c) & (e > 0)
        pools[c] = np.flatnonzero(cand & ~tok) if (cand & ~tok).any() else np.flatnonzero(cand)
        if not len(pools[c]):
            return None
    best = {c: int(pools[c][np.argmax(e[pools[c]])]) for c in pools}
    weaker = "unstable" if e[best["unstable"]] <= e[best["stable"]] else "stable"
    other = "stable" if weaker == "unstable" else "unstable"
    target = e[best[weaker]]
    pool = pools[other]
    # nearest in enrichment; ties: the more enriched, then the lower index
    order = np.lexsort((pool, -e[pool], np.abs(e[pool] - target)))
    return {weaker: best[weaker], other: int(pool[order[0]])}


def subspace_handle(row: Tensor, candidates: Tensor, min_cosine: float) -> tuple[Tensor, int]:
    """``(unit direction, members)``: the unit mean of the unit ``row`` and of the unit rows of
    ``candidates`` [n, d] whose cosine with ``row`` is ≥ ``min_cosine`` (``row`` itself should not
    be among them); ``members`` counts the rows averaged, ``row`` included."""
    u = unit_rows(row.detach().reshape(1, -1).cpu(), torch.float64)
    c = unit_rows(candidates.detach().reshape(-1, u.shape[1]).cpu(), torch.float64)
    close = c[(c @ u[0]) >= min_cosine]
    mean = torch.cat([u, close]).mean(0)
    return (mean / mean.norm().clamp_min(1e-12)).float(), 1 + len(close)


@dataclass
class Handles:
    """What :func:`steer_handles` found: ``classes`` per seed (stable / unstable / partial / dead
    counts), ``picks`` (theme, sae_seed, handle, feature, enrichment, token_feature, members,
    cosine with the pick), ``scored`` (one row per generation, ``flow.score_generations``'s
    columns plus ``handle``), the ``norm`` and ``steer_layer`` used."""

    classes: pd.DataFrame
    picks: pd.DataFrame
    scored: pd.DataFrame
    norm: float
    steer_layer: int


def steer_handles(run) -> Handles:
    """The whole experiment of the module docstring on the run's profile."""
    P, C, S = run.profile, run.profile.study05, run.profile.study06
    model = run.model
    layers = sf.check_study05(C, model.cfg.n_layers, P.sae.k, model.cfg.d_model, P.corpus.source, P.sae.lr_warm_up_fraction)
    sl = sf.steer_layer(C, layers)
    hooks = {p: flow.position_hook(p) for p in flow.window_positions(layers)}
    train_acts = run.activations(list(hooks.values()))
    saes = sf.train_window(train_acts, layers, C, model.cfg.d_model, P.sae.k, sf.sae_config(P.sae, C), run.store, run.runner)
    hook = hooks[("resid", sl)]
    val = run.activations([hook], split="val")[hook]
    val_x, acts = val.tensor(), train_acts[hook]
    seeds = list(C.seeds)
    saes_sl = {s: saes[s][("resid", sl)] for s in seeds}
    decs = {s: saes_sl[s].W_dec.detach().float().cpu() for s in seeds}
    frac = seed_stability.stability_scores([decs[s] for s in seeds], S.tau).fraction
    n_enr = min(C.enrichment_tokens, len(acts))
    classes, enrichment, token = {}, {}, {}
    for i, s in enumerate(seeds):
        top = features.top_activations(saes_sl[s], val_x, C.n_top_activations)
        classes[s] = seed_stability.stability_class(frac[i], np.asarray(top.density) * len(val_x), C.min_firings)
        share = features.surface_statistics(top, val.tokens, val.n_ctx, C.min_firings).single_token_share.to_numpy()
        token[s] = ~(np.isfinite(share) & (share < C.max_token_share))
        enrichment[s] = steering.theme_enrichment(
            saes_sl[s].encode, acts.tensor(n_enr), acts.categories[:n_enr], len(corpus.CATEGORIES)
        )
    unstable_rows = [(s, f) for s in seeds for f in np.flatnonzero(classes[s] == "unstable")]
    picks, directions = [], {}
    for theme in C.themes:
        t = corpus.CATEGORIES.index(theme)
        for s in seeds:
            pair = pick_pair(enrichment[s][t], classes[s], token[s])
            if pair is None:
                continue
            g = pair["unstable"]
            others = [decs[s2][f2] for s2, f2 in unstable_rows if (s2, f2) != (s, g)]
            cands = torch.stack(others) if others else torch.zeros(0, decs[s].shape[1])
            sub, members = subspace_handle(decs[s][g], cands, S.handle_subspace_cosine)
            for handle, f, v, m in (
                ("stable", pair["stable"], decs[s][pair["stable"]], 1),
                ("unstable", g, decs[s][g], 1),
                ("unstable subspace", g, sub, members),
            ):
                v = v / v.norm().clamp_min(1e-12)
                directions[(theme, s, handle)] = v
                picks.append(
                    {
                        "theme": theme,
                        "sae_seed": s,
                        "handle": handle,
                        "feature": int(f),
                        "enrichment": float(enrichment[s][t, f]),
                        "token_feature": bool(token[s][f]),
                        "members": m,
                        "cosine_with_pick": float(v @ (decs[s][f] / decs[s][f].norm())),
                    }
                )
    norm = float(acts.tensor(65_536).norm(dim=1).median())
    scored = _generate(run, directions, sl, norm)
    counts = pd.DataFrame([{"seed": s, **pd.Series(classes[s]).value_counts().to_dict()} for s in seeds]).fillna(0)
    return Handles(counts, pd.DataFrame(picks), scored, norm, sl)


def _generate(run, directions: Mapping[tuple, Tensor], layer: int, norm: float) -> pd.DataFrame:
    """Generate and score every (theme, seed, handle, s) on study 5's prompts, plus one unsteered
    baseline per theme (handle "none", s = 0)."""
    P, C, S = run.profile, run.profile.study05, run.profile.study06
    model, tok = run.model, run.loaded.tokenizer
    rows, plans, cell = [], {}, 0
    cells = [(t, None, "none", 0.0) for t in C.themes]
    cells += [(t, s, h, float(x)) for (t, s, h) in directions for x in S.handle_scales]
    for theme, seed, handle, x in cells:
        plans[cell] = (
            None
            if handle == "none"
            else steering.SteeringPlan("add", {layer: directions[(theme, seed, handle)]}, {layer: x * norm})
        )
        rows += [
            {
                "theme": theme,
                "sae_seed": seed,
                "handle": handle,
                "direction": "toward",
                "s": x,
                "prompt": p,
                "sample": k,
                "cell": cell,
            }
            for p in range(len(C.prompts))
            for k in range(C.samples_per_prompt)
        ]
        cell += 1
    jobs = pd.DataFrame(rows)
    bos = run.loaded.bos_token_id if run.loaded.bos_token_id is not None else tok.bos_token_id
    prompt_ids = [[bos] + tok(t, add_special_tokens=False)["input_ids"] for t in C.prompts]
    clf, anchors = sf.theme_scorers(run, C, corpus.load(P.corpus)[0])
    conts = sf.generate_all(model, jobs, plans, prompt_ids, C, pad_id=tok.eos_token_id)
    return sf.score_generations(jobs, conts, prompt_ids, clf, model, anchors, tok, C)


def pair_table(scored: pd.DataFrame, judge_ceiling: float | None = None) -> pd.DataFrame:
    """Per (theme, SAE seed): each handle's mean combined score (over prompts × samples ×
    strengths), ``d1`` = stable − unstable, ``d2`` = stable − unstable subspace, the theme's
    ``unsteered`` combined score and ``steer`` = stable − unsteered; only pairs where all three
    handles were steered and, with ``judge_ceiling``, only themes whose unsteered theme score is
    below it."""
    base = (
        scored[scored["handle"] == "none"]
        .groupby("theme")
        .agg(unsteered=("combined", "mean"), unsteered_theme=("theme_score", "mean"))
    )
    steered = scored[scored["handle"].isin(HANDLES)]
    wide = steered.pivot_table(index=["theme", "sae_seed"], columns="handle", values="combined", aggfunc="mean")
    wide = wide.reindex(columns=list(HANDLES)).dropna().reset_index()
    wide.columns.name = None
    wide["sae_seed"] = wide["sae_seed"].astype(int)
    wide["d1"] = wide["stable"] - wide["unstable"]
    wide["d2"] = wide["stable"] - wide["unstable subspace"]
    wide = wide.join(base, on="theme")
    wide["steer"] = wide["stable"] - wide["unsteered"]
    if judge_ceiling is not None:
        wide = wide[wide["unsteered_theme"] < judge_ceiling].reset_index(drop=True)
    return wide


def handle_verdicts(pairs: pd.DataFrame, picks: pd.DataFrame | None = None, model: str = "") -> list[Verdict]:
    """The two verdicts of the module docstring's rule from :func:`pair_table`'s ``pairs``
    (``picks``, when given, adds the mean enrichment of each class's picks to the text)."""
    paper = "not measured (issue 20: study 5's steering scorer × study 1's stability and subspaces)"
    specs = [
        (
            "unstable features steer worse than stable ones of the same theme at the same strength",
            "d1",
            0.0,
            "above",
            "unstable",
            "paired per (theme, SAE seed): d1 = combined score (theme × coherence) of the stable handle − the unstable "
            f"one; 95 % t interval above 0 (Holm over the 2 handle comparisons); fewer than {MIN_PAIRS} pairs: untested; "
            + PREMISE,
        ),
        (
            "unstable features steer as well as stable ones once their low-rank subspace is used",
            "d2",
            EQUIVALENCE_MARGIN,
            "below",
            "unstable subspace",
            "paired per (theme, SAE seed): d2 = combined score of the stable handle − the unstable subspace's (unit mean of "
            "the live unstable rows of every seed within the cosine threshold of the pick); 95 % t interval below the "
            f"margin +{EQUIVALENCE_MARGIN} (non-inferiority; Holm over the 2 comparisons); fewer than {MIN_PAIRS} pairs: untested; "
            + PREMISE,
        ),
    ]
    found, pvals = [], []
    for claim, col, threshold, side, other, rule in specs:
        d = pairs[col].to_numpy(float) if col in pairs else np.array([])
        if np.isfinite(d).sum() < MIN_PAIRS:
            found.append(
                Verdict(claim, paper, f"{model}{np.isfinite(d).sum()} (theme, seed) pairs < {MIN_PAIRS}", "untested", rule)
            )
            pvals.append(None)
            continue
        mean, interval, n = t_interval(d)
        ours = (
            f"{model}{col} {mean:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}] (n={n} pairs); stable "
            f"{spread(pairs['stable'])} vs {other} {spread(pairs[other])}"
        )
        if picks is not None and len(picks):
            e = picks.groupby("handle").enrichment.mean()
            ours += f"; enrichment of the picks: stable {e.get('stable', np.nan):.2f}, unstable {e.get('unstable', np.nan):.2f}"
            if other == "unstable subspace":
                ours += f"; subspace members {picks[picks.handle == other].members.mean():.1f} on average"
        found.append(Verdict(claim, paper, ours, decide(interval, threshold, side), rule, statistic=mean, interval=interval, n=n))
        pvals.append(t_pvalue(d, threshold, "two-sided"))
    premise = _premise(pairs)
    if premise is not None:
        holds, text = premise
        found = [
            dataclasses.replace(
                v,
                ours=f"{v.ours}; premise: {text}",
                outcome=v.outcome if holds or v.outcome not in ("agrees", "disagrees") else "inconclusive",
            )
            for v in found
        ]
    tested = [p for p in pvals if p is not None]
    adjusted = iter(holm(tested)) if tested else iter(())
    for i, p in enumerate(pvals):
        if p is None:
            continue
        adj, v = float(next(adjusted)), found[i]
        outcome = "inconclusive" if v.outcome in ("agrees", "disagrees") and adj >= 0.05 else v.outcome
        found[i] = dataclasses.replace(v, outcome=outcome, ours=f"{v.ours}; Holm-adjusted p = {adj:.3f}")
    return found


def _premise(pairs: pd.DataFrame) -> tuple[bool, str] | None:
    """Whether the stable handles steer (paired gain over the unsteered baseline, t interval
    above 0), with its text; None with fewer than ``MIN_PAIRS`` pairs."""
    d = pairs["steer"].to_numpy(float) if "steer" in pairs else np.array([])
    if np.isfinite(d).sum() < MIN_PAIRS:
        return None
    mean, (lo, hi), n = t_interval(d)
    holds = decide((lo, hi), 0.0, "above") == "agrees"
    return holds, (
        f"stable − unsteered {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={n}): "
        + ("the stable handles steer" if holds else "the stable handles do not steer, so no comparison is decided")
    )


def handle_summary(scored: pd.DataFrame) -> pd.DataFrame:
    """Per (theme, SAE seed, handle): mean combined and theme score, 95 % half-width over the
    handle's generations (1.96 · se) and n; the unsteered baseline has handle "none"."""
    g = scored.groupby(["theme", "sae_seed", "handle"], dropna=False)
    out = g.agg(
        combined=("combined", "mean"), sd=("combined", "std"), n=("combined", "size"), theme_score=("theme_score", "mean")
    )
    out["combined_ci"] = 1.96 * out.pop("sd") / np.sqrt(out["n"])
    return out.reset_index()
