"""Study 3 on a token-budget ladder: has the gap between HierarchicalTopK and TopK levelled off?

Per seed of ``convergence_seeds``: one warmup-stable-decay ladder (:mod:`sae_studies.ladder`,
rungs ``convergence_tokens``) for TopK at each k of ``ks`` and one for HierarchicalTopK at
K = max(ks), all on the study's activations, dictionary size, learning rate and batch. At every
rung the held-out EV of TopK trained at k and of the hierarchical model encoded at k (its top-k
prefix); the paired gap ΔEV = hierarchical@k − TopK@k of the same seed (both select exactly k
latents, so this is the gap at equal L0 against the TopK front). The Pareto verdict is read on
that gap at the ladder's top rung and gated on it per k over the whole ladder (:func:`ladder_verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import torch

from ..analyses import quality
from ..devices import device_of
from ..saes import registry
from ..study_config import Study03Config
from . import budget_ladders as BL
from .hierarchical import HIERARCHICAL, sae_config
from .hierarchical_claims import verdict_front
from .verdicts import Verdict

__all__ = ["QUANTITIES", "arms", "rung_rows", "ladder_table", "gaps", "ladder_verdict", "gate_table", "budget_evidence"]

GAP = "ΔEV"
QUANTITIES = {
    "EV topk": "EV, TopK trained at k",
    f"EV {HIERARCHICAL}": "EV, HierarchicalTopK at k",
    GAP: "ΔEV, hierarchical − TopK",
}
"""Columns of :func:`gaps` that the ladder figure and gate table show, with their labels."""


def arms(cfg: Study03Config, d_sae: int, sae_cfg, ks: Sequence[int]) -> list[BL.Arm]:
    """TopK at every k and HierarchicalTopK at K = max(ks), labelled "topk k=<k>" and
    "hierarchical_topk K=<K>"."""
    out = [BL.Arm(f"topk k={k}", lambda s, k=k: registry.get("topk").spec(d_sae, k, s), sae_cfg) for k in ks]
    out.append(BL.Arm(f"{HIERARCHICAL} K={ks[-1]}", lambda s: registry.get(HIERARCHICAL).spec(d_sae, ks[-1], s), sae_cfg))
    return out


def _ev(encode, sae, eval_x: torch.Tensor) -> dict:
    rep = quality.reconstruction_metrics(encode, sae.decode, eval_x.split(4096), sae.cfg.d_sae, device_of(sae))
    return {"explained_variance": rep.explained_variance, "l0": rep.l0}


def rung_rows(label: str, saes: list, seeds: Sequence[int], eval_x: torch.Tensor, ks: Sequence[int]) -> list[dict]:
    """The rows of one arm at one rung: (model, k, seed, EV, L0) of TopK at its k, or of the
    hierarchical model encoded at every k of ``ks``."""
    rows = []
    for seed, sae in zip(seeds, saes):
        if label.startswith(HIERARCHICAL):
            for k in ks:
                rows.append(
                    {"model": HIERARCHICAL, "k": k, "seed": seed, **_ev(lambda x, k=k, sae=sae: sae.encode(x, k=k), sae, eval_x)}
                )
        else:
            rows.append({"model": "topk", "k": int(sae.cfg.k), "seed": seed, **_ev(sae.encode, sae, eval_x)})
    return rows


def ladder_table(run, cfg: Study03Config, d_sae: int, eval_x: torch.Tensor, ks: Sequence[int], progress: bool = True):
    """The ladder's long table: arm, tokens, model, k, seed, explained_variance, l0."""
    from ..activations import hook_name

    hook = hook_name(cfg.layer)
    acts = run.activations([hook])[hook]
    rungs = list(cfg.convergence_tokens)
    return BL.ladder_table(
        acts,
        arms(cfg, d_sae, sae_config(run.profile, rungs[-1]), ks),
        rungs,
        cfg.convergence_seeds,
        run.store,
        lambda label, saes, seeds: rung_rows(label, saes, seeds, eval_x, ks),
        run.profile.activations.batch_size,
        cfg.ladder_decay_fraction,
        label_column="arm",
        progress=progress,
    )


def gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Per k, rung and seed: EV of TopK trained at k ("EV topk"), of the hierarchical model at k
    ("EV hierarchical_topk") and their paired gap ΔEV = hierarchical − TopK."""
    return BL.paired_gap(
        table, HIERARCHICAL, "topk", "explained_variance", by="model", keys=("k", "tokens", "seed"), name=GAP
    ).rename(columns={f"explained_variance {HIERARCHICAL}": f"EV {HIERARCHICAL}", "explained_variance topk": "EV topk"})


def ladder_verdict(before: Verdict, gap_table: pd.DataFrame, budget: int) -> Verdict:
    """The Pareto-front rule (:func:`hierarchical_claims.verdict_front`) on the ladder's top rung,
    where the separately trained baseline at each k is TopK (the ladder's one baseline), gated on
    ΔEV at every k over the whole ladder, with ``before`` (the rule on the notebook's grid at
    ``budget`` tokens, against its best baseline) as its ``previous``
    (:func:`budget_ladders.read_at_top`); ``before`` stands when there is no ladder."""

    def rule_at(tokens: int) -> Verdict:
        read = verdict_front(gap_table[gap_table.tokens == tokens])
        return replace(read, ours=f"{read.ours} (against TopK at k, the ladder's one baseline)")

    return BL.read_at_top(rule_at, before, gap_table, GAP, budget, None, "k", QUANTITIES[GAP], until="2026-12-07")


def gate_table(gap_table: pd.DataFrame, up_to: int | None = None) -> pd.DataFrame:
    """The gate of each quantity of :data:`QUANTITIES` per k at ``up_to``."""
    return BL.gate_table(gap_table, QUANTITIES, up_to, by="k")


def budget_evidence(gap_table: pd.DataFrame, sweep: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table the budget verdict (``hierarchical_claims.verdict_budget``) reads, and its name:
    the ladder's gaps where the ladder has at least two seeds and two rungs (an interval over seeds
    at every k, rungs up to the ladder's top), else the budget sweep (one seed, the regression's
    own interval over budgets)."""
    if len(gap_table) and gap_table["seed"].nunique() > 1 and gap_table["tokens"].nunique() > 1:
        return gap_table[["k", "tokens", "seed", GAP]], "ladder"
    return sweep, "budget sweep"
