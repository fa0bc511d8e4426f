"""Cross-seed feature stability, subspace geometry and pooled dictionaries (study 1).

Pure tensor functions: no I/O, no model code — except the last two sections, the study-1
grid helpers and :func:`fit_pooled_sae`, which trains (SAELens ``SAETrainer``) and caches. Decoder matrices use the SAELens layout
``W_dec [F, d]``, one row per feature. A *feature direction* is a decoder row scaled to unit
length; every cosine here is between such unit rows. Cosines are signed (an SAE latent fires
with a non-negative coefficient, so ``v`` and ``-v`` are different features): a match needs a
*positive* cosine of at least ``tau``.

Definitions this repository chooses (the stability paper does not publish its own, see
``DESIGN.md``, "Where the papers are silent"):

* best cosine of row ``a_i`` against dictionary ``B``:  ``c_i = max_j <â_i, b̂_j>``,
  with ``x̂ = x / ‖x‖``;
* stability of feature ``i`` of seed ``s`` among ``S`` seeds at threshold ``tau``:
  ``fraction[s, i] = |{s' ≠ s : max_j <ŵ^s_i, ŵ^{s'}_j> ≥ tau}| / (S - 1)``;
* continuous variant: ``mean_best[s, i] = mean_{s' ≠ s} max_j <ŵ^s_i, ŵ^{s'}_j>``.

Large dictionaries (65,536 × 65,536 at d = 768) are searched block by block: the full
``F_a × F_b`` similarity matrix is never built, only one reused block of
``chunk_size × b_chunk_size`` floats (256 MiB at the float32 defaults). Inputs may be
``nn.Parameter``s (e.g. ``sae.W_dec``): everything here works on detached values, no gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_B_CHUNK_SIZE",
    "HUNGARIAN_MAX_FEATURES",
    "best_cosine",
    "topk_cosine",
    "CrossSeedBest",
    "StabilityScores",
    "other_seeds",
    "cross_seed_best_cosines",
    "stability_from_best",
    "stability_scores",
    "tau_sweep",
    "hungarian_match",
    "mean_matched_cosine",
    "effective_rank",
    "entropy_effective_rank",
    "principal_angles",
    "projection_overlap",
    "random_subspace",
    "covariance_subspace",
    "PooledDictionary",
    "pool_decoders",
    "STABILITY_CLASSES",
    "matched_seeds",
    "stability_class",
    "pair_match_fraction",
    "top_subspace",
    "captured_energy",
    "subspace_reproducibility",
    "seed_groups",
    "POOLED_REFIT",
    "pooled_encoder_init",
    "fit_pooled_sae",
    "GridCell",
    "check_study01",
    "study01_grid",
    "grid_spec",
]

#: Rows of ``a`` per block.
DEFAULT_CHUNK_SIZE = 4096
#: Rows of ``b`` per block. 4096 × 16384 float32 = 256 MiB per block.
DEFAULT_B_CHUNK_SIZE = 16384
#: Largest dictionary ``hungarian_match`` accepts by default: the dense cost matrix is then
#: at most 16384² float64 = 2 GiB (scipy works in float64), and the O(F³) assignment still
#: finishes in minutes on a CPU.
HUNGARIAN_MAX_FEATURES = 16384


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_matrix(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [n, d]; got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d] (one row per vector); got shape {list(x.shape)}")
    if not (x.is_floating_point()):
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {list(x.shape)}")
    return x


def _check_same_d(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same input size d (dim 1); got "
            f"{name_a} {list(a.shape)} and {name_b} {list(b.shape)}"
        )


def _check_tau(tau: object, name: str = "tau") -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (0.0 < float(tau) <= 1.0):
        raise ValueError(f"{name} must be a number in (0, 1]; got {tau!r}")
    return float(tau)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _check_decoders(decoders: object) -> list[Tensor]:
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
        _check_matrix(f"decoders[{s}]", w)
    shape0 = tuple(decs[0].shape)
    bad = [(s, list(w.shape)) for s, w in enumerate(decs) if tuple(w.shape) != shape0]
    if bad:
        listing = ", ".join(f"decoders[{s}] {sh}" for s, sh in bad)
        raise ValueError(
            "decoders must all have the same shape [F, d] (same width F and input size d); "
            f"decoders[0] is {list(shape0)} but {listing}"
        )
    return decs


def _compute_dtype(*xs: Tensor) -> torch.dtype:
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    if dt in (torch.float16, torch.bfloat16):
        dt = torch.float32
    return dt


def _unit_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Rows scaled to unit L2 norm; an all-zero row stays zero (cosine 0 with everything)."""
    x = x.to(dtype)
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


# --------------------------------------------------------------------------------------------
# chunked cosine search
# --------------------------------------------------------------------------------------------


def _blocks(
    a: Tensor,
    b: Tensor,
    chunk_size: int,
    b_chunk_size: int,
    exclude_self: bool = False,
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(i0, j0, S)`` with ``S = â[i0:i0+ca] @ b̂[j0:j0+cb]ᵀ``, one block at a time.

    The block lives in one reused buffer of ``chunk_size × b_chunk_size`` elements; a consumer
    must finish with a block before asking for the next. With ``exclude_self`` the entries
    ``i == j`` are set to ``-inf``.
    """
    a, b = a.detach(), b.detach()
    dtype = _compute_dtype(a, b)
    fa, fb = a.shape[0], b.shape[0]
    ca_max, cb_max = min(chunk_size, fa), min(b_chunk_size, fb)
    buf = torch.empty(ca_max * cb_max, dtype=dtype, device=a.device)
    b_whole = _unit_rows(b, dtype) if fb <= cb_max else None
    for i0 in range(0, fa, ca_max):
        a_n = _unit_rows(a[i0 : i0 + ca_max], dtype)
        ca = a_n.shape[0]
        for j0 in range(0, fb, cb_max):
            b_n = b_whole if b_whole is not None else _unit_rows(b[j0 : j0 + cb_max], dtype)
            cb = b_n.shape[0]
            block = buf[: ca * cb].view(ca, cb)
            torch.mm(a_n, b_n.T, out=block)
            if exclude_self:
                lo, hi = max(i0, j0), min(i0 + ca, j0 + cb)
                if lo < hi:
                    idx = torch.arange(lo, hi, device=block.device)
                    block[idx - i0, idx - j0] = -math.inf
            yield i0, j0, block


def _check_pair(a: object, b: object, chunk_size: object, b_chunk_size: object, exclude_self: bool):
    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
    _check_same_d("a", a, "b", b)
    cs = _check_positive_int("chunk_size", chunk_size)
    bcs = _check_positive_int("b_chunk_size", b_chunk_size)
    if exclude_self and a.shape[0] != b.shape[0]:
        raise ValueError(
            "exclude_self=True needs a and b to be the same dictionary (same number of rows); got "
            f"a {list(a.shape)} and b {list(b.shape)}"
        )
    return a, b, cs, bcs


def best_cosine(
    a: Tensor,
    b: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    b_chunk_size: int = DEFAULT_B_CHUNK_SIZE,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """Best cosine of every row of ``a`` against the rows of ``b``.

    ``values[i] = max_j <â_i, b̂_j>`` and ``indices[i] = argmax_j <â_i, b̂_j>`` with
    ``x̂ = x / ‖x‖`` (all-zero rows have cosine 0 with everything).

    Computed in blocks of ``chunk_size`` rows of ``a`` × ``b_chunk_size`` rows of ``b``, so the
    extra memory is one block (``chunk_size · b_chunk_size`` floats, 256 MiB at the float32
    defaults) plus the unit-normalised chunks — never the full ``F_a × F_b`` matrix.
    Half-precision inputs are computed in float32; float64 stays float64.

    Args:
        a: ``[F_a, d]`` (e.g. a decoder ``W_dec``).
        b: ``[F_b, d]``.
        chunk_size: rows of ``a`` per block.
        b_chunk_size: rows of ``b`` per block.
        exclude_self: ``a`` and ``b`` are the same dictionary; ignore ``j == i`` (nearest *other*
            feature, e.g. to find within-dictionary duplicates).

    Returns:
        ``(values [F_a], indices [F_a] int64)``.
    """
    a, b, cs, bcs = _check_pair(a, b, chunk_size, b_chunk_size, exclude_self)
    dtype = _compute_dtype(a, b)
    values = torch.full((a.shape[0],), -math.inf, dtype=dtype, device=a.device)
    indices = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
    for i0, j0, block in _blocks(a, b, cs, bcs, exclude_self):
        v, j = block.max(dim=1)
        sl = slice(i0, i0 + block.shape[0])
        better = v > values[sl]
        values[sl] = torch.where(better, v, values[sl])
        indices[sl] = torch.where(better, j + j0, indices[sl])
    return values, indices


def topk_cosine(
    a: Tensor,
    b: Tensor,
    k: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    b_chunk_size: int = DEFAULT_B_CHUNK_SIZE,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """The ``k`` largest cosines of every row of ``a`` against the rows of ``b``, descending.

    Same definitions and memory bound as :func:`best_cosine` (plus ``F_a × 2k`` for the
    running candidates); column 0 equals :func:`best_cosine`.

    Returns:
        ``(values [F_a, k], indices [F_a, k] int64)``, sorted by value, largest first.
    """
    a, b, cs, bcs = _check_pair(a, b, chunk_size, b_chunk_size, exclude_self)
    k = _check_positive_int("k", k)
    n_cand = b.shape[0] - (1 if exclude_self else 0)
    if k > n_cand:
        raise ValueError(f"k must be at most the number of candidate rows of b ({n_cand}); got {k}")
    dtype = _compute_dtype(a, b)
    values = torch.full((a.shape[0], k), -math.inf, dtype=dtype, device=a.device)
    indices = torch.zeros((a.shape[0], k), dtype=torch.long, device=a.device)
    for i0, j0, block in _blocks(a, b, cs, bcs, exclude_self):
        kk = min(k, block.shape[1])
        v, j = block.topk(kk, dim=1)
        sl = slice(i0, i0 + block.shape[0])
        cand_v = torch.cat([values[sl], v], dim=1)
        cand_i = torch.cat([indices[sl], j + j0], dim=1)
        top_v, pos = cand_v.topk(k, dim=1)
        values[sl] = top_v
        indices[sl] = cand_i.gather(1, pos)
    return values, indices


def _best_cosine_both_ways(
    a: Tensor, b: Tensor, chunk_size: int, b_chunk_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row maxima (a → b) and column maxima (b → a) of the same blocks: one matmul per pair."""
    dtype = _compute_dtype(a, b)
    va = torch.full((a.shape[0],), -math.inf, dtype=dtype, device=a.device)
    ia = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
    vb = torch.full((b.shape[0],), -math.inf, dtype=dtype, device=a.device)
    ib = torch.zeros(b.shape[0], dtype=torch.long, device=a.device)
    for i0, j0, block in _blocks(a, b, chunk_size, b_chunk_size):
        ca, cb = block.shape
        v, j = block.max(dim=1)
        sl = slice(i0, i0 + ca)
        better = v > va[sl]
        va[sl] = torch.where(better, v, va[sl])
        ia[sl] = torch.where(better, j + j0, ia[sl])
        v, i = block.max(dim=0)
        sl = slice(j0, j0 + cb)
        better = v > vb[sl]
        vb[sl] = torch.where(better, v, vb[sl])
        ib[sl] = torch.where(better, i + i0, ib[sl])
    return va, ia, vb, ib


# --------------------------------------------------------------------------------------------
# stability across seeds
# --------------------------------------------------------------------------------------------


def other_seeds(n_seeds: int) -> Tensor:
    """``[S, S-1]`` int64: row ``s`` lists the seeds ``s' ≠ s`` in increasing order.

    This is the meaning of axis 1 of :attr:`CrossSeedBest.values`.
    """
    n = _check_positive_int("n_seeds", n_seeds)
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

    ``values[s, j, i] = max_m <ŵ^s_i, ŵ^{s'}_m>`` with ``s' = other_seeds(S)[s, j]``.
    Each unordered pair ``{s, s'}`` costs one chunked pass (``F² d`` multiply-adds): its row
    maxima give ``s → s'`` and its column maxima ``s' → s``.

    Args:
        decoders: ``S ≥ 2`` decoder matrices ``[F, d]`` of the same shape (or one ``[S, F, d]``).
        chunk_size, b_chunk_size: block size, see :func:`best_cosine`.
        progress: show a tqdm bar over the ``S(S-1)/2`` pairs.
    """
    decs = _check_decoders(decoders)
    cs = _check_positive_int("chunk_size", chunk_size)
    bcs = _check_positive_int("b_chunk_size", b_chunk_size)
    n, f = len(decs), decs[0].shape[0]
    dtype = _compute_dtype(*decs)
    device = decs[0].device
    other = other_seeds(n)
    values = torch.empty((n, n - 1, f), dtype=dtype, device=device)
    indices = torch.empty((n, n - 1, f), dtype=torch.long, device=device)
    pairs = [(s, t) for s in range(n) for t in range(s + 1, n)]
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="cross-seed cosines", unit="pair")
    for s, t in pairs:
        va, ia, vb, ib = _best_cosine_both_ways(decs[s], decs[t], cs, bcs)
        # position of t among the others of s is t - 1 (t > s); of s among the others of t is s.
        values[s, t - 1], indices[s, t - 1] = va, ia
        values[t, s], indices[t, s] = vb, ib
    return CrossSeedBest(values=values, indices=indices, other=other)


def stability_from_best(best: CrossSeedBest, tau: float = 0.7) -> StabilityScores:
    """Threshold precomputed best cosines: no cosine is recomputed.

    ``fraction[s, i] = mean_{s' ≠ s} 1[best[s→s', i] ≥ tau]``,
    ``mean_best[s, i] = mean_{s' ≠ s} best[s→s', i]``.
    """
    tau = _check_tau(tau)
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
    tau = _check_tau(tau)
    best = cross_seed_best_cosines(decoders, chunk_size=chunk_size, b_chunk_size=b_chunk_size, progress=progress)
    return stability_from_best(best, tau)


def tau_sweep(best: CrossSeedBest, taus: Sequence[float]) -> Tensor:
    """Stability fraction at several thresholds from one set of best cosines.

    Returns ``[T, S, F]`` with ``out[t] = stability_from_best(best, taus[t]).fraction``; for
    increasing ``taus`` it is non-increasing along axis 0.
    """
    if not isinstance(best, CrossSeedBest):
        raise ValueError(f"best must be a CrossSeedBest; got {type(best).__name__}")
    taus = [_check_tau(t, "taus[%d]" % i) for i, t in enumerate(taus)]
    if not taus:
        raise ValueError("taus must hold at least one threshold in (0, 1]")
    thr = torch.tensor(taus, dtype=best.values.dtype, device=best.values.device)
    out = torch.empty(
        (len(taus), best.n_seeds, best.n_features), dtype=best.values.dtype, device=best.values.device
    )
    for t in range(len(taus)):
        out[t] = (best.values >= thr[t]).to(best.values.dtype).mean(dim=1)
    return out


# --------------------------------------------------------------------------------------------
# Hungarian matching (Paulo & Belrose 2025)
# --------------------------------------------------------------------------------------------


def hungarian_match(
    a: Tensor, b: Tensor, *, max_features: int = HUNGARIAN_MAX_FEATURES
) -> tuple[Tensor, Tensor, Tensor]:
    """One-to-one matching of the rows of ``a`` and ``b`` that maximises the total cosine.

    Solves ``max_π Σ_i <â_i, b̂_{π(i)}>`` over injective ``π`` with
    ``scipy.optimize.linear_sum_assignment(C, maximize=True)`` on the dense cosine matrix
    ``C = â b̂ᵀ`` (``F_a × F_b``, built in float64 by scipy). ``F_a ≠ F_b`` is allowed: then
    ``min(F_a, F_b)`` pairs are returned.

    Raises ValueError when ``max(F_a, F_b) > max_features`` (default 16,384: a 2 GiB dense
    float64 matrix and an ``O(F³)`` solve); use :func:`best_cosine` (chunked) for larger ones.

    Returns:
        ``(row_ind, col_ind, cosines)``: int64 ``[M]``, int64 ``[M]`` and ``[M]`` with
        ``cosines[k] = <â_{row_ind[k]}, b̂_{col_ind[k]}>``; ``row_ind`` is sorted.
    """
    from scipy.optimize import linear_sum_assignment

    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
    _check_same_d("a", a, "b", b)
    limit = _check_positive_int("max_features", max_features)
    biggest = max(a.shape[0], b.shape[0])
    if biggest > limit:
        gib = a.shape[0] * b.shape[0] * 8 / 2**30
        raise ValueError(
            f"hungarian_match builds the dense F_a × F_b cosine matrix; got a {list(a.shape)} and "
            f"b {list(b.shape)} ({gib:.1f} GiB in float64), above the limit max_features={limit} "
            "rows per dictionary. Use best_cosine (chunked) for dictionaries this large, or pass "
            "a larger max_features if the machine can hold it."
        )
    dtype = _compute_dtype(a, b)
    sim = _unit_rows(a.detach(), dtype) @ _unit_rows(b.detach(), dtype).T
    sim_np = sim.detach().cpu().numpy()
    row, col = linear_sum_assignment(sim_np, maximize=True)
    row_t = torch.from_numpy(np.asarray(row, dtype=np.int64))
    col_t = torch.from_numpy(np.asarray(col, dtype=np.int64))
    cos = sim[row_t.to(sim.device), col_t.to(sim.device)]
    return row_t, col_t, cos


def mean_matched_cosine(a: Tensor, b: Tensor, *, max_features: int = HUNGARIAN_MAX_FEATURES) -> float:
    """Mean cosine of the Hungarian one-to-one matching: ``(1/M) Σ_k <â_{r_k}, b̂_{c_k}>``.

    The cross-seed similarity of Paulo & Belrose (2025); see :func:`hungarian_match`.
    """
    _, _, cos = hungarian_match(a, b, max_features=max_features)
    return float(cos.mean())


# --------------------------------------------------------------------------------------------
# subspace geometry
# --------------------------------------------------------------------------------------------


def _singular_values(x: Tensor) -> Tensor:
    return torch.linalg.svdvals(x.detach().to(torch.float64))


def _row_basis(name: str, x: Tensor) -> Tensor:
    """Orthonormal basis (rows, float64) of the row space of ``x``.

    Numerical rank: singular values above ``σ_max · max(n, d) · eps(dtype of x)``.
    """
    x = _check_matrix(name, x)
    eps = torch.finfo(x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32).eps
    _, s, vh = torch.linalg.svd(x.detach().to(torch.float64), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        raise ValueError(f"{name} spans the zero subspace (all rows are zero); it needs rank >= 1")
    tol = float(s[0]) * max(x.shape) * eps
    r = int((s > tol).sum())
    return vh[:r]


def effective_rank(vectors: Tensor, energy: float = 0.9) -> int:
    """Energy effective rank: how many singular values hold ``energy`` of the squared energy.

    With ``σ_1 ≥ σ_2 ≥ …`` the singular values of ``vectors`` (``[n, d]``, rows, not centred —
    centre them first for a PCA reading) this is the smallest ``k`` with
    ``Σ_{i≤k} σ_i² / Σ_i σ_i² ≥ energy``. An integer in ``[1, min(n, d)]``; for the
    threshold-free (entropy) version see :func:`entropy_effective_rank`.
    """
    x = _check_matrix("vectors", vectors)
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not (0.0 < float(energy) <= 1.0):
        raise ValueError(f"energy must be a number in (0, 1]; got {energy!r}")
    s2 = _singular_values(x) ** 2
    total = float(s2.sum())
    if total == 0.0:
        raise ValueError("vectors are all zero; the effective rank is undefined")
    cum = torch.cumsum(s2, 0) / total
    # a small slack so that energy = 1.0 is not missed by rounding in the cumulative sum
    k = int((cum < float(energy) - 1e-12).sum()) + 1
    return min(k, s2.numel())


def entropy_effective_rank(vectors: Tensor) -> float:
    """Entropy effective rank ``exp(H(p))`` with ``p_i = σ_i² / Σ_j σ_j²``, ``H = -Σ p_i log p_i``.

    ``σ_i`` are the singular values of ``vectors`` (``[n, d]``, not centred). Equals ``r`` for
    ``r`` equal singular values and is continuous in between. Note: Roy & Vetterli (2007) use
    ``p_i = σ_i / Σσ_j``; this repository uses the squared (energy) shares, the same ``p`` as
    :func:`effective_rank`.
    """
    x = _check_matrix("vectors", vectors)
    s2 = _singular_values(x) ** 2
    total = float(s2.sum())
    if total == 0.0:
        raise ValueError("vectors are all zero; the effective rank is undefined")
    p = s2 / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def principal_angles(A: Tensor, B: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the row spaces of ``A`` and ``B``.

    ``A`` is ``[k_A, d]``, ``B`` is ``[k_B, d]``; the rows span the subspaces (any basis, any
    scale). With ``Q_A``, ``Q_B`` orthonormal bases (as rows, from an SVD; numerical rank as in
    the SVD tolerance ``σ_max · max(k, d) · eps``), ``cos θ_i`` are the singular values of
    ``Q_A Q_Bᵀ`` (``Q_Aᵀ Q_B`` in column convention). Angles with ``cos² θ ≥ 1/2`` are taken
    from ``sin θ_i`` = singular values of ``Q_small − Q_small Q_bigᵀ Q_big`` instead, which is
    accurate for small angles (Björck & Golub 1973; Knyazev & Argentati 2002).

    Returns ``min(dim A, dim B)`` angles in float64, in ``[0, π/2]``.
    """
    _check_same_d("A", _check_matrix("A", A), "B", _check_matrix("B", B))
    qa = _row_basis("A", A)
    qb = _row_basis("B", B)
    small, big = (qa, qb) if qa.shape[0] <= qb.shape[0] else (qb, qa)
    cos = torch.linalg.svdvals(small @ big.T).clamp(0.0, 1.0)  # descending
    resid = small - (small @ big.T) @ big
    sin = torch.linalg.svdvals(resid).clamp(0.0, 1.0).flip(0)  # ascending, pairs with cos desc
    angles = torch.where(cos**2 < 0.5, torch.arccos(cos), torch.arcsin(sin))
    return torch.sort(angles).values


def projection_overlap(A: Tensor, B: Tensor) -> float:
    """``‖P_A P_B‖_F² / min(dim A, dim B)`` for the row spaces of ``A`` and ``B``.

    ``P_X`` is the orthogonal projector onto span(rows of ``X``); ``‖P_A P_B‖_F² = ‖Q_A Q_Bᵀ‖_F²
    = Σ_i cos² θ_i`` over the principal angles. 1 when one subspace contains the other
    (identical subspaces), 0 when orthogonal; for independent uniformly random subspaces of
    dimensions ``k_A, k_B`` in ``R^d`` its expectation is ``max(k_A, k_B) / d`` (``k / d`` for
    equal dimensions).
    """
    _check_same_d("A", _check_matrix("A", A), "B", _check_matrix("B", B))
    qa = _row_basis("A", A)
    qb = _row_basis("B", B)
    return float((qa @ qb.T).pow(2).sum() / min(qa.shape[0], qb.shape[0]))


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")


def random_subspace(
    dim: int, d: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Orthonormal basis ``[dim, d]`` (rows) of a uniformly random (Haar) ``dim``-dim subspace.

    QR of a ``d × dim`` standard Gaussian matrix ``G = Q R`` with the signs of ``diag R`` moved
    into ``Q`` (Mezzadri 2007), so ``Q`` is Haar-distributed; returns ``Qᵀ``.
    """
    d = _check_positive_int("d", d)
    dim = _check_positive_int("dim", dim)
    if dim > d:
        raise ValueError(f"dim must be in [1, d] = [1, {d}]; got {dim}")
    _check_generator(generator)
    g = torch.randn(d, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
    return q.T.contiguous().to(dtype)


def covariance_subspace(dim: int, cov: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Orthonormal basis (rows) of the span of ``dim`` random vectors ``z_k ~ N(0, cov)``.

    The "activation-shaped" random reference: with ``cov = Σ`` the activation covariance
    (``[d, d]``, symmetric PSD), ``z = L g`` with ``g ~ N(0, I)`` and ``L = V diag(√λ⁺)`` from the
    eigendecomposition ``Σ = V diag(λ) Vᵀ`` (negative round-off eigenvalues clipped to 0).
    Returns ``[r, d]`` in ``cov``'s dtype, ``r = dim`` unless ``cov`` has rank below ``dim``
    (then ``r`` = the numerical rank of the samples).
    """
    cov = _check_matrix("cov", cov)
    dim = _check_positive_int("dim", dim)
    d = cov.shape[0]
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [d, d] covariance matrix; got shape {list(cov.shape)}")
    if dim > d:
        raise ValueError(f"dim must be in [1, d] = [1, {d}]; got {dim}")
    _check_generator(generator)
    c = cov.detach().to(torch.float64).cpu()
    c = 0.5 * (c + c.T)
    lam, vec = torch.linalg.eigh(c)
    if float(lam.max()) <= 0.0:
        raise ValueError("cov must have a positive eigenvalue (it is zero or negative definite)")
    L = vec * lam.clamp_min(0.0).sqrt()
    g = torch.randn(dim, d, generator=generator, dtype=torch.float64)
    z = g @ L.T
    return _row_basis("samples", z).to(cov.dtype)


# --------------------------------------------------------------------------------------------
# pooled stable dictionary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PooledDictionary:
    """Directions merged across seeds, ranked by support.

    Attributes:
        directions: ``[K, d]`` unit rows (normalised mean of each group's unit members).
        support: ``[K]`` int64, number of distinct seeds among the group's members.
        members: ``K`` int64 tensors ``[m_k, 2]`` of ``(seed, feature)`` pairs, the leader first.
        score: ``[K]`` the secondary ranking key (mean over members; see :func:`pool_decoders`).
        tau: the merge threshold.
    """

    directions: Tensor
    support: Tensor
    members: list[Tensor]
    score: Tensor
    tau: float

    def __len__(self) -> int:
        return int(self.directions.shape[0])


def pool_decoders(
    decoders: Sequence[Tensor],
    tau: float = 0.7,
    size: int | None = None,
    *,
    best: CrossSeedBest | None = None,
    scores: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    b_chunk_size: int = DEFAULT_B_CHUNK_SIZE,
) -> PooledDictionary:
    """Pool the unit decoder rows of all seeds and greedily merge cross-seed near-duplicates.

    Procedure (this repository's choice; the stability paper does not publish its own):

    1. Pool the ``N = S·F`` unit rows ``ŵ^s_i``.
    2. Near-duplicate graph from the best-match cosines (:func:`cross_seed_best_cosines`; pass
       ``best`` to reuse them, otherwise they are computed, chunked): an edge joins
       ``(s, i)`` and ``(s', m)`` when ``m`` is the best match of ``i`` in seed ``s'`` or ``i`` the
       best match of ``m`` in seed ``s``, and their cosine is ``≥ tau``. Two features of the
       same seed are merged only through a common match in another seed; the full
       ``N × N`` matrix is never built.
    3. Greedy leader merge: visit features by (number of other seeds matched at ``tau`` desc,
       mean best cosine desc, pooled index asc); an unassigned feature becomes a leader and
       takes every still-unassigned neighbour (all have cosine ``≥ tau`` with the leader, so all
       point the same way). Merged direction = ``normalise(Σ_members ŵ)`` — signs are not
       flipped, the mean keeps the members' positive orientation.
    4. Rank groups by ``support`` = number of distinct seeds among the members (desc), then by
       ``score`` = mean over members of ``scores[s, i]`` if given (e.g. firing frequency or
       ``StabilityScores.mean_best``) or else of the mean best cosine ``mean_best[s, i]``
       (desc), then by leader order; keep the first ``size`` (all if ``None``; fewer if there
       are fewer groups).

    Args:
        decoders: ``S ≥ 2`` matrices ``[F, d]`` of the same shape.
        tau: merge threshold in ``(0, 1]``.
        size: number of directions to keep, or ``None`` for all groups.
        best: precomputed :class:`CrossSeedBest` of the same decoders (skips the ``S(S-1)/2``
            chunked passes that dominate the cost).
        scores: optional ``[S, F]`` per-feature secondary ranking key (higher ranks first).
    """
    decs = _check_decoders(decoders)
    tau = _check_tau(tau)
    if size is not None:
        size = _check_positive_int("size", size)
    n_seeds, f = len(decs), decs[0].shape[0]
    if best is None:
        best = cross_seed_best_cosines(decs, chunk_size=chunk_size, b_chunk_size=b_chunk_size)
    elif not isinstance(best, CrossSeedBest) or tuple(best.values.shape) != (n_seeds, n_seeds - 1, f):
        got = list(best.values.shape) if isinstance(best, CrossSeedBest) else type(best).__name__
        raise ValueError(
            f"best must be the CrossSeedBest of these decoders, values of shape "
            f"[{n_seeds}, {n_seeds - 1}, {f}]; got {got}"
        )
    if scores is not None:
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (n_seeds, f):
            got = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"scores must be a tensor of shape [S, F] = [{n_seeds}, {f}]; got {got}")

    vals = best.values.detach().cpu().to(torch.float64)
    idx = best.indices.detach().cpu()
    other = best.other.cpu()
    n_total = n_seeds * f

    # per-feature priority keys
    matched = (vals >= tau).sum(dim=1).reshape(-1).numpy()  # [N]
    mean_best = vals.mean(dim=1).reshape(-1).numpy()  # [N]

    # edges (both directions), pooled ids = s * F + i
    keep = vals >= tau  # [S, S-1, F]
    s_ix, j_ix, i_ix = keep.nonzero(as_tuple=True)
    src = s_ix * f + i_ix
    dst = other[s_ix, j_ix] * f + idx[s_ix, j_ix, i_ix]
    u = torch.cat([src, dst]).numpy()
    v = torch.cat([dst, src]).numpy()
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    if u.size:
        dup = np.concatenate([[False], (u[1:] == u[:-1]) & (v[1:] == v[:-1])])
        u, v = u[~dup], v[~dup]
    indptr = np.zeros(n_total + 1, dtype=np.int64)
    np.add.at(indptr, u + 1, 1)
    indptr = np.cumsum(indptr)

    # greedy leader merge
    visit = np.lexsort((np.arange(n_total), -mean_best, -matched))
    label = np.full(n_total, -1, dtype=np.int64)
    n_groups = 0
    for node in visit:
        if label[node] >= 0:
            continue
        label[node] = n_groups
        nb = v[indptr[node] : indptr[node + 1]]
        if nb.size:
            nb = nb[label[nb] < 0]
            label[nb] = n_groups
        n_groups += 1
    leader_of_group = np.empty(n_groups, dtype=np.int64)
    is_leader = np.zeros(n_total, dtype=bool)
    # the first node of each group in visit order is its leader
    seen = np.zeros(n_groups, dtype=bool)
    for node in visit:
        g = label[node]
        if not seen[g]:
            seen[g] = True
            leader_of_group[g] = node
            is_leader[node] = True

    # merged directions
    dtype = _compute_dtype(*decs)
    units = torch.cat([_unit_rows(w.detach(), dtype).cpu() for w in decs])  # [N, d]
    lab_t = torch.from_numpy(label)
    sums = torch.zeros((n_groups, units.shape[1]), dtype=dtype).index_add_(0, lab_t, units)
    directions = sums / sums.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)

    seed_of = np.repeat(np.arange(n_seeds), f)
    seed_mask = np.zeros((n_groups, n_seeds), dtype=bool)
    seed_mask[label, seed_of] = True
    support = seed_mask.sum(axis=1)
    key = (scores.detach().cpu().to(torch.float64).reshape(-1).numpy() if scores is not None else mean_best)
    counts = np.bincount(label, minlength=n_groups)
    group_score = np.bincount(label, weights=key, minlength=n_groups) / counts

    rank = np.lexsort((np.arange(n_groups), -group_score, -support))
    if size is not None:
        rank = rank[:size]

    # members: leader first, then by pooled index
    by_group = np.lexsort((np.arange(n_total), ~is_leader, label))
    starts = np.concatenate([[0], np.cumsum(counts)])
    members = []
    for g in rank:
        nodes = by_group[starts[g] : starts[g + 1]]
        members.append(torch.from_numpy(np.stack([nodes // f, nodes % f], axis=1).astype(np.int64)))

    rank_t = torch.from_numpy(rank)
    return PooledDictionary(
        directions=directions[rank_t].to(decs[0].device),
        support=torch.from_numpy(support[rank].astype(np.int64)),
        members=members,
        score=torch.from_numpy(group_score[rank]),
        tau=tau,
    )


# --------------------------------------------------------------------------------------------
# study 1 analyses: stability classes, subspace comparisons, pooled-SAE comparisons
# --------------------------------------------------------------------------------------------

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
    tau = _check_tau(tau)
    _check_decoders([a, b])
    va, _ = best_cosine(a, b, **chunks)
    vb, _ = best_cosine(b, a, **chunks)
    return 0.5 * (float((va >= tau).double().mean()) + float((vb >= tau).double().mean()))


def top_subspace(rows: Tensor, dim: int) -> Tensor:
    """``[dim, d]`` orthonormal rows: the top-``dim`` right singular vectors of the unit rows of
    ``rows`` (uncentred; the subspace that holds most of the directions' energy)."""
    rows = _check_matrix("rows", rows)
    dim = _check_positive_int("dim", dim)
    if dim > min(rows.shape):
        raise ValueError(
            f"dim must be at most min(n_rows, d) = {min(rows.shape)} for rows of shape {list(rows.shape)}; got {dim}"
        )
    u = _unit_rows(rows.detach(), torch.float64)
    _, _, vh = torch.linalg.svd(u, full_matrices=False)
    return vh[:dim]


def captured_energy(rows: Tensor, basis: Tensor) -> float:
    """Mean share of each unit row's squared norm inside span(basis): ``mean_i ‖P â_i‖²``.

    For a uniformly random subspace of dimension ``k`` in ``R^d`` its expectation is ``k / d``."""
    rows = _check_matrix("rows", rows)
    basis = _check_matrix("basis", basis)
    _check_same_d("rows", rows, "basis", basis)
    q = _row_basis("basis", basis)
    u = _unit_rows(rows.detach(), torch.float64)
    return float((u @ q.T).pow(2).sum(1).mean())


def subspace_reproducibility(
    dec_a: Tensor,
    dec_b: Tensor,
    groups_a: dict[str, Tensor],
    groups_b: dict[str, Tensor],
    dim: int,
    cov: Tensor,
    generator: torch.Generator | None = None,
    n_random: int = 8,
) -> dict[str, dict[str, object]]:
    """Is a group of features (e.g. the unstable ones) reproducible as a subspace across two seeds?

    For each named group (boolean masks ``[F]`` over the rows of ``dec_a`` and ``dec_b``), take the
    top-``dim`` subspace of its unit decoder rows in each seed (:func:`top_subspace`) and compare
    the two: principal angles (cosines, descending), projection overlap
    (:func:`projection_overlap`) and the energy of seed b's group rows captured by seed a's
    subspace (:func:`captured_energy`). References, same dimension: ``"random"`` (two Haar-random
    subspaces) and ``"covariance"`` (two subspaces spanned by vectors drawn from ``N(0, cov)``),
    each averaged over ``n_random`` draws; for the references ``captured`` uses seed b's rows of
    the first group against a random (resp. covariance-drawn) subspace.

    Returns ``{name: {"cosines": ndarray [dim], "overlap": float, "captured": float,
    "n_a": int, "n_b": int}}`` for the groups and the two references.
    """
    _check_decoders([dec_a, dec_b])
    dim = _check_positive_int("dim", dim)
    n_random = _check_positive_int("n_random", n_random)
    d = dec_a.shape[1]
    if set(groups_a) != set(groups_b) or not groups_a:
        raise ValueError(f"groups_a and groups_b must name the same non-empty groups; got {sorted(groups_a)} and {sorted(groups_b)}")
    out: dict[str, dict[str, object]] = {}
    first_rows_b = None
    for name in groups_a:
        ma, mb = groups_a[name], groups_b[name]
        for which, m, dec in (("a", ma, dec_a), ("b", mb, dec_b)):
            if not isinstance(m, Tensor) or m.dtype != torch.bool or m.shape != (dec.shape[0],):
                raise ValueError(f"groups_{which}[{name!r}] must be a boolean mask of shape [{dec.shape[0]}]")
        ra, rb = dec_a.detach()[ma], dec_b.detach()[mb]
        if min(ra.shape[0], rb.shape[0]) < dim:
            raise ValueError(
                f"group {name!r} has {ra.shape[0]} features in seed a and {rb.shape[0]} in seed b; "
                f"dim={dim} needs at least {dim} in each"
            )
        qa, qb = top_subspace(ra, dim), top_subspace(rb, dim)
        cos = torch.cos(principal_angles(qa, qb)).numpy()
        out[name] = {"cosines": cos, "overlap": projection_overlap(qa, qb), "captured": captured_energy(rb, qa),
                     "n_a": int(ra.shape[0]), "n_b": int(rb.shape[0])}
        if first_rows_b is None:
            first_rows_b = rb
    for ref in ("random", "covariance"):
        coss, ovs, caps = [], [], []
        for _ in range(n_random):
            if ref == "random":
                qa, qb = random_subspace(dim, d, generator, dtype=torch.float64), random_subspace(dim, d, generator, dtype=torch.float64)
            else:
                qa, qb = covariance_subspace(dim, cov.double(), generator), covariance_subspace(dim, cov.double(), generator)
            coss.append(torch.cos(principal_angles(qa, qb)).numpy())
            ovs.append(projection_overlap(qa, qb))
            caps.append(captured_energy(first_rows_b, qa))
        out[ref] = {"cosines": np.mean(coss, 0), "overlap": float(np.mean(ovs)), "captured": float(np.mean(caps)),
                    "n_a": dim, "n_b": dim}
    return out


def seed_groups(seeds: Sequence[int], group_size: int) -> list[tuple[int, ...]]:
    """Split ``seeds`` into disjoint consecutive groups of ``group_size`` (≥ 2), at least two groups:
    the independent replicates of the pooled procedure. Leftover seeds are not used."""
    seeds = list(seeds)
    group_size = _check_positive_int("group_size", group_size)
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 (pooling needs ≥ 2 seeds); got {group_size}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {seeds}")
    if len(seeds) < 2 * group_size:
        raise ValueError(
            f"pooling replicates need at least 2 × group_size = {2 * group_size} seeds; got {len(seeds)} ({seeds})"
        )
    return [tuple(seeds[i : i + group_size]) for i in range(0, len(seeds) - group_size + 1, group_size)]


# --------------------------------------------------------------------------------------------
# pooled SAE refit (the one part of this module that trains: SAELens SAETrainer)
# --------------------------------------------------------------------------------------------

#: Version tag of the refit procedure, part of the artifact key.
POOLED_REFIT = "frozen-decoder-v4"


def _digest(*tensors: Tensor) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def pooled_encoder_init(pooled: PooledDictionary, saes: Sequence) -> tuple[Tensor, Tensor]:
    """Encoder start for a pooled dictionary: for pooled direction ``k`` the mean, over its members
    ``(seed, feature)``, of those features' encoder columns and biases in the seeds' SAEs
    (``saes[seed].W_enc[:, feature]``, ``saes[seed].b_enc[feature]``; inference SAEs, input space).

    Returns ``(W [K, d], b [K])``. Without it a pooled dictionary, whose directions are less
    orthogonal than one seed's, starts from a tied encoder that over-counts correlated directions.
    """
    if not isinstance(pooled, PooledDictionary):
        raise ValueError(f"pooled must be a PooledDictionary; got {type(pooled).__name__}")
    ws = [sae.W_enc.detach().T for sae in saes]  # [F, d] each
    bs = [sae.b_enc.detach() for sae in saes]
    if len({tuple(w.shape) for w in ws}) != 1:
        raise ValueError(f"saes must have encoders of the same shape; got {[list(w.shape) for w in ws]}")
    w_out = torch.empty((len(pooled), ws[0].shape[1]), dtype=ws[0].dtype)
    b_out = torch.empty(len(pooled), dtype=bs[0].dtype)
    for k, m in enumerate(pooled.members):
        if int(m[:, 0].max()) >= len(saes):
            raise ValueError(f"pooled member seed index {int(m[:, 0].max())} but only {len(saes)} saes were given")
        w_out[k] = torch.stack([ws[int(s)][int(i)] for s, i in m]).mean(0)
        b_out[k] = torch.stack([bs[int(s)][int(i)] for s, i in m]).mean(0)
    return w_out, b_out


def fit_pooled_sae(acts, directions: Tensor, spec, sae_cfg, store, *, sources: Sequence[str], tau: float,
                   train_tokens: int, batch_size: int = 4096, encoder_init: tuple[Tensor, Tensor] | None = None):
    """Fit a SAELens SAE whose decoder directions are the pooled ones, held fixed.

    Refit (this repository's choice, ``POOLED_REFIT``): build ``spec``'s training SAE (same
    architecture, size and sparsity as the seeds it pools), set its decoder rows to the unit
    ``directions`` ``[F, d]`` and its encoder to ``encoder_init`` (``(W [F, d], b [F])`` in input
    space, e.g. from :func:`pooled_encoder_init`, converted to the training SAE's normalised space)
    or, without it, to the decoder's transpose (tied initialisation), freeze the decoder (``requires_grad = False``) and train the
    encoder, encoder bias and decoder bias with ``SAETrainer`` for ``train_tokens`` tokens on
    ``acts`` (data order from ``spec.seed``). Latent magnitudes are the encoder's outputs, so the
    decoder directions — and hence the stability of the pooled dictionary — are exactly the
    pooled ones. Cached like any SAE, keyed also by the ``sources`` (artifact keys of the pooled
    SAEs) and ``tau``.

    Returns ``(SAE, Artifact)`` like :func:`sae_studies.train.train_sae`.
    """
    import dataclasses
    import json
    import time

    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from . import train as _train

    directions = _check_matrix("directions", directions)
    if tuple(directions.shape) != (spec.d_sae, acts.d):
        raise ValueError(
            f"directions must be [d_sae, d] = [{spec.d_sae}, {acts.d}] for this spec and activations; "
            f"got {list(directions.shape)} (pool_decoders returned fewer groups than the dictionary size?)"
        )
    tau = _check_tau(tau)
    train_tokens = _check_positive_int("train_tokens", train_tokens)
    steps = train_tokens // batch_size
    if steps < 1:
        raise ValueError(f"train_tokens ({train_tokens}) is smaller than one batch ({batch_size})")
    cfg = dataclasses.replace(sae_cfg, train_tokens=steps * batch_size)
    params = {**_train.artifact_params(spec, acts, cfg, batch_size),
              "pooled": {"sources": list(sources), "tau": tau, "refit": POOLED_REFIT, "directions": _digest(directions),
                         "encoder_init": None if encoder_init is None else _digest(*encoder_init)}}
    data = acts.batches(batch_size, seed=spec.seed)

    def build(tmp):
        sae = _train.build_training_sae(spec, acts.d, cfg, steps, data_mean=_train.normalised_mean(acts))
        w = _unit_rows(directions.detach(), torch.float32)
        with torch.no_grad():
            sae.W_dec.copy_(w)
            if encoder_init is None:
                sae.W_enc.copy_(w.T)
            else:
                # Saving folds the input scaling s = sqrt(d) / E‖x‖ into the inference SAE so that
                # its latents are the training latents / s (decoder rows unit, latents in raw
                # units): measured, W_inf = W_train and b_inf = b_train / s. Undo that here.
                # (tests/test_study01.py: a refit with lr ≈ 0 reproduces the source SAE.)
                x = acts.tensor(min(65_536, len(acts))).double()
                scale = float(acts.d**0.5 / x.norm(dim=-1).mean())
                sae.W_enc.copy_(encoder_init[0].T.float())
                sae.b_enc.copy_((encoder_init[1].double() * scale).float())
        sae.W_dec.requires_grad_(False)
        trainer = SAETrainer(
            SAETrainerConfig(
                total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=cfg.lr,
                lr_end=cfg.lr / 10, lr_warm_up_steps=int(steps * cfg.lr_warm_up_fraction),
                lr_decay_steps=int(steps * cfg.lr_decay_fraction), device=cfg.device,
                dead_feature_window=cfg.dead_feature_window, feature_sampling_window=max(1, steps),
                n_batches_for_norm_estimate=min(20, steps),
            ),
            sae, data_provider=data,
        )
        start = time.time()
        trainer.fit()
        seconds = time.time() - start
        moved = float((_unit_rows(sae.W_dec.detach(), torch.float32) * w).sum(1).min())
        sae.W_dec.requires_grad_(True)
        sae.cfg.metadata.hook_name = acts.hook
        sae.save_inference_model(tmp)
        summary = {"train_seconds": round(seconds, 2), "tokens_per_second": round(steps * batch_size / seconds),
                   "refit": POOLED_REFIT, "min_cosine_to_pooled": moved}
        (tmp / "training.json").write_text(json.dumps(summary, indent=1))
        return summary

    art = store.get_or_build("sae", params, build)
    return _train.load_sae(art.path, cfg.device), art


# --------------------------------------------------------------------------------------------
# study 1 grid and parameter checks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridCell:
    """One (layer, architecture, dictionary size) of the study-1 grid; all seeds share it."""

    layer: int
    architecture: str
    expansion_factor: int

    @property
    def label(self) -> str:
        return f"L{self.layer} {self.architecture} {self.expansion_factor}×"


def check_study01(cfg, n_layers: int) -> None:
    """Fail early, naming the parameter, on a study-1 configuration that cannot run."""
    from .train import architectures

    seeds = list(cfg.seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"study01.seeds must hold at least 2 distinct seeds; got {seeds}")
    _check_tau(cfg.tau, "study01.tau")
    for t in cfg.tau_sweep:
        _check_tau(t, "study01.tau_sweep entries")
    bad = [a for a in cfg.architectures if a not in architectures()]
    if bad or not cfg.architectures:
        raise ValueError(f"study01.architectures has unknown {bad}; valid: {architectures()}")
    bad = [layer for layer in cfg.layers if not 0 <= layer < n_layers]
    if bad or not cfg.layers:
        raise ValueError(f"study01.layers must be in [0, {n_layers - 1}]; got {list(cfg.layers)}")
    if cfg.analysis_expansion_factor not in cfg.expansion_factors:
        raise ValueError(
            f"study01.analysis_expansion_factor ({cfg.analysis_expansion_factor}) must be one of "
            f"study01.expansion_factors {list(cfg.expansion_factors)}"
        )
    if cfg.reduced_architectures and cfg.analysis_expansion_factor not in cfg.reduced_expansion_factors:
        raise ValueError(
            f"study01.analysis_expansion_factor ({cfg.analysis_expansion_factor}) must be one of "
            f"study01.reduced_expansion_factors {list(cfg.reduced_expansion_factors)}"
        )
    if not 0 < cfg.single_token_share <= 1:
        raise ValueError(f"study01.single_token_share must be in (0, 1]; got {cfg.single_token_share}")
    if cfg.pool_architecture not in cfg.architectures:
        raise ValueError(f"study01.pool_architecture must be one of study01.architectures {list(cfg.architectures)}")
    seed_groups(cfg.pool_seeds, cfg.pool_group_size)
    prefixes = list(cfg.matryoshka_prefixes)
    if any(not 0 < p < 1 for p in prefixes) or prefixes != sorted(set(prefixes)):
        raise ValueError(f"study01.matryoshka_prefixes must be strictly increasing fractions in (0, 1); got {prefixes}")


def study01_grid(cfg) -> list[GridCell]:
    """Every cell of the grid: layers × architectures × sizes, with the reduced architectures
    only at ``reduced_expansion_factors``."""
    cells = []
    for layer in cfg.layers:
        for arch in cfg.architectures:
            sizes = cfg.reduced_expansion_factors if arch in cfg.reduced_architectures else cfg.expansion_factors
            cells.extend(GridCell(layer, arch, ef) for ef in sizes if ef in cfg.expansion_factors)
    return cells


def grid_spec(cell: GridCell, d_in: int, k: int, cfg):
    """The :class:`sae_studies.train.SAESpec` of a grid cell (seed 0): ``d_sae = ef × d_in``,
    ``k`` for the TopK family, matryoshka widths from ``cfg.matryoshka_prefixes``."""
    from .train import SAESpec

    d_sae = cell.expansion_factor * d_in
    extra: tuple = ()
    if cell.architecture == "matryoshka_batchtopk":
        widths = sorted({max(1, int(round(p * d_sae))) for p in cfg.matryoshka_prefixes} - {d_sae})
        extra = (("matryoshka_widths", widths + [d_sae]),)
    needs_k = cell.architecture not in ("standard", "jumprelu")
    return SAESpec(cell.architecture, d_sae, k if needs_k else None, 0, extra)
