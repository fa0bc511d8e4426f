"""Study 4 on a token-budget ladder: has KronSAE's explained-variance gap to TopK levelled off?

Per seed of ``convergence_seeds``: one warmup-stable-decay ladder (:mod:`sae_studies.ladder`,
rungs ``convergence_tokens``) for TopK and one for KronSAE ``main_mn`` (mAND) at the study's
``sweep_expansion_factor``, with the study's k, learning rate and batch. At every rung the
held-out EV of both and their paired gap ΔEV = EV(KronSAE) − EV(TopK) of the same seed. The
equal-tokens rule is read on the ladder's top rung (the ladder's one F) and gated on that gap over
the whole ladder (:func:`ladder_verdict`); its reading on the main grid at ``train_tokens`` (every
F), gated up to there, becomes the verdict's ``previous``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ..analyses import quality
from ..study_config import Study04Config
from . import budget_ladders as BL
from . import kron_claims
from .kron import Variant, training_config
from .verdicts import Verdict

__all__ = ["QUANTITIES", "arms", "rung_rows", "ladder_table", "gaps", "ladder_verdict", "gate_table"]

TOPK, KRON = "TopK", "KronSAE"
GAP = "ΔEV"
QUANTITIES = {f"EV {TOPK}": "EV, TopK", f"EV {KRON}": "EV, KronSAE", GAP: "ΔEV KronSAE − TopK"}
"""Columns of :func:`gaps` that the ladder figure and gate table show, with their labels."""


def _variant(cfg: Study04Config, d: int, arch: str, tokens: int, seed: int) -> Variant:
    e = cfg.sweep_expansion_factor
    mn = tuple(cfg.main_mn) if arch == "kron" else (None, None)
    return Variant(arch, e, e * d, *mn, "mand" if arch == "kron" else None, "tokens", 1.0, tokens, seed)


def arms(cfg: Study04Config, d: int, sae_cfg) -> list[BL.Arm]:
    """TopK and KronSAE ``main_mn`` (mAND) at ``sweep_expansion_factor`` × d, labelled "TopK" and
    "KronSAE"; ``sae_cfg`` is the profile's SAE section (the study's lr and k are applied)."""
    top = max(cfg.convergence_tokens)
    out = []
    for label, arch in ((TOPK, "topk"), (KRON, "kron")):
        cfg_arm = training_config(sae_cfg, cfg, _variant(cfg, d, arch, top, 0))
        out.append(BL.Arm(label, lambda s, arch=arch: _variant(cfg, d, arch, top, s).spec(cfg.k), cfg_arm))
    return out


def rung_rows(label: str, saes: list, seeds: Sequence[int], eval_x: torch.Tensor) -> list[dict]:
    """The rows of one arm at one rung: (d_sae, seed, EV, L0, dead fraction) per seed."""
    rows = []
    for seed, sae in zip(seeds, saes):
        rep = quality.sae_reconstruction_metrics(sae, eval_x)
        rows.append(
            {
                "d_sae": int(sae.cfg.d_sae),
                "seed": seed,
                "explained_variance": rep.explained_variance,
                "l0": rep.l0,
                "dead_fraction": rep.dead_fraction,
            }
        )
    return rows


def ladder_table(run, cfg: Study04Config, eval_x: torch.Tensor, progress: bool = True) -> pd.DataFrame:
    """The ladder's long table: model, tokens, d_sae, seed, explained_variance, l0, dead_fraction."""
    from ..activations import hook_name

    hook = hook_name(cfg.layer)
    acts = run.activations([hook])[hook]
    return BL.ladder_table(
        acts,
        arms(cfg, acts.d, run.profile.sae),
        list(cfg.convergence_tokens),
        cfg.convergence_seeds,
        run.store,
        lambda label, saes, seeds: rung_rows(label, saes, seeds, eval_x),
        cfg.batch_size,
        cfg.ladder_decay_fraction,
        label_column="model",
        progress=progress,
    )


def gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Per F, rung and seed: EV of TopK ("EV TopK"), of KronSAE ("EV KronSAE") and their paired gap
    ΔEV = KronSAE − TopK."""
    return BL.paired_gap(table, KRON, TOPK, "explained_variance", by="model", keys=("d_sae", "tokens", "seed"), name=GAP).rename(
        columns={f"explained_variance {KRON}": f"EV {KRON}", f"explained_variance {TOPK}": f"EV {TOPK}"}
    )


def ladder_verdict(before: Verdict, ladder: pd.DataFrame, gap_table: pd.DataFrame, budget: int) -> Verdict:
    """The equal-tokens rule (:func:`kron_claims.verdict_equal_tokens`) on the ladder's top rung
    (``ladder``: :func:`ladder_table`'s rows), gated on ΔEV over the whole ladder, with ``before``
    (the rule on the main grid at ``budget`` tokens) as its ``previous``
    (:func:`budget_ladders.read_at_top`); ``before`` stands when there is no ladder."""

    def rule_at(tokens: int) -> Verdict:
        return kron_claims.verdict_equal_tokens(ladder[ladder.tokens == tokens])

    return BL.read_at_top(rule_at, before, gap_table, GAP, budget, None, "d_sae", QUANTITIES[GAP], until="2026-12-06")


def gate_table(gap_table: pd.DataFrame, up_to: int | None = None) -> pd.DataFrame:
    """The gate of each quantity of :data:`QUANTITIES` per F at ``up_to``."""
    return BL.gate_table(gap_table, QUANTITIES, up_to, by="d_sae")
