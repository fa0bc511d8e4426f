"""Study 5 on a token-budget ladder: has the persistence share levelled off?

Per seed of ``convergence_seeds`` and residual position of the window (``("resid", L0 − 1)`` …
``("resid", L1)``): one warmup-stable-decay ladder (:mod:`sae_studies.ladder`, rungs
``convergence_tokens``) of the study's SAE (architecture, width, k, learning rate, batch), seeded
per position as the main grid (:func:`~sae_studies.studies.flow.position_seed`). At every rung,
per seed and layer L of the window, the quantity the persistence verdict reads
(:func:`~sae_studies.studies.flow_claims.verdict_persistence`): the share of live residual
features of L whose best previous-layer residual match s(R) beats the ``null_quantile`` of s(R)
against a null dictionary (``null_kind``, drawn from the activation covariance of position
``("resid", L − 1)``), next to the held-out EV of layer L's SAE. The persistence verdict is read
at the ladder's top rung and gated on the share at every layer (:func:`ladder_verdict`). Only the
residual SAEs are trained: s(R) needs no MLP or attention dictionary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..analyses import flow, quality
from ..analyses.cosine import best_cosine
from ..saes import registry
from ..study_config import Study05Config
from . import budget_ladders as BL
from . import flow_claims
from .flow import null_sources, position_seed, sae_config
from .verdicts import Verdict

__all__ = ["SHARE", "QUANTITIES", "resid_positions", "persistence_shares", "ladder_table", "ladder_verdict", "gate_table"]

SHARE = "share_above_null"
QUANTITIES = {SHARE: "share with s(R) > null quantile", "explained_variance": "EV (held-out)"}
"""Columns of :func:`ladder_table` that the ladder figure and gate table show, with their labels."""


def resid_positions(layers: Sequence[int]) -> list[flow.Position]:
    """The residual positions the window's s(R) needs: ``("resid", L0 − 1)`` … ``("resid", L1)``."""
    return [p for p in flow.window_positions(layers) if p[0] == "resid"]


def persistence_shares(
    decoders: Mapping[int, torch.Tensor],
    nulls: Mapping[int, torch.Tensor],
    alive: Mapping[int, np.ndarray],
    layers: Sequence[int],
    quantile: float,
) -> dict[int, float]:
    """Per layer L of ``layers``: the share of live features (``alive[L]``, a boolean mask over
    the rows of ``decoders[L]``) whose best cosine to ``decoders[L − 1]`` (s(R)) exceeds the
    ``quantile`` of every feature's best cosine to ``nulls[L − 1]`` (a dictionary without learned
    structure) — notebook 05's ``flow.match_window`` → ``flow.null_thresholds`` →
    ``group_table`` path restricted to the residual source."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1); got {quantile!r}")
    out = {}
    for layer in layers:
        s_r = best_cosine(decoders[layer], decoders[layer - 1])[0]
        null = best_cosine(decoders[layer], nulls[layer - 1])[0]
        threshold = float(torch.quantile(null.double(), quantile))
        live = np.asarray(alive[layer], dtype=bool)
        if live.shape != (len(s_r),):
            raise ValueError(f"alive[{layer}] must be a mask over {len(s_r)} features; got shape {live.shape}")
        out[layer] = float((s_r.numpy()[live] > threshold).mean()) if live.any() else float("nan")
    return out


def ladder_table(
    run,
    C: Study05Config,
    layers: Sequence[int],
    train_acts: Mapping[str, object],
    val_x: Mapping[flow.Position, torch.Tensor],
    covariances: Mapping[flow.Position, torch.Tensor],
    d_model: int,
    k: int,
    progress: bool = True,
) -> pd.DataFrame:
    """The ladder's long table: layer, tokens, seed, share_above_null, explained_variance, l0,
    dead_fraction, n_live (live: ≥ ``min_firings`` firings on the held-out tokens, as the main
    grid). ``train_acts`` maps hook → activations; ``val_x`` and ``covariances`` are keyed by
    position (notebook 05's ``val_x`` and ``covs``)."""
    spec = registry.get(C.architecture).spec(C.expansion_factor * d_model, C.k or k)
    sae_cfg = sae_config(run.profile.sae, C)
    rungs, seeds = list(C.convergence_tokens), list(C.convergence_seeds)
    ladders = {}
    for pos in resid_positions(layers):
        arm = BL.Arm(f"resid {pos[1]}", lambda s, pos=pos: spec.with_seed(position_seed(s, pos)), sae_cfg)
        trained = BL.train_arms(
            train_acts[flow.position_hook(pos)],
            [arm],
            rungs,
            seeds,
            run.store,
            C.batch_size,
            C.ladder_decay_fraction,
            progress=progress,
        )
        ladders[pos[1]] = trained[arm.label]
    # a null dictionary depends only on the seed and its shape: drawn once per seed, the same at every rung
    nulls_of = {}
    for j, seed in enumerate(seeds):
        sources = {("resid", lay - 1): ladders[lay - 1][j].saes[0].W_dec.detach().float().cpu() for lay in layers}
        nulls_of[seed] = {pos[1]: w for pos, w in null_sources(sources, covariances, C.null_kind, seed=seed).items()}
    rows = []
    for i, tokens in enumerate(rungs):
        for j, seed in enumerate(seeds):
            saes = {layer: ladders[layer][j].saes[i] for layer in ladders}
            decoders = {layer: sae.W_dec.detach().float().cpu() for layer, sae in saes.items()}
            nulls = nulls_of[seed]
            reports = {lay: quality.sae_reconstruction_metrics(saes[lay], val_x[("resid", lay)]) for lay in layers}
            alive = {lay: reports[lay].density * len(val_x[("resid", lay)]) >= C.min_firings for lay in layers}
            shares = persistence_shares(decoders, nulls, alive, layers, C.null_quantile)
            for lay in layers:
                rep = reports[lay]
                rows.append(
                    {
                        "layer": lay,
                        "tokens": int(tokens),
                        "seed": seed,
                        SHARE: shares[lay],
                        "explained_variance": rep.explained_variance,
                        "l0": rep.l0,
                        "dead_fraction": rep.dead_fraction,
                        "n_live": int(alive[lay].sum()),
                    }
                )
    return pd.DataFrame(rows)


def ladder_verdict(before: Verdict, table: pd.DataFrame, budget: int, null_quantile: float, model: str) -> Verdict:
    """The persistence rule (:func:`flow_claims.verdict_persistence`) on the ladder's top rung (its
    seeds' shares per layer), gated on the share at every layer over the whole ladder, with
    ``before`` (the rule on the notebook's SAEs at ``budget`` tokens) as its ``previous``
    (:func:`budget_ladders.read_at_top`); ``before`` stands when there is no ladder."""

    def rule_at(tokens: int) -> Verdict:
        rung = table[table.tokens == tokens]
        shares = {int(layer): g.sort_values("seed")[SHARE].tolist() for layer, g in rung.groupby("layer")}
        return flow_claims.verdict_persistence(shares, null_quantile, model)

    return BL.read_at_top(
        rule_at, before, table, SHARE, budget, None, "layer", "share above the null quantile", until="2026-12-07"
    )


def gate_table(table: pd.DataFrame, up_to: int | None = None) -> pd.DataFrame:
    """The gate of each quantity of :data:`QUANTITIES` per layer at ``up_to``."""
    return BL.gate_table(table, QUANTITIES, up_to, by="layer")
