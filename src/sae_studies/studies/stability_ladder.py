"""Study 1 on a token-budget ladder: its read quantities against tokens, the learning-rate sweep
that picks each architecture's rate, and the convergence gate of every quantity.

Per architecture (analysis size, first layer): a learning-rate sweep at one rung (first seed; the
grid is widened by factors of 2 while the best rate sits at its edge, at most
``budget_ladders.MAX_LR_EXTENSIONS`` times), then one warmup-stable-decay ladder per seed at the chosen rate
(:mod:`sae_studies.ladder`; the sweep's ladders share the trunk with the seed's ladder at the
chosen rate, so they are not retrained). Every rung × seed row holds what study 1 reads: held-out
EV, dead share, live fraction stable (among the seeds at that rung) and the Hungarian share ≥ τ
of the seed with the next one. :func:`convergence` turns the table into the
:class:`~sae_studies.analyses.convergence.Convergence` of a named quantity for
``Verdict.gated``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import cosine, quality, seed_stability
from ..analyses.convergence import Convergence
from ..ladder import train_ladder
from ..study_config import Study01Config
from . import budget_ladders as BL
from .budget_ladders import Arm
from .stability import GridCell, cell_spec, firing_counts, sae_config
from .stability_nulls import CHOSEN_NULL
from .verdicts import Verdict

__all__ = ["QUANTITIES", "rung_rows", "lr_sweep", "ladder_table", "convergence", "gate_verdict", "gate_table"]

QUANTITIES = {
    "explained_variance": "held-out EV",
    "stable": "live fraction stable",
    "hungarian_share": "Hungarian share ≥ τ",
}
"""The quantities study 1's verdicts read, as columns of the ladder table, with their labels."""


def rung_rows(models: Sequence, seeds: Sequence[int], eval_x: torch.Tensor, tau: float, min_firings: int) -> list[dict]:
    """One row per seed of one rung: EV, dead share, live fraction stable (matched in every other
    seed at ``tau``) and the Hungarian share ≥ ``tau`` with the next seed (NaN for the last)."""
    sc = seed_stability.stability_scores([m.W_dec for m in models], tau)
    rows = []
    for s, (seed, m) in enumerate(zip(seeds, models)):
        rep = quality.sae_reconstruction_metrics(m, eval_x)
        cls = seed_stability.stability_class(sc.fraction[s], firing_counts(m, eval_x), min_firings)
        live = cls != "dead"
        share = np.nan
        if s + 1 < len(models):
            _, _, cos = cosine.hungarian_match(m.W_dec, models[s + 1].W_dec)
            share = float((cos >= tau).double().mean())
        rows.append(
            {
                "seed": seed,
                "explained_variance": rep.explained_variance,
                "dead_fraction": rep.dead_fraction,
                "stable": float((cls[live] == "stable").mean()) if live.any() else np.nan,
                "hungarian_share": share,
            }
        )
    return rows


def _rungs(cfg: Study01Config) -> list[int]:
    return list(cfg.convergence_tokens)


def lr_sweep(run, cfg: Study01Config, arch: str, acts, eval_x: torch.Tensor, progress: bool = True) -> pd.DataFrame:
    """Held-out EV of the first seed at the sweep rung (``cfg.lr_sweep_rung``) for every rate of
    ``cfg.convergence_lrs``, widened by factors of 2 while the best is at an edge. ``chosen`` marks
    the best rate; ``inside`` says whether it ended strictly inside the swept grid."""
    upto = BL.sweep_rungs(_rungs(cfg), cfg.lr_sweep_rung)
    cell = GridCell(cfg.layers[0], arch, cfg.analysis_expansion_factor)
    spec = cell_spec(cell, acts.d, run.profile.sae.k, cfg, cfg.convergence_seeds[0])
    bar = tqdm(desc=f"lr sweep {arch}", disable=not progress, leave=False)

    def measure(lr):
        bar.update()
        lad = train_ladder(
            acts,
            spec,
            sae_config(run.profile, upto[-1], lr),
            run.store,
            upto,
            cfg.batch_size,
            cfg.ladder_decay_fraction,
            progress=False,
            warmup_tokens=cfg.ladder_warmup_tokens,
        )
        return quality.sae_reconstruction_metrics(lad.saes[-1], eval_x).explained_variance

    sweep = BL.widen_sweep(measure, cfg.convergence_lrs)
    bar.close()
    return BL.sweep_table(arch, upto[-1], sweep)


def ladder_table(run, cfg: Study01Config, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(ladder, lr_table)``: the ladder rows (architecture, tokens, seed, lr and the quantities of
    :func:`rung_rows`, with study 1's chosen null (`stability_nulls.CHOSEN_NULL`) of the same shape
    as ``null_*`` columns) and the
    learning-rate sweep of every architecture."""
    from ..activations import hook_name

    hook = hook_name(cfg.layers[0])
    acts = run.activations([hook])[hook]
    eval_x = run.activations([hook], split="val")[hook].tensor()
    cov = torch.cov(eval_x[:32768].double().T)
    n_features = cfg.analysis_expansion_factor * acts.d
    decs = seed_stability.null_decoders(
        CHOSEN_NULL, len(cfg.convergence_seeds), n_features, cov, torch.Generator().manual_seed(0)
    )
    null = seed_stability.null_stability(decs, cfg.tau)
    rungs, tables, sweeps = _rungs(cfg), [], []
    for arch in tqdm(cfg.convergence_architectures, desc="study 1 ladders", disable=not progress):
        sweep = lr_sweep(run, cfg, arch, acts, eval_x, progress)
        sweeps.append(sweep)
        lr = float(sweep.lr[sweep.chosen].iloc[0])
        cell = GridCell(cfg.layers[0], arch, cfg.analysis_expansion_factor)
        arm = Arm(
            arch, lambda s, cell=cell: cell_spec(cell, acts.d, run.profile.sae.k, cfg, s), sae_config(run.profile, rungs[-1], lr)
        )

        def rows(label, saes, seeds, lr=lr):
            return [
                {
                    "lr": lr,
                    **row,
                    "null_fraction_stable": null["fraction_stable"],
                    "null_pair_share": null["pair_share"],
                }
                for row in rung_rows(saes, seeds, eval_x, cfg.tau, cfg.min_firings)
            ]

        tables.append(
            BL.ladder_table(
                acts,
                [arm],
                rungs,
                cfg.convergence_seeds,
                run.store,
                rows,
                cfg.batch_size,
                cfg.ladder_decay_fraction,
                cfg.ladder_warmup_tokens,
                label_column="architecture",
                progress=progress,
            )
        )
    return pd.concat(tables, ignore_index=True), pd.concat(sweeps, ignore_index=True)


def convergence(
    table: pd.DataFrame, quantity: str, architectures: Sequence[str] | None = None, up_to: int | None = None
) -> Convergence | None:
    """The convergence gate of ``quantity`` (a column of :func:`ladder_table`) for a verdict that
    reads it: per architecture (all in the table by default) on the rungs ≤ ``up_to`` (the budget
    the verdict's SAEs were trained for; all rungs by default). A verdict over several
    architectures has converged only if each has: the first architecture that has not is
    returned, else the one that converged last. None when the table has fewer than two such
    rungs (no ladder to gate on: the verdict keeps "no ladder"). (:func:`budget_ladders.convergence`
    with ``by="architecture"``.)"""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {sorted(QUANTITIES)}; got {quantity!r}")
    if table.empty:
        return None
    unknown = set(architectures or ()) - set(table.architecture)
    if unknown:
        raise ValueError(f"architectures {sorted(unknown)} are not in the ladder table; it has {sorted(set(table.architecture))}")
    return BL.convergence(table, quantity, architectures, up_to, by="architecture", name=QUANTITIES[quantity])


def gate_verdict(verdict: Verdict, table: pd.DataFrame, quantity: str, up_to: int | None = None, architectures=None) -> Verdict:
    """``verdict.gated`` by the convergence of the quantity it reads (see :func:`convergence`), or
    the verdict unchanged when there is no ladder to gate on (its "converged at" says "no ladder")."""
    conv = convergence(table, quantity, architectures, up_to)
    return verdict if conv is None else verdict.gated(conv)


def gate_table(table: pd.DataFrame, up_to: int | None = None) -> pd.DataFrame:
    """The gate of every quantity and architecture of a ladder table: what it read, whether it
    converged and from which rung (the notebook's convergence summary)."""
    return BL.gate_table(table, QUANTITIES, up_to, by="architecture")
