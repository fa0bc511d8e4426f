"""Study 2 on a token-budget ladder: have the quantities its verdicts read levelled off?

Per architecture of ``architectures`` and seed of ``convergence_seeds``: one warmup-stable-decay
ladder (:mod:`sae_studies.ladder`, rungs ``convergence_tokens``) of the main synthetic model's SAE
(its F, k, learning rate and batch). At every rung the same per-seed numbers the verdicts read off
the main SAEs (:func:`sae_studies.studies.synthetic.evaluate`): EV, isolated recovery and
stability, group stability against its rotation null, subspace recovery. The verdicts on the main
model's claims are read at the ladder's top rung and gated over the whole ladder on the
quantities each reads (:data:`READS`; :func:`ladder_verdict`).

The phase diagram and the dictionary-size sweep train other specs (ranks, directions, F) at
``sweep_train_tokens``; no ladder covers them, and their verdicts say "no ladder".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch

from ..analyses import synthetic as syn
from ..config import Profile
from ..saes import registry
from ..store import Store
from . import budget_ladders as BL
from .synthetic import dictionary_size, evaluate, sae_config
from .verdicts import Verdict

__all__ = ["QUANTITIES", "READS", "arms", "ladder_table", "ladder_verdict", "gate_table"]

QUANTITIES = {
    "ev": "EV",
    "iso_recovered": "isolated features recovered",
    "isolated_stable": "isolated latents' fraction stable",
    "group_stable": "group latents' fraction stable",
    "group_mean_best": "group latents' mean best cosine",
    "subspace_cos2": "group spans' cos² to the truth",
    "cross_seed_cos2": "group spans' cos² across seeds",
}
"""Columns of :func:`ladder_table` that the ladder figure and gate table show, with their labels."""

READS = {
    "isolated": ("iso_recovered", "isolated_stable"),
    "low_rank_unstable": ("isolated_stable", "group_stable", "group_mean_best"),
    "subspaces": ("subspace_cos2", "cross_seed_cos2"),
}
"""``synthetic_claims.verdict_<name>`` on the main model → the ladder quantities it reads."""


def arms(profile: Profile, spec: syn.LowRankSpec) -> list[BL.Arm]:
    """One arm per architecture of ``study02.architectures``: the main model's SAE (F from
    ``dict_factor``, ``k``) at the study's learning rate, labelled by the architecture."""
    cfg = profile.study02
    d_sae = dictionary_size(cfg.dict_factor, spec.n_gt_dims, cfg.n_isolated)
    sae_cfg = sae_config(profile, max(cfg.convergence_tokens))
    return [
        BL.Arm(arch, lambda s, arch=arch: registry.get(arch).spec(d_sae, cfg.k).with_seed(s), sae_cfg)
        for arch in cfg.architectures
    ]


def ladder_table(
    profile: Profile, store: Store, acts: syn.SyntheticActivations, eval_x: torch.Tensor, progress: bool = True
) -> pd.DataFrame:
    """The ladder's long table: architecture, tokens, then the per-seed row of
    :func:`~sae_studies.studies.synthetic.evaluate` (seed, ev, iso_recovered, ...) at every rung."""
    cfg = profile.study02

    def rows(label: str, saes: list, seeds: Sequence[int]) -> list[dict]:
        # a fixed generator per rung: the rotation null and random subspaces do not vary between rungs
        res = evaluate(saes, acts, eval_x, cfg, label, seeds, torch.Generator().manual_seed(cfg.data_seed))
        return res.per_seed.drop(columns=["architecture"]).to_dict("records")

    return BL.ladder_table(
        acts,
        arms(profile, acts.spec),
        list(cfg.convergence_tokens),
        cfg.convergence_seeds,
        store,
        rows,
        cfg.batch_size,
        cfg.ladder_decay_fraction,
        label_column="architecture",
        progress=progress,
    )


def _gate(table: pd.DataFrame, quantities: Sequence[str], up_to: int | None):
    """The gate of every one of ``quantities`` for every architecture on the rungs ≤ ``up_to``:
    converged only if all have (:func:`budget_ladders.weakest`); None without a ladder."""
    found = [BL.convergence(table, q, None, up_to, "architecture", QUANTITIES[q]) for q in quantities]
    found = [c for c in found if c is not None]
    return BL.weakest(found) if found else None


def ladder_verdict(
    before: Verdict, rule: Callable[[pd.DataFrame], Verdict], table: pd.DataFrame, reads: str, budget: int
) -> Verdict:
    """``rule`` (a ``synthetic_claims.verdict_*`` on per-seed rows) applied to the ladder's top rung
    (its rows are the per-seed rows the main model's verdict reads), gated on the quantities it
    reads (``READS[reads]``) for every architecture over the whole ladder, with ``before`` (the
    rule on the main model at ``budget`` rows) as its ``previous``
    (:func:`budget_ladders.read_gated_at_top`); ``before`` stands without a ladder."""
    quantities = READS[reads]
    return BL.read_gated_at_top(
        lambda tokens: rule(table[table.tokens == tokens]),
        before,
        lambda up_to: _gate(table, quantities, up_to),
        budget,
        until="2026-12-07",
    )


def gate_table(table: pd.DataFrame, up_to: int | None = None) -> pd.DataFrame:
    """The gate of each quantity of :data:`QUANTITIES` per architecture at ``up_to``."""
    return BL.gate_table(table, QUANTITIES, up_to, by="architecture")
