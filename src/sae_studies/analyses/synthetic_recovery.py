"""How well SAEs identify the features of the synthetic low-rank model (:mod:`.synthetic`, study 2).

**Metrics** (decoders are SAELens ``W_dec`` ``[F, d]``; a latent is its unit decoder row ŵ):

* isolated recovery: ``max_j <u_i, ŵ_j>`` per isolated feature;
* assignment: latent j belongs to the ground-truth subspace holding most of its energy —
  ``max(<u_i, ŵ_j>, 0)²`` for isolated feature i, ``‖B_g ŵ_j‖²`` for group g — if that share is
  at least ``min_energy`` (0.5 by default: "most of its energy"); else it is unassigned;
* group span: the top-r singular subspace of the unit rows assigned to the group
  (:func:`subspaces.top_subspace`; all of them if fewer than r); its principal-angle cosines to
  ``B_g`` (missing dimensions count as cosine 0) and to the same group's span in another seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int, check_unit_interval
from . import cosine, subspaces
from .synthetic import GroundTruth

#: Owner of a latent that hardly fires (see :func:`assign_latents`).
DEAD = -2


def _unit(w: Tensor) -> Tensor:
    return cosine.unit_rows(w.detach().cpu(), torch.float64)


def isolated_recovery(decoder: Tensor, truth: GroundTruth) -> Tensor:
    """``[n_isolated]``: best cosine of each isolated feature to any latent, ``max_j <u_i, ŵ_j>``."""
    return cosine.best_cosine(truth.isolated, _unit(decoder))[0]


def direction_recovery(decoder: Tensor, truth: GroundTruth) -> Tensor | None:
    """``[G, k]``: best cosine of each direction of a discrete group to any latent (None if continuous)."""
    dirs = truth.directions
    if dirs is None or dirs.numel() == 0:
        return None
    return cosine.best_cosine(dirs.reshape(-1, dirs.shape[-1]), _unit(decoder))[0].reshape(dirs.shape[:2])


@dataclass(frozen=True)
class Assignment:
    """Which ground-truth subspace each latent belongs to (see the module doc).

    ``owner[j]``: ``i`` in ``0..n_isolated-1`` for isolated feature i, ``n_isolated + g`` for group
    g, ``-1`` unassigned, ``DEAD`` (-2) for a latent that hardly fires; ``energy[j]``: the share of
    ŵ_j's energy in the subspace that holds most of it."""

    owner: np.ndarray
    energy: np.ndarray
    n_isolated: int

    @property
    def kind(self) -> np.ndarray:
        """``"isolated"``, ``"group"``, ``"none"`` (no subspace holds most of its energy) or
        ``"dead"`` (fired fewer than ``min_firings`` times) per latent."""
        out = np.full(self.owner.shape, "none", dtype=object)
        out[(self.owner >= 0) & (self.owner < self.n_isolated)] = "isolated"
        out[self.owner >= self.n_isolated] = "group"
        out[self.owner == DEAD] = "dead"
        return out

    def group_mask(self, g: int) -> np.ndarray:
        return self.owner == self.n_isolated + g


def assign_latents(
    decoder: Tensor, truth: GroundTruth, min_energy: float = 0.5, firings: np.ndarray | None = None, min_firings: int = 1
) -> Assignment:
    """Assign each latent to the ground-truth subspace with most of its energy (≥ ``min_energy``).

    With ``firings`` (times each latent fired on held-out rows), latents that fired fewer than
    ``min_firings`` times are dead (``DEAD``) whatever their direction: a latent that never
    learned cannot be recovered or unstable (as in study 1's classes)."""
    min_energy = check_unit_interval("min_energy", min_energy)
    w = _unit(decoder)
    parts = [(w @ truth.isolated.T).clamp_min(0).pow(2)]  # signed: −u_i is not feature i
    if truth.bases.numel():
        parts.append(torch.einsum("fd,grd->fgr", w, truth.bases).pow(2).sum(-1))
    energy = torch.cat(parts, 1)
    best, owner = energy.max(1)
    owner = torch.where(best >= min_energy, owner, torch.full_like(owner, -1)).numpy()
    if firings is not None:
        firings = np.asarray(firings)
        if firings.shape != owner.shape:
            raise ValueError(f"firings must hold one count per latent, shape {owner.shape}; got {firings.shape}")
        owner = np.where(firings < check_int("min_firings", min_firings, 0), DEAD, owner)
    return Assignment(owner, best.numpy(), truth.isolated.shape[0])


def group_span(decoder: Tensor, assignment: Assignment, g: int, r: int) -> Tensor | None:
    """Orthonormal rows spanning group g's latents: their top-r singular subspace (all of them
    when fewer than r); None when none is assigned."""
    rows = _unit(decoder)[torch.from_numpy(assignment.group_mask(g))]
    if rows.shape[0] == 0:
        return None
    return subspaces.top_subspace(rows, min(r, rows.shape[0]))


def padded_cosines(a: Tensor | None, b: Tensor | None, r: int) -> np.ndarray:
    """``[r]`` principal-angle cosines between two row spaces, descending, padded with 0 (a
    missing dimension is orthogonal to everything)."""
    out = np.zeros(r)
    if a is not None and b is not None:
        c = np.sort(np.cos(subspaces.principal_angles(a, b).numpy()))[::-1][:r]
        out[: c.size] = np.clip(c, 0, 1)
    return out


def subspace_recovery(decoder: Tensor, truth: GroundTruth, assignment: Assignment) -> np.ndarray:
    """``[G, r]``: principal-angle cosines between each group's true subspace and its latents' span."""
    G, r = truth.bases.shape[:2]
    return (
        np.stack([padded_cosines(group_span(decoder, assignment, g, r), truth.bases[g], r) for g in range(G)])
        if G
        else np.zeros((0, r))
    )


def cross_seed_span_agreement(decoders: list[Tensor], truth: GroundTruth, assignments: list[Assignment]) -> np.ndarray:
    """``[S(S-1)/2, G, r]``: principal-angle cosines between the spans of each group's latents in
    every pair of seeds."""
    G, r = truth.bases.shape[:2]
    spans = [[group_span(w, a, g, r) for g in range(G)] for w, a in zip(decoders, assignments)]
    pairs = itertools.combinations(range(len(decoders)), 2)
    return np.stack([np.stack([padded_cosines(spans[s][g], spans[t][g], r) for g in range(G)]) for s, t in pairs])


def random_subspace_cosines(r: int, d: int, n_draws: int, generator: torch.Generator | None = None) -> np.ndarray:
    """``[n_draws, r]``: principal-angle cosines between two uniformly random r-dim subspaces of R^d."""
    draws = [
        padded_cosines(
            subspaces.random_subspace(r, d, generator, dtype=torch.float64),
            subspaces.random_subspace(r, d, generator, dtype=torch.float64),
            r,
        )
        for _ in range(n_draws)
    ]
    return np.stack(draws)


def within_subspace_null(
    truth: GroundTruth, per_group: list[int], n_seeds: int, tau: float, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Cross-seed stability of latents placed at random *inside* the right subspaces: each seed
    draws ``per_group[g]`` directions uniformly on the unit sphere of group g's subspace.

    The chance level of group latents that found their subspace but no preferred basis in it;
    returns :func:`seed_stability.null_stability`'s numbers."""
    from .seed_stability import null_stability

    if len(per_group) != truth.bases.shape[0] or sum(per_group) < 1:
        raise ValueError(
            f"per_group must give a count for each of the {truth.bases.shape[0]} groups, at least one > 0; got {per_group}"
        )
    r = truth.bases.shape[1]
    decs = []
    for _ in range(check_int("n_seeds", n_seeds, 2)):
        rows = [
            torch.randn(m, r, generator=generator, dtype=torch.float64) @ truth.bases[g] for g, m in enumerate(per_group) if m
        ]
        decs.append(torch.cat(rows).float())
    return null_stability(decs, tau)


def mcc_over_truth(truth_dirs: Tensor, learned: Tensor) -> float:
    """The standard mean correlation coefficient over the ground truth: Hungarian one-to-one
    matching of |cosine|, summed over matched pairs and divided by the number of *true*
    directions, so a true direction left without a latent (fewer latents than directions)
    counts as 0. SAELens' ``mean_correlation_coefficient`` divides by min(n_true, n_learned)
    instead, which reads 1.0 for F latents that match F of 2F directions perfectly."""
    from scipy.optimize import linear_sum_assignment

    a = torch.nn.functional.normalize(truth_dirs.detach().cpu().double(), dim=1)
    b = torch.nn.functional.normalize(learned.detach().cpu().double(), dim=1)
    if a.shape[0] == 0:
        raise ValueError("mcc_over_truth needs at least one ground-truth direction")
    cos = (a @ b.T).abs().numpy()
    rows, cols = linear_sum_assignment(-cos)
    return float(cos[rows, cols].sum() / a.shape[0])


def mcc(decoder: Tensor, truth: GroundTruth) -> dict[str, float]:
    """Mean correlation coefficients of the latents (Hungarian one-to-one matching, |cosine|):
    ``"isolated"`` against the isolated features (SAELens' convention; there are always more
    latents than isolated features, so both conventions agree) and, for a discrete model,
    against every ground-truth direction: ``"all_directions"`` the standard MCC over the truth
    (:func:`mcc_over_truth`: an unmatched direction counts as 0) and
    ``"all_directions_saelens"`` SAELens' (divided by min(n_true, n_latents), inflated by
    n_true / F where F < n_true)."""
    from sae_lens.synthetic import mean_correlation_coefficient

    w = decoder.detach().cpu().float()
    out = {"isolated": mean_correlation_coefficient(truth.isolated.float(), w) if truth.isolated.numel() else float("nan")}
    dirs = truth.directions
    if dirs is not None:
        every = torch.cat([truth.isolated, dirs.reshape(-1, dirs.shape[-1])]).float()
        out["all_directions"] = mcc_over_truth(every, w)
        out["all_directions_saelens"] = mean_correlation_coefficient(every, w)
    return out


def rotation_null(
    decoders: list[Tensor],
    truth: GroundTruth,
    assignments: list[Assignment],
    tau: float,
    generator: torch.Generator | None = None,
):
    """Stability of the same SAEs after rotating, in every seed, each group's latents inside the
    group's subspace by an independent uniformly random rotation (their components outside it,
    and every other latent, unchanged).

    The chance level of group latents whose arrangement (the tiling the SAE learned) is kept but
    whose orientation is arbitrary: group latents as stable as this carry no information about a
    preferred basis. Returns :func:`seed_stability.stability_scores` of the rotated decoders."""
    from .seed_stability import stability_scores

    r = truth.bases.shape[1]
    rotated = []
    for w, a in zip(decoders, assignments):
        w = _unit(w).clone()
        for g in range(truth.bases.shape[0]):
            m = torch.from_numpy(a.group_mask(g))
            if m.any():
                b = truth.bases[g]
                coords = w[m] @ b.T
                q = subspaces.random_subspace(r, r, generator, dtype=torch.float64)
                w[m] = w[m] - coords @ b + coords @ q @ b
        rotated.append(w.float())
    return stability_scores(rotated, tau)
