"""Known answers and invariants for the cosine search, seed stability, subspace geometry and
pooling analyses (fast: small tensors only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae_studies.analyses.cosine import best_cosine, hungarian_match, mean_matched_cosine, topk_cosine
from sae_studies.analyses.pooling import pool_decoders, seed_groups
from sae_studies.analyses.seed_stability import (
    CrossSeedBest,
    cross_seed_best_cosines,
    matched_seeds,
    other_seeds,
    pair_match_fraction,
    stability_class,
    stability_from_best,
    stability_scores,
    tau_sweep,
)
from sae_studies.analyses.subspaces import (
    captured_energy,
    covariance_subspace,
    effective_rank,
    entropy_effective_rank,
    principal_angles,
    projection_overlap,
    random_subspace,
    top_subspace,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def dense_best(a, b):
    return (unit(a) @ unit(b).T).max(dim=1)


# ------------------------------------------------------------------------------ best_cosine


@pytest.mark.parametrize(
    "chunk_size,b_chunk_size",
    [(1, 1000), (7, 13), (32, 32), (40, 37), (100, 1000), (10_000, 10_000)],
)
def test_best_cosine_equals_dense_reference(chunk_size, b_chunk_size):
    g = gen(1)
    # F_a = 100, F_b = 121: most chunk sizes divide neither
    a = torch.randn(100, 32, generator=g, dtype=torch.float64) * torch.rand(100, 1, generator=g, dtype=torch.float64)
    b = torch.randn(121, 32, generator=g, dtype=torch.float64) * 3.0
    ref_v, ref_i = dense_best(a, b)
    v, i = best_cosine(a, b, chunk_size=chunk_size, b_chunk_size=b_chunk_size)
    assert v.shape == (100,) and i.dtype == torch.long
    torch.testing.assert_close(v, ref_v, rtol=0, atol=1e-12)
    assert torch.equal(i, ref_i)


def test_best_cosine_float32_and_scale_invariance():
    g = gen(2)
    a = torch.randn(130, 24, generator=g)
    b = torch.randn(90, 24, generator=g)
    ref_v, ref_i = dense_best(a.double(), b.double())
    v, i = best_cosine(a * 5.0, b * 0.01, chunk_size=33, b_chunk_size=40)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v.double(), ref_v, rtol=0, atol=1e-5)
    assert torch.equal(i, ref_i)


def test_best_cosine_exclude_self_finds_planted_duplicate():
    g = gen(3)
    w = torch.randn(50, 64, generator=g, dtype=torch.float64)
    w[37] = w[11] + 0.01 * torch.randn(64, generator=g, dtype=torch.float64)
    v_self, i_self = best_cosine(w, w, chunk_size=8, b_chunk_size=9)
    assert torch.equal(i_self, torch.arange(50)) and torch.allclose(v_self, torch.ones(50, dtype=w.dtype))
    v, i = best_cosine(w, w, chunk_size=8, b_chunk_size=9, exclude_self=True)
    sim = unit(w) @ unit(w).T
    sim.fill_diagonal_(-math.inf)
    ref_v, ref_i = sim.max(dim=1)
    assert torch.equal(i, ref_i) and i[11] == 37 and i[37] == 11
    torch.testing.assert_close(v, ref_v, rtol=0, atol=1e-12)


def test_zero_row_has_cosine_zero():
    a = torch.zeros(2, 4)
    a[1, 0] = 1.0
    b = torch.eye(4)
    v, _ = best_cosine(a, b)
    assert v[0] == 0.0 and v[1] == 1.0


@pytest.mark.parametrize("chunk_size,b_chunk_size", [(5, 7), (64, 200)])
def test_topk_cosine_equals_dense_topk(chunk_size, b_chunk_size):
    g = gen(4)
    a = torch.randn(60, 16, generator=g, dtype=torch.float64)
    b = torch.randn(45, 16, generator=g, dtype=torch.float64)
    ref_v, ref_i = (unit(a) @ unit(b).T).topk(6, dim=1)
    v, i = topk_cosine(a, b, 6, chunk_size=chunk_size, b_chunk_size=b_chunk_size)
    torch.testing.assert_close(v, ref_v, rtol=0, atol=1e-12)
    assert torch.equal(i, ref_i)
    bv, bi = best_cosine(a, b)
    assert torch.equal(i[:, 0], bi)


# ------------------------------------------------------------------------------ stability


def test_other_seeds_layout():
    assert other_seeds(3).tolist() == [[1, 2], [0, 2], [0, 1]]


def test_cross_seed_best_matches_pairwise_best_cosine():
    g = gen(5)
    decs = [torch.randn(70, 20, generator=g, dtype=torch.float64) for _ in range(4)]
    best = cross_seed_best_cosines(decs, chunk_size=16, b_chunk_size=23)
    assert best.values.shape == (4, 3, 70)
    for s in range(4):
        for j, t in enumerate(best.other[s].tolist()):
            v, i = best_cosine(decs[s], decs[t])
            torch.testing.assert_close(best.values[s, j], v, rtol=0, atol=1e-12)
            assert torch.equal(best.indices[s, j], i)


def test_stability_known_answer():
    e = torch.eye(10, dtype=torch.float64)
    decs = [e[[0, 1, 2]], e[[0, 1, 3]], e[[0, 4, 5]]]
    st = stability_scores(decs, tau=0.7)
    assert st.fraction.tolist() == [[1.0, 0.5, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0]]
    assert st.mean_best.tolist() == [[1.0, 0.5, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0]]


def test_threshold_is_inclusive_and_signed():
    # cos(v, w) = 0.6 exactly representable via (0.6, 0.8); a negated copy is a different feature
    a = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64)
    assert stability_scores([a, b], tau=0.6).fraction.tolist() == [[1.0], [1.0]]
    assert stability_scores([a, b], tau=0.61).fraction.tolist() == [[0.0], [0.0]]
    st = stability_scores([a, -a], tau=0.5)
    assert st.fraction.tolist() == [[0.0], [0.0]] and st.mean_best.tolist() == [[-1.0], [-1.0]]


def test_permuted_positive_rescaled_copy_is_fully_stable_and_hungarian_recovers_permutation():
    g = gen(6)
    w = torch.randn(120, 48, generator=g)
    perm = torch.randperm(120, generator=g)
    scale = torch.rand(120, 1, generator=g) * 3 + 0.1  # positive: sign preserved
    copy = w[perm] * scale
    st = stability_scores([w, copy, w.clone()], tau=0.7, chunk_size=50, b_chunk_size=33)
    assert torch.all(st.fraction == 1.0)
    torch.testing.assert_close(st.mean_best, torch.ones_like(st.mean_best), rtol=0, atol=1e-5)
    # best matches point at the right rows: copy[k] = w[perm[k]]
    assert torch.equal(st.best.indices[0, 0][perm], torch.arange(120))

    row, col, cos = hungarian_match(w, copy)
    assert torch.equal(row, torch.arange(120))
    assert torch.equal(perm[col], row)  # w[i] matched to copy[col[i]] = w[perm[col[i]]]
    torch.testing.assert_close(cos, torch.ones(120), rtol=0, atol=1e-5)
    assert mean_matched_cosine(w, copy) == pytest.approx(1.0, abs=1e-5)


def test_hungarian_is_one_to_one_where_best_cosine_is_not_and_handles_rectangles():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    b = torch.tensor([[1.0, 0.05], [0.0, 1.0], [-1.0, 0.0]])
    _, bi = best_cosine(a, b)
    assert bi.tolist() == [0, 0]  # greedy best is shared
    row, col, cos = hungarian_match(a, b)
    assert row.tolist() == [0, 1] and len(set(col.tolist())) == 2
    # total cosine is maximal over all injective maps
    sim = unit(a) @ unit(b).T
    brute = max(sim[0, i] + sim[1, j] for i in range(3) for j in range(3) if i != j)
    assert float(cos.sum()) == pytest.approx(float(brute), abs=1e-6)


def test_independent_random_dictionaries_are_unstable_at_large_d():
    g = gen(7)
    decs = [torch.randn(200, 512, generator=g) for _ in range(3)]
    st = stability_scores(decs, tau=0.7)
    assert float(st.fraction.max()) == 0.0
    assert float(st.mean_best.max()) < 0.3
    assert mean_matched_cosine(decs[0], decs[1]) < 0.2


def test_tau_sweep_monotone_and_consistent():
    g = gen(8)
    base = torch.randn(150, 32, generator=g)
    decs = [base + s * 0.4 * torch.randn(150, 32, generator=g) for s in range(1, 5)]
    best = cross_seed_best_cosines(decs)
    taus = [0.5, 0.6, 0.7, 0.8, 0.9]
    sweep = tau_sweep(best, taus)
    assert sweep.shape == (5, 4, 150)
    assert torch.all(sweep[1:] <= sweep[:-1])
    assert float(sweep[0].mean()) > float(sweep[-1].mean())  # the sweep is not trivial
    for t, tau in enumerate(taus):
        assert torch.equal(sweep[t], stability_from_best(best, tau).fraction)


# ------------------------------------------------------------------------------ subspaces


def test_principal_angles_same_subspace_other_basis_is_zero():
    g = gen(9)
    basis = torch.randn(4, 30, generator=g, dtype=torch.float64)
    mix = torch.randn(6, 4, generator=g, dtype=torch.float64)  # 6 spanning rows, rank 4
    ang = principal_angles(basis, mix @ basis)
    assert ang.shape == (4,)
    assert float(ang.abs().max()) < 1e-7
    assert projection_overlap(basis, mix @ basis) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("theta", [1e-6, 0.3, math.pi / 4, 1.2, math.pi / 2])
def test_principal_angles_hand_constructed(theta):
    e = torch.eye(6, dtype=torch.float64)
    A = torch.stack([e[0], e[1]])
    B = torch.stack([e[0], math.cos(theta) * e[1] + math.sin(theta) * e[2]])
    ang = principal_angles(A, B)
    torch.testing.assert_close(ang, torch.tensor([0.0, theta], dtype=torch.float64), rtol=0, atol=1e-12)
    # ‖P_A P_B‖_F² = Σ cos² θ_i
    assert projection_overlap(A, B) == pytest.approx((1 + math.cos(theta) ** 2) / 2, abs=1e-12)


def test_principal_angles_different_dimensions():
    e = torch.eye(5, dtype=torch.float64)
    ang = principal_angles(e[:1], e[:3])  # a line inside a 3-plane
    assert ang.tolist() == [0.0]
    ang = principal_angles(e[:2], e[2:5])  # orthogonal
    torch.testing.assert_close(ang, torch.full((2,), math.pi / 2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert projection_overlap(e[:1], e[:3]) == pytest.approx(1.0)  # contained
    assert projection_overlap(e[:2], e[2:5]) == pytest.approx(0.0, abs=1e-15)


def test_random_subspaces_orthonormal_and_overlap_is_k_over_d():
    g = gen(10)
    k, d = 8, 100
    vals = []
    for _ in range(20):
        A = random_subspace(k, d, g, dtype=torch.float64)
        B = random_subspace(k, d, g, dtype=torch.float64)
        torch.testing.assert_close(A @ A.T, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-12)
        vals.append(projection_overlap(A, B))
    mean = sum(vals) / len(vals)
    assert mean == pytest.approx(k / d, rel=0.15)
    # reproducible with the same seed
    assert torch.equal(random_subspace(3, 10, gen(1)), random_subspace(3, 10, gen(1)))


def test_covariance_subspace_lives_where_the_variance_is():
    d = 40
    cov = torch.diag(torch.cat([torch.full((5,), 100.0), torch.full((d - 5,), 1e-6)])).double()
    Q = covariance_subspace(5, cov, gen(11))
    assert Q.shape == (5, d)
    torch.testing.assert_close(Q @ Q.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-10)
    top = torch.eye(d, dtype=torch.float64)[:5]
    assert projection_overlap(Q, top) > 0.999
    # an isotropic covariance gives ordinary random subspaces: far from the top block
    Qi = covariance_subspace(5, torch.eye(d, dtype=torch.float64), gen(11))
    assert projection_overlap(Qi, top) < 0.6


def test_effective_ranks_known_answers():
    # squared singular values 4, 3, 2, 1 (shares 0.4, 0.3, 0.2, 0.1)
    x = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64).sqrt())
    g = gen(12)
    rot = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))[0]
    x = rot @ x  # rotation does not change singular values
    assert effective_rank(x, 0.4) == 1
    assert effective_rank(x, 0.5) == 2
    assert effective_rank(x, 0.9) == 3
    assert effective_rank(x, 1.0) == 4
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    assert entropy_effective_rank(x) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-12)
    assert entropy_effective_rank(torch.eye(7)) == pytest.approx(7.0, rel=1e-6)
    assert entropy_effective_rank(torch.ones(5, 3)) == pytest.approx(1.0, rel=1e-6)
    assert effective_rank(torch.ones(5, 3), 0.99) == 1


# ------------------------------------------------------------------------------ pooling


def noisy_copies(n_seeds=3, f=64, d=128, noise=0.05, seed=13):
    g = gen(seed)
    base = unit(torch.randn(f, d, generator=g, dtype=torch.float64))
    perms, decs = [], []
    for _ in range(n_seeds):
        perm = torch.randperm(f, generator=g)
        w = base[perm] + noise * torch.randn(f, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        decs.append(w * (torch.rand(f, 1, generator=g, dtype=torch.float64) + 0.5))
        perms.append(perm)
    return base, decs, perms


def test_pool_noisy_copies_recovers_the_dictionary_with_support_3():
    base, decs, perms = noisy_copies()
    pooled = pool_decoders(decs, tau=0.7)
    assert len(pooled) == 64
    assert torch.all(pooled.support == 3)
    torch.testing.assert_close(pooled.directions.norm(dim=1), torch.ones(64, dtype=torch.float64))
    v, i = best_cosine(pooled.directions, base)
    assert float(v.min()) > 0.999
    assert sorted(i.tolist()) == list(range(64))  # one pooled direction per original feature
    for k, m in enumerate(pooled.members):
        assert sorted(m[:, 0].tolist()) == [0, 1, 2]
        originals = {int(perms[s][feat]) for s, feat in m.tolist()}
        assert originals == {int(i[k])}
    # averaging 3 noisy copies is closer to the truth than a single copy
    single, _ = best_cosine(unit(decs[0]), base)
    assert float(v.mean()) > float(single.mean())


def test_pool_ranks_stable_first_and_keeps_size():
    g = gen(14)
    base, decs, _ = noisy_copies(f=40, d=256)
    # seed-specific features (independent random, unstable) appended to each seed
    decs = [torch.cat([w, torch.randn(40, 256, generator=g, dtype=torch.float64)]) for w in decs]
    best = stability_scores(decs, 0.7).best
    full = pool_decoders(decs, 0.7, best=best)
    assert len(full) == 40 + 3 * 40
    assert full.support.tolist() == [3] * 40 + [1] * 120
    pooled = pool_decoders(decs, 0.7, size=50, best=best)
    assert len(pooled) == 50 and pooled.support[:40].tolist() == [3] * 40
    torch.testing.assert_close(pooled.directions, full.directions[:50])
    # the secondary key orders groups of equal support
    scores = torch.zeros(3, 80, dtype=torch.float64)
    scores[2, 40:] = torch.arange(40, dtype=torch.float64)  # seed 2's unstable features, last highest
    ranked = pool_decoders(decs, 0.7, size=41, best=best, scores=scores)
    assert ranked.members[40].tolist() == [[2, 79]]
    assert ranked.score[40] == 39.0


def test_pool_merge_direction_is_normalised_mean_of_members():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.8, 0.6, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    pooled = pool_decoders([a, 2 * b], tau=0.75)
    assert pooled.support.tolist() == [2, 1, 1]
    expected = torch.tensor([1.8, 0.6, 0.0], dtype=torch.float64)
    torch.testing.assert_close(pooled.directions[0], expected / expected.norm())
    assert pooled.members[0].tolist() == [[0, 0], [1, 0]]


# ------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_with_the_parameter_named():
    w = torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"at least 2 seeds.*got 1"):
        stability_scores([w])
    with pytest.raises(ValueError, match=r"at least 2 seeds"):
        pool_decoders([w], 0.7)
    for tau in (0, 0.0, -0.1, 1.5, "0.7", True):
        with pytest.raises(ValueError, match=r"tau must be a number in \(0, 1\]"):
            stability_scores([w, w], tau=tau)
    with pytest.raises(ValueError, match=r"tau must be a number in \(0, 1\]"):
        pool_decoders([w, w], tau=2.0)
    with pytest.raises(ValueError, match=r"taus\[1\] must be a number in \(0, 1\]"):
        tau_sweep(cross_seed_best_cosines([w, w]), [0.5, 0.0])
    with pytest.raises(ValueError, match=r"same shape.*decoders\[0\] is \[10, 8\].*decoders\[2\] \[12, 8\]"):
        stability_scores([w, w, torch.randn(12, 8)])
    with pytest.raises(ValueError, match=r"same shape.*decoders\[1\] \[10, 9\]"):
        stability_scores([w, torch.randn(10, 9)])
    with pytest.raises(ValueError, match=r"decoders\[1\] must be 2-D.*\[80\]"):
        stability_scores([w, w.flatten()])
    with pytest.raises(ValueError, match=r"a must be 2-D"):
        best_cosine(torch.randn(2, 3, 4), w)
    with pytest.raises(ValueError, match=r"b must be 2-D"):
        best_cosine(w, torch.randn(8))
    with pytest.raises(ValueError, match=r"same input size d.*a \[10, 8\] and b \[10, 7\]"):
        best_cosine(w, torch.randn(10, 7))
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
        best_cosine(w, w, chunk_size=0)
    with pytest.raises(ValueError, match=r"b_chunk_size must be a positive integer"):
        best_cosine(w, w, b_chunk_size=-3)
    with pytest.raises(ValueError, match=r"exclude_self=True"):
        best_cosine(w, w[:5], exclude_self=True)
    with pytest.raises(ValueError, match=r"k must be at most"):
        topk_cosine(w, w[:3], 4)
    with pytest.raises(ValueError, match=r"max_features=16.*best_cosine"):
        hungarian_match(torch.randn(16, 4), torch.randn(20, 4), max_features=16)
    with pytest.raises(ValueError, match=r"same input size d"):
        hungarian_match(w, torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"size must be a positive integer"):
        pool_decoders([w, w], 0.7, size=0)
    with pytest.raises(ValueError, match=r"best must be the CrossSeedBest of these decoders"):
        pool_decoders([w, w], 0.7, best=cross_seed_best_cosines([w, w, w]))
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \[S, F\] = \[2, 10\]"):
        pool_decoders([w, w], 0.7, scores=torch.zeros(10))
    with pytest.raises(ValueError, match=r"energy must be a number in \(0, 1\]"):
        effective_rank(w, energy=0.0)
    with pytest.raises(ValueError, match=r"vectors must be 2-D"):
        entropy_effective_rank(torch.ones(3))
    with pytest.raises(ValueError, match=r"same input size d.*A \[10, 8\] and B \[2, 5\]"):
        principal_angles(w, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"B must be 2-D"):
        projection_overlap(w, torch.randn(8))
    with pytest.raises(ValueError, match=r"B spans the zero subspace"):
        principal_angles(w, torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"dim must be in \[1, d\] = \[1, 5\]"):
        random_subspace(6, 5)
    with pytest.raises(ValueError, match=r"cov must be a square"):
        covariance_subspace(2, torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"generator must be a torch.Generator"):
        random_subspace(2, 5, generator=3)
    with pytest.raises(ValueError, match=r"best must be a CrossSeedBest"):
        stability_from_best(torch.zeros(2, 1, 3), 0.7)
    assert isinstance(cross_seed_best_cosines([w, w]), CrossSeedBest)


def test_parameters_with_grad_are_accepted():
    # SAELens hands out W_dec as an nn.Parameter; the analysis must not trip over autograd
    g = gen(15)
    w = torch.nn.Parameter(torch.randn(30, 16, generator=g))
    w2 = torch.nn.Parameter(w.detach()[torch.randperm(30, generator=g)].clone())
    v, _ = best_cosine(w, w2, chunk_size=7, b_chunk_size=11)
    assert not v.requires_grad and torch.allclose(v, torch.ones(30), atol=1e-5)
    assert torch.all(stability_scores([w, w2]).fraction == 1.0)
    assert len(pool_decoders([w, w2], 0.7)) == 30
    assert mean_matched_cosine(w, w2) == pytest.approx(1.0, abs=1e-5)
    assert principal_angles(w, w2).abs().max() < 1e-6


# ------------------------------------------------------------------ study-1 analyses


def test_stability_class_and_matched_seeds():
    g = gen(11)
    base = unit(torch.randn(6, 16, generator=g, dtype=torch.float64))
    # feature 0..2 present in every seed, 3..5 replaced by fresh random directions in seeds 1, 2
    decs = [base.clone() for _ in range(3)]
    decs[1][3:] = torch.randn(3, 16, generator=g, dtype=torch.float64)
    decs[2][3:] = torch.randn(3, 16, generator=g, dtype=torch.float64)
    decs[2][4] = decs[1][4]  # feature 4 of seeds 1 and 2 agree
    sc = stability_scores(decs, 0.95)
    cls = stability_class(sc.fraction)
    assert (cls[:, :3] == "stable").all()
    assert cls[0, 3] == "unstable" and cls[1, 4] == "partial" and cls[2, 4] == "partial"
    m = matched_seeds(sc)
    assert m.dtype == torch.long and m[0, :3].tolist() == [2, 2, 2] and m[1, 4] == 1
    with pytest.raises(ValueError, match="fraction"):
        stability_class(torch.tensor([1.5]))
    # latents that (almost) never fire are "dead", whatever their fraction
    firings = np.array([0, 3, 50, 7, 8, 100])
    dead = stability_class(sc.fraction[0], firings, min_firings=8)
    assert dead.tolist() == ["dead", "dead", "stable", "dead", cls[0, 4], cls[0, 5]]
    assert (stability_class(sc.fraction[0], firings) == np.where(firings < 1, "dead", cls[0])).all()
    with pytest.raises(ValueError, match="one count per feature"):
        stability_class(sc.fraction[0], firings[:3])
    with pytest.raises(ValueError, match="StabilityScores"):
        matched_seeds(sc.fraction)


def test_pair_match_fraction():
    g = gen(12)
    a = torch.randn(10, 8, generator=g, dtype=torch.float64)
    assert pair_match_fraction(a, a[torch.randperm(10, generator=g)] * 3, 0.99) == 1.0
    b = a.clone()
    b[:5] = torch.randn(5, 8, generator=g, dtype=torch.float64)
    f = pair_match_fraction(a, b, 0.999)
    assert f == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        pair_match_fraction(a, b[:9], 0.7)
    with pytest.raises(ValueError, match="tau"):
        pair_match_fraction(a, b, 0.0)


def test_top_subspace_and_captured_energy():
    g = gen(13)
    basis = random_subspace(3, 20, g, dtype=torch.float64)
    rows = torch.randn(40, 3, generator=g, dtype=torch.float64) @ basis  # inside a 3-dim subspace
    q = top_subspace(rows, 3)
    assert projection_overlap(q, basis) == pytest.approx(1.0, abs=1e-10)
    assert captured_energy(rows, basis) == pytest.approx(1.0, abs=1e-10)
    # random directions against a random k-dim subspace: about k/d
    many = torch.randn(4000, 20, generator=g, dtype=torch.float64)
    assert captured_energy(many, random_subspace(5, 20, g, dtype=torch.float64)) == pytest.approx(5 / 20, abs=0.02)
    with pytest.raises(ValueError, match="dim must be at most"):
        top_subspace(rows[:2], 3)


def test_seed_groups():
    assert seed_groups([0, 1, 2, 3, 4], 2) == [(0, 1), (2, 3)]
    assert seed_groups(range(6), 3) == [(0, 1, 2), (3, 4, 5)]
    with pytest.raises(ValueError, match="at least 2"):
        seed_groups([0, 1, 2, 3], 1)
    with pytest.raises(ValueError, match="2 × group_size"):
        seed_groups([0, 1, 2], 2)
    with pytest.raises(ValueError, match="distinct"):
        seed_groups([0, 0, 1, 2], 2)
