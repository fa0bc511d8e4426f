"""Chunked cosine search between dictionaries, and one-to-one matching.

A *feature direction* is a decoder row scaled to unit length (SAELens layout ``W_dec [F, d]``,
one row per feature); every cosine here is between such unit rows. Cosines are signed (an SAE
latent fires with a non-negative coefficient, so ``v`` and ``-v`` are different features).

* best cosine of row ``a_i`` against dictionary ``B``:  ``c_i = max_j <â_i, b̂_j>``,
  with ``x̂ = x / ‖x‖`` (an all-zero row has cosine 0 with everything);
* :func:`topk_cosine` keeps the ``k`` largest instead of the best;
* :func:`hungarian_match` is the one-to-one matching of Paulo & Belrose (2025).

Large dictionaries (65,536 × 65,536 at d = 768) are searched block by block: the full
``F_a × F_b`` similarity matrix is never built, only one reused block of
``chunk_size × b_chunk_size`` floats (256 MiB at the float32 defaults). Inputs may be
``nn.Parameter``s (e.g. ``sae.W_dec``): everything here works on detached values, no gradients.
Study 1 (cross-seed stability), study 2 (recovery of ground truth) and study 5 (cross-layer
matching) all search with these functions.

Devices: the search runs on the device of ``a`` (``b`` is moved there, so a decoder on a GPU can
be matched against a null dictionary drawn on the CPU); results are CPU tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ..checks import check_matrix, check_positive_int, check_same_d
from ..devices import to_cpu

#: Rows of ``a`` per block.
DEFAULT_CHUNK_SIZE = 4096
#: Rows of ``b`` per block. 4096 × 16384 float32 = 256 MiB per block.
DEFAULT_B_CHUNK_SIZE = 16384
#: Largest dictionary ``hungarian_match`` accepts by default: the dense cost matrix is then
#: at most 16384² float64 = 2 GiB (scipy works in float64), and the O(F³) assignment still
#: finishes in minutes on a CPU.
HUNGARIAN_MAX_FEATURES = 16384


def compute_dtype(*xs: Tensor) -> torch.dtype:
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    if dt in (torch.float16, torch.bfloat16):
        dt = torch.float32
    return dt


def unit_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
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
    dtype = compute_dtype(a, b)
    fa, fb = a.shape[0], b.shape[0]
    ca_max, cb_max = min(chunk_size, fa), min(b_chunk_size, fb)
    buf = torch.empty(ca_max * cb_max, dtype=dtype, device=a.device)
    b_whole = unit_rows(b, dtype) if fb <= cb_max else None
    for i0 in range(0, fa, ca_max):
        a_n = unit_rows(a[i0 : i0 + ca_max], dtype)
        ca = a_n.shape[0]
        for j0 in range(0, fb, cb_max):
            b_n = b_whole if b_whole is not None else unit_rows(b[j0 : j0 + cb_max], dtype)
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
    a = check_matrix("a", a)
    b = check_matrix("b", b)
    check_same_d("a", a, "b", b)
    b = b.to(a.device)  # the search runs where a is
    cs = check_positive_int("chunk_size", chunk_size)
    bcs = check_positive_int("b_chunk_size", b_chunk_size)
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
    dtype = compute_dtype(a, b)
    values = torch.full((a.shape[0],), -math.inf, dtype=dtype, device=a.device)
    indices = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
    for i0, j0, block in _blocks(a, b, cs, bcs, exclude_self):
        v, j = block.max(dim=1)
        sl = slice(i0, i0 + block.shape[0])
        better = v > values[sl]
        values[sl] = torch.where(better, v, values[sl])
        indices[sl] = torch.where(better, j + j0, indices[sl])
    return to_cpu(values), to_cpu(indices)


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
    k = check_positive_int("k", k)
    n_cand = b.shape[0] - (1 if exclude_self else 0)
    if k > n_cand:
        raise ValueError(f"k must be at most the number of candidate rows of b ({n_cand}); got {k}")
    dtype = compute_dtype(a, b)
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
    return to_cpu(values), to_cpu(indices)


def best_cosine_both_ways(a: Tensor, b: Tensor, chunk_size: int, b_chunk_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row maxima (a → b) and column maxima (b → a) of the same blocks: one matmul per pair
    (on ``a``'s device; results on the CPU)."""
    b = b.to(a.device)
    dtype = compute_dtype(a, b)
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
    return to_cpu(va), to_cpu(ia), to_cpu(vb), to_cpu(ib)


# --------------------------------------------------------------------------------------------
# Hungarian matching (Paulo & Belrose 2025)
# --------------------------------------------------------------------------------------------


def hungarian_match(a: Tensor, b: Tensor, *, max_features: int = HUNGARIAN_MAX_FEATURES) -> tuple[Tensor, Tensor, Tensor]:
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

    a = check_matrix("a", a)
    b = check_matrix("b", b)
    check_same_d("a", a, "b", b)
    limit = check_positive_int("max_features", max_features)
    biggest = max(a.shape[0], b.shape[0])
    if biggest > limit:
        gib = a.shape[0] * b.shape[0] * 8 / 2**30
        raise ValueError(
            f"hungarian_match builds the dense F_a × F_b cosine matrix; got a {list(a.shape)} and "
            f"b {list(b.shape)} ({gib:.1f} GiB in float64), above the limit max_features={limit} "
            "rows per dictionary. Use best_cosine (chunked) for dictionaries this large, or pass "
            "a larger max_features if the machine can hold it."
        )
    dtype = compute_dtype(a, b)
    sim = to_cpu(unit_rows(a.detach(), dtype) @ unit_rows(b.detach().to(a.device), dtype).T)
    row, col = linear_sum_assignment(sim.numpy(), maximize=True)
    row_t = torch.from_numpy(np.asarray(row, dtype=np.int64))
    col_t = torch.from_numpy(np.asarray(col, dtype=np.int64))
    return row_t, col_t, sim[row_t, col_t]


def mean_matched_cosine(a: Tensor, b: Tensor, *, max_features: int = HUNGARIAN_MAX_FEATURES) -> float:
    """Mean cosine of the Hungarian one-to-one matching: ``(1/M) Σ_k <â_{r_k}, b̂_{c_k}>``.

    The cross-seed similarity of Paulo & Belrose (2025); see :func:`hungarian_match`.
    """
    _, _, cos = hungarian_match(a, b, max_features=max_features)
    return float(cos.mean())
