"""Study 6 on a token-budget ladder: has each candidate's stability gap to TopK levelled off?

The stability rule (:func:`.architectures.stability_verdicts`) reads, per seed, Δ = live fraction
stable of a candidate (HierarchicalTopK read at ``k``, KronSAE) − TopK's at ``train_tokens``. Per
seed of ``convergence_seeds``, one warmup-stable-decay ladder (:mod:`sae_studies.ladder`, rungs
``convergence_tokens``) of every architecture of ``convergence_architectures``, with the study's
F, k, learning rate and batch. At every rung the held-out EV, L0, dead share and live fraction
stable (study 1's score among the ladder's seeds at that rung) of each, and the paired gap Δ of
each candidate. The rule's verdict on a candidate is read on the ladder's top rung and gated on that
gap over the whole ladder (:func:`ladder_verdicts`): the table's budget is where every architecture
is compared, the ladder's top where the gap has had the longest to level off.

The ladder's seeds are fewer than the table's (fraction stable falls as seeds are added: a latent
must match in every other seed), so its levels sit above the table's: a verdict read there is a
statement about 3-seed stability, and its interval is a 3-seed interval.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import quality, seed_stability
from ..config import Profile
from ..ladder import train_ladder
from ..study_config import Study06Config
from . import architectures as A
from . import budget_ladders as BL
from .verdicts import Verdict

__all__ = [
    "GAP",
    "QUANTITIES",
    "label",
    "arms",
    "rung_rows",
    "ladder_table",
    "gaps",
    "ladder_verdicts",
    "gate_table",
    "lr_sweep",
]

GAP = "Δ stable"
QUANTITIES = {
    "explained_variance": "held-out EV",
    "stable": "live fraction stable",
    GAP: "Δ fraction stable vs TopK",
}
"""Columns of :func:`gaps` that the ladder figure and gate table show, with their labels."""


def label(cfg: Study06Config, arch: str) -> str:
    """An architecture's label in the ladder: its table row's (HierarchicalTopK read at ``k``)."""
    return f"{A.HIERARCHICAL}@{cfg.k}" if arch == A.HIERARCHICAL else arch


def _read_k(cfg: Study06Config, arch: str) -> int | None:
    return cfg.k if arch == A.HIERARCHICAL else None


def arms(profile: Profile, d_sae: int) -> list[BL.Arm]:
    """One arm per architecture of ``convergence_architectures`` at F = ``d_sae``, with the
    study's SAE settings (`architectures.sae_config`: its rate and batch)."""
    cfg = profile.study06
    sae_cfg = A.sae_config(profile)
    return [
        BL.Arm(label(cfg, arch), lambda s, arch=arch: A.spec(cfg, arch, d_sae, s), sae_cfg)
        for arch in cfg.convergence_architectures
    ]


def rung_rows(saes: Sequence, seeds: Sequence[int], read_k: int | None, eval_x: torch.Tensor, cfg: Study06Config) -> list[dict]:
    """One row per seed of one architecture at one rung: held-out EV, L0, dead share and live
    fraction stable among these seeds' SAEs (:func:`architectures.quality_and_stability`), the k
    it is read at and its within-seed duplicate share (the table's premises: L0 on target, not
    collapsed)."""
    scores = seed_stability.stability_scores([m.W_dec for m in saes], cfg.tau)
    rows = []
    for s, (seed, sae) in enumerate(zip(seeds, saes)):
        held_out, _ = A.quality_and_stability(sae, read_k, eval_x, scores.fraction[s], cfg.min_firings)
        duplicates = seed_stability.duplicate_share(sae.W_dec, cfg.duplicate_cosine)
        rows.append({"seed": seed, **held_out, "read_k": read_k if read_k is not None else cfg.k, "duplicate_share": duplicates})
    return rows


def ladder_table(run, eval_x: torch.Tensor, null_fraction_stable: float | None = None, progress: bool = True) -> pd.DataFrame:
    """The ladder's long table: architecture, tokens, seed, explained_variance, l0, dead_fraction,
    stable (and ``null_fraction_stable``, study 1's covariance null at the ladder's seed count,
    when given)."""
    from ..activations import hook_name

    cfg = run.profile.study06
    hook = hook_name(cfg.layer)
    acts = run.activations([hook])[hook]
    by_label = {label(cfg, a): _read_k(cfg, a) for a in cfg.convergence_architectures}

    def rows(arm_label, saes, seeds):
        out = rung_rows(saes, seeds, by_label[arm_label], eval_x, cfg)
        return [r | {"null_fraction_stable": null_fraction_stable} for r in out] if null_fraction_stable is not None else out

    return BL.ladder_table(
        acts,
        arms(run.profile, cfg.expansion_factor * acts.d),
        list(cfg.convergence_tokens),
        cfg.convergence_seeds,
        run.store,
        rows,
        cfg.batch_size,
        cfg.ladder_decay_fraction,
        label_column="architecture",
        progress=progress,
    )


def lr_sweep(run, eval_x: torch.Tensor, progress: bool = True) -> pd.DataFrame:
    """The check of the study's one learning rate (``study06.convergence_lrs``; empty table when
    unset): per architecture of the ladder, the first ladder seed's ladder up to rung
    ``lr_sweep_rung`` (:func:`budget_ladders.sweep_rungs`) at every rate of the grid (widened by
    factors of 2 while the best sits at its edge, :func:`budget_ladders.widen_sweep`), held-out EV
    at that rung read where the table reads it (HierarchicalTopK at ``k``). Columns: architecture,
    tokens, lr, explained_variance, ``chosen`` (the best rate), ``inside`` (the best ended strictly
    inside the grid), ``study_lr`` and ``ev_given_up`` (best EV − EV at the study's rate; NaN when
    the study's rate was not swept). At the study's rate the sweep's ladder is the main ladder's
    first seed up to that rung."""
    from ..activations import hook_name

    cfg = run.profile.study06
    if not cfg.convergence_lrs:
        return pd.DataFrame()
    hook = hook_name(cfg.layer)
    acts = run.activations([hook])[hook]
    rungs = BL.sweep_rungs(cfg.convergence_tokens, cfg.lr_sweep_rung)
    seed, base = cfg.convergence_seeds[0], A.sae_config(run.profile)
    tables = []
    for arch in tqdm(cfg.convergence_architectures, desc="lr check", disable=not progress):
        spec = A.spec(cfg, arch, cfg.expansion_factor * acts.d, seed)

        def measure(lr, spec=spec, arch=arch):
            lad = train_ladder(
                acts,
                spec,
                dataclasses.replace(base, lr=lr),
                run.store,
                rungs,
                cfg.batch_size,
                cfg.ladder_decay_fraction,
                progress=False,
            )
            encode = A.encoder(lad.saes[-1], _read_k(cfg, arch))
            return quality.reconstruction_metrics(
                encode, lad.saes[-1].decode, eval_x.split(4096), lad.saes[-1].cfg.d_sae
            ).explained_variance

        evs, best, inside = BL.widen_sweep(measure, cfg.convergence_lrs)
        given_up = evs[best] - evs[base.lr] if base.lr in evs else float("nan")
        tables.append(BL.sweep_table(label(cfg, arch), rungs[-1], (evs, best, inside), study_lr=base.lr, ev_given_up=given_up))
    return pd.concat(tables, ignore_index=True)


def gaps(table: pd.DataFrame, reference: str = A.REFERENCE) -> pd.DataFrame:
    """The ladder table with column :data:`GAP`: each row's fraction stable minus the reference's
    of the same rung and seed (NaN on the reference's own rows, which are kept for the figure)."""
    ref = table[table.architecture == reference].set_index(["tokens", "seed"]).stable
    if ref.empty:
        raise ValueError(f"the ladder table has no {reference!r} rows; it has {sorted(set(table.architecture))}")
    out = table.copy()
    out[GAP] = out.stable.to_numpy() - ref.reindex(pd.MultiIndex.from_frame(out[["tokens", "seed"]])).to_numpy()
    out.loc[out.architecture == reference, GAP] = float("nan")
    return out


def ladder_verdicts(
    gap_table: pd.DataFrame,
    table_verdicts: Sequence[Verdict],
    candidates: Sequence[str],
    cfg: Study06Config,
    model: str = "",
) -> list[Verdict]:
    """The stability rule (:func:`architectures.stability_verdicts`) on each candidate that has a
    ladder, read at the ladder's top rung and gated on the candidate's gap Δ over the whole ladder
    (issue 18: a verdict is read where its quantity has levelled off, or at the ladder's top
    reported as not converged). The top rung's rows are the rule's per-seed table (its premises
    too: L0 on target, not collapsed, EV within tolerance). ``table_verdicts`` (the rule on the
    table at ``train_tokens``, one per candidate), gated on the rungs up to ``train_tokens``, become
    each verdict's ``previous``; a candidate with no ladder keeps its table verdict ("no ladder")."""
    if len(table_verdicts) != len(candidates):
        raise ValueError(f"one table verdict per candidate: got {len(table_verdicts)} for {list(candidates)}")
    on_ladder = [c for c in candidates if len(gap_table) and c in set(gap_table.architecture)]

    @functools.cache  # one rule call per rung for every candidate (Holm runs over them together)
    def rule_at(tokens: int) -> dict[str, Verdict]:
        rows = gap_table[gap_table.tokens == tokens].rename(columns={"architecture": "variant"})
        untested = A.untested_rows(rows, cfg.collapse_duplicate_share)
        return dict(zip(on_ladder, A.stability_verdicts(rows, on_ladder, collapsed_variants=untested, model=model)))

    return [
        BL.read_at_top(
            lambda t, c=c: rule_at(t)[c],
            before,
            gap_table,
            GAP,
            cfg.train_tokens,
            [c],
            "architecture",
            QUANTITIES[GAP],
            until="2026-12-06",
        )
        if c in on_ladder
        else before
        for c, before in zip(candidates, table_verdicts)
    ]


def gate_table(gap_table: pd.DataFrame, up_to: int | None = None, reference: str = A.REFERENCE) -> pd.DataFrame:
    """The gate of each quantity of :data:`QUANTITIES` per architecture at ``up_to`` (the gap
    per candidate only: the reference has none)."""
    levels = {q: name for q, name in QUANTITIES.items() if q != GAP}
    candidates = gap_table[gap_table.architecture != reference] if len(gap_table) else gap_table
    return pd.concat(
        [
            BL.gate_table(gap_table, levels, up_to, by="architecture"),
            BL.gate_table(candidates, {GAP: QUANTITIES[GAP]}, up_to, by="architecture"),
        ],
        ignore_index=True,
    )
