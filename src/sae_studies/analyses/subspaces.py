"""Subspace geometry: effective rank, principal angles, overlaps, and random references.

Subspaces are given by the rows of a matrix (any basis, any scale). Used by study 1 (are the
unstable features' directions reproducible as a subspace across seeds?) and study 2 (is a
ground-truth low-rank group recovered as a subspace?).

Devices: the matrices here are small ([k, d], or a decoder [F, d] once), so every function works
in float64 on the CPU whatever device its inputs are on, and returns CPU tensors or floats.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..checks import check_generator, check_matrix, check_positive_int, check_same_d
from .cosine import unit_rows


def _cpu64(x: Tensor) -> Tensor:
    return x.detach().to(device="cpu", dtype=torch.float64)


def _singular_values(x: Tensor) -> Tensor:
    return torch.linalg.svdvals(_cpu64(x))


def _row_basis(name: str, x: Tensor) -> Tensor:
    """Orthonormal basis (rows, float64) of the row space of ``x``.

    Numerical rank: singular values above ``σ_max · max(n, d) · eps(dtype of x)``.
    """
    x = check_matrix(name, x)
    eps = torch.finfo(x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32).eps
    _, s, vh = torch.linalg.svd(_cpu64(x), full_matrices=False)
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
    x = check_matrix("vectors", vectors)
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
    x = check_matrix("vectors", vectors)
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
    scale). ``scipy.linalg.subspace_angles`` on the columns ``Aᵀ``, ``Bᵀ`` (orthonormal bases from
    an SVD; cosines for large angles, sines for small ones, accurate at both ends: Björck & Golub
    1973, Knyazev & Argentati 2002).

    Returns ``min(dim A, dim B)`` angles in float64, in ``[0, π/2]``.
    """
    from scipy.linalg import subspace_angles

    check_same_d("A", check_matrix("A", A), "B", check_matrix("B", B))
    for name, x in (("A", A), ("B", B)):
        if not bool(x.detach().abs().max() > 0):
            raise ValueError(f"{name} spans the zero subspace (all rows are zero); it needs rank >= 1")
    a = _cpu64(A).numpy().T
    b = _cpu64(B).numpy().T
    return torch.from_numpy(np.sort(subspace_angles(a, b)))


def projection_overlap(A: Tensor, B: Tensor) -> float:
    """``‖P_A P_B‖_F² / min(dim A, dim B)`` for the row spaces of ``A`` and ``B``.

    ``P_X`` is the orthogonal projector onto span(rows of ``X``); ``‖P_A P_B‖_F² = ‖Q_A Q_Bᵀ‖_F²
    = Σ_i cos² θ_i`` over the principal angles. 1 when one subspace contains the other
    (identical subspaces), 0 when orthogonal; for independent uniformly random subspaces of
    dimensions ``k_A, k_B`` in ``R^d`` its expectation is ``max(k_A, k_B) / d`` (``k / d`` for
    equal dimensions).
    """
    check_same_d("A", check_matrix("A", A), "B", check_matrix("B", B))
    qa = _row_basis("A", A)
    qb = _row_basis("B", B)
    return float((qa @ qb.T).pow(2).sum() / min(qa.shape[0], qb.shape[0]))


def random_subspace(dim: int, d: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Orthonormal basis ``[dim, d]`` (rows) of a uniformly random (Haar) ``dim``-dim subspace.

    QR of a ``d × dim`` standard Gaussian matrix ``G = Q R`` with the signs of ``diag R`` moved
    into ``Q`` (Mezzadri 2007), so ``Q`` is Haar-distributed; returns ``Qᵀ``.
    """
    d = check_positive_int("d", d)
    dim = check_positive_int("dim", dim)
    if dim > d:
        raise ValueError(f"dim must be in [1, d] = [1, {d}]; got {dim}")
    check_generator(generator)
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
    cov = check_matrix("cov", cov)
    dim = check_positive_int("dim", dim)
    d = cov.shape[0]
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [d, d] covariance matrix; got shape {list(cov.shape)}")
    if dim > d:
        raise ValueError(f"dim must be in [1, d] = [1, {d}]; got {dim}")
    check_generator(generator)
    c = cov.detach().to(torch.float64).cpu()
    c = 0.5 * (c + c.T)
    lam, vec = torch.linalg.eigh(c)
    if float(lam.max()) <= 0.0:
        raise ValueError("cov must have a positive eigenvalue (it is zero or negative definite)")
    L = vec * lam.clamp_min(0.0).sqrt()
    g = torch.randn(dim, d, generator=generator, dtype=torch.float64)
    z = g @ L.T
    return _row_basis("samples", z).to(cov.dtype)  # on the CPU, like every result here


def top_subspace(rows: Tensor, dim: int) -> Tensor:
    """``[dim, d]`` orthonormal rows: the top-``dim`` right singular vectors of the unit rows of
    ``rows`` (uncentred; the subspace that holds most of the directions' energy)."""
    rows = check_matrix("rows", rows)
    dim = check_positive_int("dim", dim)
    if dim > min(rows.shape):
        raise ValueError(
            f"dim must be at most min(n_rows, d) = {min(rows.shape)} for rows of shape {list(rows.shape)}; got {dim}"
        )
    u = unit_rows(_cpu64(rows), torch.float64)
    _, _, vh = torch.linalg.svd(u, full_matrices=False)
    return vh[:dim]


def captured_energy(rows: Tensor, basis: Tensor) -> float:
    """Mean share of each unit row's squared norm inside span(basis): ``mean_i ‖P â_i‖²``.

    For a uniformly random subspace of dimension ``k`` in ``R^d`` its expectation is ``k / d``."""
    rows = check_matrix("rows", rows)
    basis = check_matrix("basis", basis)
    check_same_d("rows", rows, "basis", basis)
    q = _row_basis("basis", basis)
    u = unit_rows(_cpu64(rows), torch.float64)
    return float((u @ q.T).pow(2).sum(1).mean())
