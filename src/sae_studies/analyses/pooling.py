"""Pooling the decoder directions of several seeds into one dictionary (study 1, claim 5).

:func:`pool_decoders` merges cross-seed near-duplicates and ranks the merged directions by how
many seeds found them; :func:`pooled_encoder_init` gives the refit a sensible encoder start; the
refit itself is an ordinary :func:`sae_studies.train.train_sae` with the decoder frozen
(:func:`refit_pooled_sae`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from ..checks import check_matrix, check_positive_int, check_tau, tensor_digest
from .cosine import DEFAULT_B_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, compute_dtype, unit_rows
from .seed_stability import CrossSeedBest, check_decoders, cross_seed_best_cosines


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
    decs = check_decoders(decoders)
    tau = check_tau(tau)
    if size is not None:
        size = check_positive_int("size", size)
    n_seeds, f = len(decs), decs[0].shape[0]
    if best is None:
        best = cross_seed_best_cosines(decs, chunk_size=chunk_size, b_chunk_size=b_chunk_size)
    elif not isinstance(best, CrossSeedBest) or tuple(best.values.shape) != (n_seeds, n_seeds - 1, f):
        got = list(best.values.shape) if isinstance(best, CrossSeedBest) else type(best).__name__
        raise ValueError(
            f"best must be the CrossSeedBest of these decoders, values of shape [{n_seeds}, {n_seeds - 1}, {f}]; got {got}"
        )
    if scores is not None:
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (n_seeds, f):
            got = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"scores must be a tensor of shape [S, F] = [{n_seeds}, {f}]; got {got}")

    vals = best.values.detach().cpu().to(torch.float64)
    matched = (vals >= tau).sum(dim=1).reshape(-1).numpy()  # [N] other seeds matched, pooled id s·F + i
    mean_best = vals.mean(dim=1).reshape(-1).numpy()  # [N]
    graph = _near_duplicate_graph(best, tau)
    visit = np.lexsort((np.arange(n_seeds * f), -mean_best, -matched))
    label, leaders = _greedy_leader_merge(graph, visit)
    n_groups = len(leaders)

    dtype = compute_dtype(*decs)
    units = torch.cat([unit_rows(w.detach(), dtype).cpu() for w in decs])  # [N, d]
    sums = torch.zeros((n_groups, units.shape[1]), dtype=dtype).index_add_(0, torch.from_numpy(label), units)
    directions = sums / sums.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)

    seed_mask = np.zeros((n_groups, n_seeds), dtype=bool)
    seed_mask[label, np.repeat(np.arange(n_seeds), f)] = True
    support = seed_mask.sum(axis=1)
    key = scores.detach().cpu().to(torch.float64).reshape(-1).numpy() if scores is not None else mean_best
    counts = np.bincount(label, minlength=n_groups)
    group_score = np.bincount(label, weights=key, minlength=n_groups) / counts
    rank = np.lexsort((np.arange(n_groups), -group_score, -support))[:size]

    rank_t = torch.from_numpy(rank)
    return PooledDictionary(
        directions=directions[rank_t],  # on the CPU, like every result of an analysis
        support=torch.from_numpy(support[rank].astype(np.int64)),
        members=_members(label, leaders, rank, f),
        score=torch.from_numpy(group_score[rank]),
        tau=tau,
    )


def _near_duplicate_graph(best: CrossSeedBest, tau: float) -> sparse.csr_matrix:
    """Symmetric ``[N, N]`` adjacency (pooled id ``s·F + i``): an edge where ``m`` is the best
    match of ``i`` in seed ``s'`` (or the other way round) with cosine ``≥ tau``."""
    n_seeds, _, f = best.values.shape
    keep = best.values.detach().cpu() >= tau  # [S, S-1, F]
    s_ix, j_ix, i_ix = keep.nonzero(as_tuple=True)
    src = (s_ix * f + i_ix).numpy()
    dst = (best.other.cpu()[s_ix, j_ix] * f + best.indices.detach().cpu()[s_ix, j_ix, i_ix]).numpy()
    u, v = np.concatenate([src, dst]), np.concatenate([dst, src])
    n = n_seeds * f
    return sparse.coo_matrix((np.ones(u.size, dtype=np.int8), (u, v)), shape=(n, n)).tocsr()


def _greedy_leader_merge(graph: sparse.csr_matrix, visit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visit nodes in order; an unassigned node leads a new group and takes its unassigned
    neighbours. Returns ``(label [N], leaders [G])``."""
    label = np.full(graph.shape[0], -1, dtype=np.int64)
    leaders = []
    for node in visit:
        if label[node] >= 0:
            continue
        label[node] = len(leaders)
        nb = graph.indices[graph.indptr[node] : graph.indptr[node + 1]]
        label[nb[label[nb] < 0]] = len(leaders)
        leaders.append(node)
    return label, np.asarray(leaders, dtype=np.int64)


def _members(label: np.ndarray, leaders: np.ndarray, rank: np.ndarray, f: int) -> list[Tensor]:
    """``(seed, feature)`` pairs of each ranked group: the leader first, then by pooled index."""
    is_leader = np.zeros(label.size, dtype=bool)
    is_leader[leaders] = True
    by_group = np.lexsort((np.arange(label.size), ~is_leader, label))
    starts = np.concatenate([[0], np.cumsum(np.bincount(label, minlength=len(leaders)))])
    out = []
    for g in rank:
        nodes = by_group[starts[g] : starts[g + 1]]
        out.append(torch.from_numpy(np.stack([nodes // f, nodes % f], axis=1).astype(np.int64)))
    return out


def seed_groups(seeds: Sequence[int], group_size: int) -> list[tuple[int, ...]]:
    """Split ``seeds`` into disjoint consecutive groups of ``group_size`` (≥ 2), at least two groups:
    the independent replicates of the pooled procedure. Leftover seeds are not used."""
    seeds = list(seeds)
    group_size = check_positive_int("group_size", group_size)
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 (pooling needs ≥ 2 seeds); got {group_size}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {seeds}")
    if len(seeds) < 2 * group_size:
        raise ValueError(f"pooling replicates need at least 2 × group_size = {2 * group_size} seeds; got {len(seeds)} ({seeds})")
    return [tuple(seeds[i : i + group_size]) for i in range(0, len(seeds) - group_size + 1, group_size)]


#: Version tag of the refit procedure, part of the artifact key.
POOLED_REFIT = "frozen-decoder-v4"


def pooled_encoder_init(pooled: PooledDictionary, saes: Sequence) -> tuple[Tensor, Tensor]:
    """Encoder start for a pooled dictionary: for pooled direction ``k`` the mean, over its members
    ``(seed, feature)``, of those features' encoder columns and biases in the seeds' SAEs
    (``saes[seed].W_enc[:, feature]``, ``saes[seed].b_enc[feature]``; inference SAEs, input space).

    Returns ``(W [K, d], b [K])`` on the CPU. Without it a pooled dictionary, whose directions are less
    orthogonal than one seed's, starts from a tied encoder that over-counts correlated directions.
    """
    if not isinstance(pooled, PooledDictionary):
        raise ValueError(f"pooled must be a PooledDictionary; got {type(pooled).__name__}")
    ws = [sae.W_enc.detach().T.cpu() for sae in saes]  # [F, d] each, wherever the SAEs live
    bs = [sae.b_enc.detach().cpu() for sae in saes]
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


def refit_pooled_sae(
    acts,
    directions: Tensor,
    spec,
    sae_cfg,
    store,
    *,
    sources: Sequence[str],
    tau: float,
    train_tokens: int,
    batch_size: int = 4096,
    encoder_init: tuple[Tensor, Tensor] | None = None,
):
    """Fit a SAELens SAE whose decoder directions are the pooled ones, held fixed.

    Refit (this repository's choice, ``POOLED_REFIT``): ``spec``'s training SAE (same architecture,
    size and sparsity as the seeds it pools) with its decoder rows set to the unit ``directions``
    ``[F, d]`` and frozen, its encoder started from ``encoder_init`` (``(W [F, d], b [F])`` in input
    space, e.g. from :func:`pooled_encoder_init`) or, without it, from the decoder's transpose, and
    encoder, encoder bias and decoder bias trained for ``train_tokens`` tokens on ``acts``
    (:func:`sae_studies.train.train_sae` with ``init`` and ``frozen``). Latent magnitudes are the
    encoder's outputs, so the decoder directions — and hence the stability of the pooled
    dictionary — are exactly the pooled ones. Cached like any SAE, keyed also by the ``sources``
    (artifact keys of the pooled SAEs), ``tau`` and digests of the directions and encoder start.

    Returns ``(SAE, Artifact)`` like :func:`sae_studies.train.train_sae`.
    """
    import dataclasses

    from .. import train

    directions = check_matrix("directions", directions)
    if tuple(directions.shape) != (spec.d_sae, acts.d):
        raise ValueError(
            f"directions must be [d_sae, d] = [{spec.d_sae}, {acts.d}] for this spec and activations; "
            f"got {list(directions.shape)} (pool_decoders returned fewer groups than the dictionary size?)"
        )
    tau = check_tau(tau)
    train_tokens = check_positive_int("train_tokens", train_tokens)
    steps = train_tokens // batch_size
    if steps < 1:
        raise ValueError(f"train_tokens ({train_tokens}) is smaller than one batch ({batch_size})")
    cfg = dataclasses.replace(sae_cfg, train_tokens=steps * batch_size)
    w = unit_rows(directions.detach(), torch.float32)
    init = {"W_dec": w}
    if encoder_init is None:
        init["W_enc"] = w.T
    else:
        # Saving folds the input scaling s = sqrt(d) / E‖x‖ into the inference SAE so that its
        # latents are the training latents / s (decoder rows unit, latents in raw units):
        # W_inf = W_train and b_inf = b_train / s. Undo that for the start.
        # (tests: a refit with lr ≈ 0 reproduces the source SAE.)
        init["W_enc"] = encoder_init[0].T.float()
        init["b_enc"] = (encoder_init[1].double() * train.input_scale(acts)).float()
    pooled = {
        "sources": list(sources),
        "tau": tau,
        "refit": POOLED_REFIT,
        "directions": tensor_digest(directions),
        "encoder_init": None if encoder_init is None else tensor_digest(*encoder_init),
    }
    return train.train_sae(acts, spec, cfg, store, batch_size, init=init, frozen=("W_dec",), key_extra={"pooled": pooled})
