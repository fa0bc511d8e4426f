"""Cross-seed stability of SAE features: per-feature scores, classes, and their null baselines.

Definitions this repository chooses (the stability paper does not publish its own, see
``DESIGN.md``, "Where the papers are silent"); a feature is a unit decoder row ``ŵ``:

* stability of feature ``i`` of seed ``s`` among ``S`` seeds at threshold ``tau``:
  ``fraction[s, i] = |{s' ≠ s : max_j <ŵ^s_i, ŵ^{s'}_j> ≥ tau}| / (S - 1)``;
* continuous variant: ``mean_best[s, i] = mean_{s' ≠ s} max_j <ŵ^s_i, ŵ^{s'}_j>``;
* classes: ``stable`` (matched in every other seed), ``unstable`` (in none), ``partial``,
  and ``dead`` for latents that hardly fire on held-out tokens.

Pure tensor functions: best cosines come from :mod:`sae_studies.analyses.cosine` (chunked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..checks import check_matrix, check_positive_int, check_tau
from .cosine import DEFAULT_B_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, best_cosine, best_cosine_both_ways, compute_dtype


def check_decoders(decoders: object) -> list[Tensor]:
    if isinstance(decoders, Tensor):
        if decoders.ndim != 3:
            raise ValueError(
                "decoders must be a sequence of [F, d] tensors or one [S, F, d] tensor; got a "
                f"tensor of shape {list(decoders.shape)}"
            )
        decoders = list(decoders.unbind(0))
    if not isinstance(decoders, Sequence) or isinstance(decoders, (str, bytes)):
        raise ValueError(f"decoders must be a sequence of [F, d] tensors; got {type(decoders).__name__}")
    decs = list(decoders)
    if len(decs) < 2:
        raise ValueError(f"decoders must hold at least 2 seeds (S >= 2); got {len(decs)}")
    for s, w in enumerate(decs):
        check_matrix(f"decoders[{s}]", w)
    shape0 = tuple(decs[0].shape)
    bad = [(s, list(w.shape)) for s, w in enumerate(decs) if tuple(w.shape) != shape0]
    if bad:
        listing = ", ".join(f"decoders[{s}] {sh}" for s, sh in bad)
        raise ValueError(
            "decoders must all have the same shape [F, d] (same width F and input size d); "
            f"decoders[0] is {list(shape0)} but {listing}"
        )
    return decs


def other_seeds(n_seeds: int) -> Tensor:
    """``[S, S-1]`` int64: row ``s`` lists the seeds ``s' ≠ s`` in increasing order.

    This is the meaning of axis 1 of :attr:`CrossSeedBest.values`.
    """
    n = check_positive_int("n_seeds", n_seeds)
    if n < 2:
        raise ValueError(f"n_seeds must be at least 2; got {n}")
    idx = torch.arange(n)
    return torch.stack([torch.cat([idx[:s], idx[s + 1 :]]) for s in range(n)])


@dataclass(frozen=True)
class CrossSeedBest:
    """Best cosines between every pair of seeds, computed once and reused (e.g. a tau sweep).

    Attributes:
        values: ``[S, S-1, F]``; ``values[s, j, i] = max_m <ŵ^s_i, ŵ^{s'}_m>`` where
            ``s' = other[s, j]``.
        indices: ``[S, S-1, F]`` int64; the arg-max ``m`` (a row of seed ``s'``).
        other: ``[S, S-1]`` int64; ``other[s, j]`` is the seed ``s'`` (see :func:`other_seeds`).
    """

    values: Tensor
    indices: Tensor
    other: Tensor

    @property
    def n_seeds(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[2])


@dataclass(frozen=True)
class StabilityScores:
    """Per-feature stability of ``S`` seeds at one threshold.

    Attributes:
        tau: the cosine threshold.
        fraction: ``[S, F]``; ``|{s' ≠ s : best[s→s', i] ≥ tau}| / (S-1)``.
        mean_best: ``[S, F]``; ``mean_{s' ≠ s} best[s→s', i]`` (continuous, threshold-free).
        best: the :class:`CrossSeedBest` they were computed from (reuse it for other taus or
            for :func:`pool_decoders`).
    """

    tau: float
    fraction: Tensor
    mean_best: Tensor
    best: CrossSeedBest


def cross_seed_best_cosines(
    decoders: Sequence[Tensor],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    b_chunk_size: int = DEFAULT_B_CHUNK_SIZE,
    progress: bool = False,
) -> CrossSeedBest:
    """Best cosine of each feature of each seed in each other seed.

    ``values[s, j, i] = max_m <ŵ^s_i, ŵ^{s'}_m>`` with ``s' = other_seeds(S)[s, j]``; computed on
    the decoders' device, returned on the CPU. Each unordered pair ``{s, s'}`` costs one chunked pass (``F² d`` multiply-adds): its row
    maxima give ``s → s'`` and its column maxima ``s' → s``.

    Args:
        decoders: ``S ≥ 2`` decoder matrices ``[F, d]`` of the same shape (or one ``[S, F, d]``).
        chunk_size, b_chunk_size: block size, see :func:`best_cosine`.
        progress: show a tqdm bar over the ``S(S-1)/2`` pairs.
    """
    decs = check_decoders(decoders)
    cs = check_positive_int("chunk_size", chunk_size)
    bcs = check_positive_int("b_chunk_size", b_chunk_size)
    n, f = len(decs), decs[0].shape[0]
    dtype = compute_dtype(*decs)
    other = other_seeds(n)
    # each pair is searched on the device of its first decoder; the [S, S-1, F] table is on the CPU
    values = torch.empty((n, n - 1, f), dtype=dtype)
    indices = torch.empty((n, n - 1, f), dtype=torch.long)
    pairs = [(s, t) for s in range(n) for t in range(s + 1, n)]
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="cross-seed cosines", unit="pair")
    for s, t in pairs:
        va, ia, vb, ib = best_cosine_both_ways(decs[s], decs[t], cs, bcs)
        # position of t among the others of s is t - 1 (t > s); of s among the others of t is s.
        values[s, t - 1], indices[s, t - 1] = va, ia
        values[t, s], indices[t, s] = vb, ib
    return CrossSeedBest(values=values, indices=indices, other=other)


def stability_from_best(best: CrossSeedBest, tau: float = 0.7) -> StabilityScores:
    """Threshold precomputed best cosines: no cosine is recomputed.

    ``fraction[s, i] = mean_{s' ≠ s} 1[best[s→s', i] ≥ tau]``,
    ``mean_best[s, i] = mean_{s' ≠ s} best[s→s', i]``.
    """
    tau = check_tau(tau)
    if not isinstance(best, CrossSeedBest):
        raise ValueError(f"best must be a CrossSeedBest; got {type(best).__name__}")
    fraction = (best.values >= tau).to(best.values.dtype).mean(dim=1)
    mean_best = best.values.mean(dim=1)
    return StabilityScores(tau=tau, fraction=fraction, mean_best=mean_best, best=best)


def stability_scores(
    decoders: Sequence[Tensor],
    tau: float = 0.7,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    b_chunk_size: int = DEFAULT_B_CHUNK_SIZE,
    progress: bool = False,
) -> StabilityScores:
    """Per-feature stability of ``S`` independently seeded SAEs.

    For feature ``i`` of seed ``s``:

    * ``fraction[s, i] = |{s' ≠ s : max_m <ŵ^s_i, ŵ^{s'}_m> ≥ tau}| / (S - 1)`` — the fraction
      of the other seeds that hold a feature with decoder cosine ≥ ``tau``;
    * ``mean_best[s, i] = mean_{s' ≠ s} max_m <ŵ^s_i, ŵ^{s'}_m>`` — the continuous variant.

    Equivalent to ``stability_from_best(cross_seed_best_cosines(decoders), tau)``; for a tau
    sweep keep ``result.best`` and call :func:`stability_from_best` / :func:`tau_sweep`.
    """
    tau = check_tau(tau)
    best = cross_seed_best_cosines(decoders, chunk_size=chunk_size, b_chunk_size=b_chunk_size, progress=progress)
    return stability_from_best(best, tau)


def tau_sweep(best: CrossSeedBest, taus: Sequence[float]) -> Tensor:
    """Stability fraction at several thresholds from one set of best cosines.

    Returns ``[T, S, F]`` with ``out[t] = stability_from_best(best, taus[t]).fraction``; for
    increasing ``taus`` it is non-increasing along axis 0.
    """
    if not isinstance(best, CrossSeedBest):
        raise ValueError(f"best must be a CrossSeedBest; got {type(best).__name__}")
    taus = [check_tau(t, f"taus[{i}]") for i, t in enumerate(taus)]
    if not taus:
        raise ValueError("taus must hold at least one threshold in (0, 1]")
    thr = torch.tensor(taus, dtype=best.values.dtype, device=best.values.device)
    out = torch.empty((len(taus), best.n_seeds, best.n_features), dtype=best.values.dtype, device=best.values.device)
    for t in range(len(taus)):
        out[t] = (best.values >= thr[t]).to(best.values.dtype).mean(dim=1)
    return out


#: Names of the stability classes, in order: matched in no other seed, in some, in all.
STABILITY_CLASSES = ("unstable", "partial", "stable")
"""The classes of live features; `stability_class` may also return "dead" (see there)."""


def matched_seeds(scores: StabilityScores) -> Tensor:
    """``[S, F]`` int64: number of other seeds holding a match at ``scores.tau``."""
    if not isinstance(scores, StabilityScores):
        raise ValueError(f"scores must be a StabilityScores; got {type(scores).__name__}")
    n_other = scores.best.n_seeds - 1
    return torch.round(scores.fraction * n_other).to(torch.long)


def stability_class(fraction: Tensor, firings: np.ndarray | None = None, min_firings: int = 1) -> np.ndarray:
    """Class of each feature from its stability fraction: ``"unstable"`` (matched in no other
    seed, fraction 0), ``"stable"`` (matched in every other seed, fraction 1), else
    ``"partial"``. With two seeds there is no ``"partial"``.

    With ``firings`` (times each latent fired on held-out tokens, same shape), latents that fired
    fewer than ``min_firings`` times are ``"dead"`` whatever their fraction: a latent that never
    learned a direction cannot match across seeds, and counting it as an unstable feature would
    make "unstable" partly mean "dead" (short runs leave many)."""
    if not isinstance(fraction, Tensor):
        raise ValueError(f"fraction must be a tensor of stability fractions; got {type(fraction).__name__}")
    f = fraction.detach().cpu().double().numpy()
    if f.size and (np.nanmin(f) < 0 or np.nanmax(f) > 1):
        raise ValueError("fraction must lie in [0, 1] (it is a share of other seeds)")
    out = np.full(f.shape, "partial", dtype=object)
    out[f <= 1e-9] = "unstable"
    out[f >= 1 - 1e-9] = "stable"
    if firings is not None:
        firings = np.asarray(firings)
        if firings.shape != f.shape:
            raise ValueError(f"firings has shape {firings.shape}, fraction {f.shape}: one count per feature")
        out[firings < min_firings] = "dead"
    return out


def pair_match_fraction(a: Tensor, b: Tensor, tau: float = 0.7, **chunks) -> float:
    """Symmetric share of features matched between two dictionaries at ``tau``:
    ``½ (mean_i 1[max_j <â_i, b̂_j> ≥ tau] + mean_j 1[max_i <b̂_j, â_i> ≥ tau])``.

    The two-seed stability of a procedure (used to compare pooled and single-seed SAEs with the
    same number of replicates)."""
    tau = check_tau(tau)
    check_decoders([a, b])
    va, _ = best_cosine(a, b, **chunks)
    vb, _ = best_cosine(b, a, **chunks)
    return 0.5 * (float((va >= tau).double().mean()) + float((vb >= tau).double().mean()))


def within_seed_best(decoder: Tensor, **chunks) -> Tensor:
    """``[F]``: each feature's best cosine to another feature of its own dictionary.

    Near 1 means the dictionary holds duplicates of that direction: a dictionary collapsed onto a
    few directions, copied many times, looks perfectly "stable" across seeds for the wrong reason.
    """
    w = check_matrix("decoder", decoder)
    if w.shape[0] < 2:
        raise ValueError(f"decoder needs at least 2 features to compare within; got {w.shape[0]}")
    values, _ = best_cosine(w, w, exclude_self=True, **chunks)
    return values  # on the CPU (best_cosine's results are)


def duplicate_share(decoder: Tensor, cosine: float, **chunks) -> float:
    """Share of a dictionary's features with another feature of the same dictionary at decoder
    cosine ≥ ``cosine`` (:func:`within_seed_best`): its within-seed duplicates."""
    return float((within_seed_best(decoder, **chunks) >= cosine).double().mean())


# --------------------------------------------------------------------------------------------
# null baselines: the stability of dictionaries with no learned structure
# --------------------------------------------------------------------------------------------

#: Null dictionaries :func:`null_decoders` draws; see there.
NULL_KINDS = ("covariance", "clipped", "isotropic_span")
#: A direction is an outlier of the covariance when its variance exceeds this × the median.
OUTLIER_FACTOR = 10.0


def data_subspace(cov: Tensor, energy: float = 0.9) -> Tensor:
    """``[r, d]`` orthonormal rows: the top principal directions of ``cov`` holding ``energy`` of
    the variance (the data's span, in the sense "the dimensions that hold 90 % of the variance")."""
    from ..checks import check_unit_interval

    energy = check_unit_interval("energy", energy)
    lam, vec = torch.linalg.eigh(0.5 * (cov + cov.T).double())
    lam, vec = lam.flip(0).clamp_min(0), vec.flip(1)
    r = int((torch.cumsum(lam, 0) / lam.sum() < energy - 1e-12).sum()) + 1
    return vec[:, :r].T.contiguous()


def null_decoders(
    kind: str,
    n_seeds: int,
    n_features: int,
    cov: Tensor,
    generator: torch.Generator | None = None,
    energy: float = 0.9,
) -> list[Tensor]:
    """``n_seeds`` independent ``[n_features, d]`` dictionaries with no learned structure.

    * ``"covariance"``: rows drawn from ``N(0, Σ)``, ``Σ = cov`` (the activation covariance): the
      shape of the data, nothing else. On anisotropic data (a few massive dimensions) its rows are
      mutually similar, so it overstates chance: read it with the others.
    * ``"clipped"``: rows from ``N(0, Σ')`` where ``Σ'`` is ``Σ`` with every eigenvalue above
      ``OUTLIER_FACTOR`` × the median eigenvalue clipped to that level: the few massive-activation
      directions of real LMs no longer dominate every row.
    * ``"isotropic_span"``: rows uniform on the unit sphere of the data's span
      (:func:`data_subspace` at ``energy``): the chance level of a matching made in as many
      effective dimensions as the data has.
    """
    from ..checks import check_choice, check_generator

    check_choice("kind", kind, NULL_KINDS)
    n_seeds = check_positive_int("n_seeds", n_seeds)
    n_features = check_positive_int("n_features", n_features)
    cov = check_matrix("cov", cov)
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [d, d] covariance; got {list(cov.shape)}")
    check_generator(generator)
    c = 0.5 * (cov + cov.T).double().cpu()
    d = c.shape[0]
    if kind == "isotropic_span":
        basis = data_subspace(c, energy)  # [r, d]
        root = basis.T  # x = basis.T g, g ~ N(0, I_r): isotropic inside the span
        width = basis.shape[0]
    else:
        lam, vec = torch.linalg.eigh(c)
        lam = lam.clamp_min(0)
        if kind == "clipped":
            lam = lam.clamp_max(OUTLIER_FACTOR * float(lam.median()))
        root = vec * lam.sqrt()
        width = d
    out = []
    for _ in range(n_seeds):
        g = torch.randn(n_features, width, generator=generator, dtype=torch.float64)
        out.append((g @ root.T).float())
    return out


def null_stability(decoders_null: Sequence[Tensor], tau: float) -> dict[str, float]:
    """Stability of a set of null dictionaries at ``tau``: ``fraction_stable`` (matched in every
    other seed), ``fraction_any`` (matched in at least one), ``mean_best``, averaged over seeds
    and features, and ``pair_share``, the two-seed share matched (:func:`pair_match_fraction`
    of the first two)."""
    sc = stability_scores(decoders_null, tau)
    return {
        "fraction_stable": float((sc.fraction >= 1 - 1e-9).double().mean()),
        "fraction_any": float((sc.fraction > 1e-9).double().mean()),
        "mean_best": float(sc.mean_best.double().mean()),
        "pair_share": pair_match_fraction(decoders_null[0], decoders_null[1], tau),
    }
