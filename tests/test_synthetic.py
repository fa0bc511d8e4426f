"""The synthetic low-rank model (study 2): generator, its stored form, and the identifiability
metrics on decoders whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae_studies.activations import ActivationSet
from sae_studies.analyses import seed_stability, subspaces
from sae_studies.analyses import synthetic as syn
from sae_studies.analyses import synthetic_recovery as rec
from sae_studies.store import Store

SMALL = dict(d=16, n_isolated=3, n_groups=2, rank=3, noise_std=0.0, p_isolated=0.2, p_group=0.3)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"rank": 16}, ["rank", "1..15"]),
        ({"rank": 0}, ["rank", "1..15"]),
        ({"directions": 0}, ["directions", ">= 1"]),
        ({"directions": 2}, ["directions", ">= rank=3"]),
        ({"rank": 1, "directions": 3}, ["directions", "1 or 2"]),
        ({"p_isolated": 1.5}, ["p_isolated", "[0", ", 1]"]),
        ({"p_group": -0.1}, ["p_group", "[0", ", 1]"]),
        ({"n_groups": 5}, ["n_isolated + n_groups × rank", "d=16"]),
        ({"layout": "diagonal"}, ["layout", "orthogonal"]),
        ({"magnitude_mean": 0}, ["magnitude_mean", "> 0"]),
        ({"noise_std": -1.0}, ["noise_std", ">= 0"]),
        ({"n_isolated": 0, "n_groups": 0}, ["at least one feature"]),
    ],
)
def test_bad_parameters_name_the_parameter_and_range(changes, words):
    with pytest.raises(ValueError) as err:
        syn.LowRankSpec(**{**SMALL, **changes})
    for w in words:
        assert w in str(err.value)


def test_counts():
    spec = syn.LowRankSpec(**SMALL, directions=6)
    assert spec.n_gt_dims == 3 + 2 * 3
    assert spec.n_gt_directions == 3 + 2 * 6
    assert syn.LowRankSpec(**SMALL).n_gt_directions is None
    assert syn.LowRankSpec(**{**SMALL, "n_groups": 5}, layout="random").n_gt_dims == 18  # random layout may exceed d


# ------------------------------------------------------------------ directions and ground truth


def test_spread_directions_known_configurations():
    torch.testing.assert_close(syn.spread_directions(3, 3), torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(syn.spread_directions(2, 1), torch.tensor([[1.0], [-1.0]], dtype=torch.float64))
    square = syn.spread_directions(4, 2)
    torch.testing.assert_close(
        square @ square.T,
        torch.tensor([[1.0, 0, -1, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, -1, 0, 1]], dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    tetra = syn.spread_directions(4, 3, torch.Generator().manual_seed(0))
    off = (tetra @ tetra.T)[~torch.eye(4, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 3), atol=1e-6, rtol=0)  # the regular simplex
    octa = syn.spread_directions(6, 3, torch.Generator().manual_seed(0))
    assert float((octa @ octa.T).min()) == pytest.approx(-1.0, abs=1e-6)  # ± a basis


@pytest.mark.parametrize("k, r", [(5, 3), (8, 3), (12, 4), (20, 6)])
def test_spread_directions_are_unit_tight_frames(k, r):
    v = syn.spread_directions(k, r, torch.Generator().manual_seed(1))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(k, dtype=torch.float64))
    torch.testing.assert_close(v.T @ v, k / r * torch.eye(r, dtype=torch.float64), atol=1e-6, rtol=0)  # no preferred basis
    assert float((v @ v.T - 2 * torch.eye(k, dtype=torch.float64)).max()) < 0.95  # no two directions coincide


def test_orthogonal_ground_truth_is_orthonormal_and_seeded():
    spec = syn.LowRankSpec(**SMALL, directions=5)
    t = syn.ground_truth(spec)
    rows = torch.cat([t.isolated, t.bases.reshape(-1, spec.d)])
    torch.testing.assert_close(rows @ rows.T, torch.eye(spec.n_gt_dims, dtype=torch.float64), atol=1e-12, rtol=0)
    assert t.directions.shape == (2, 5, 16)
    again = syn.ground_truth(spec)
    torch.testing.assert_close(t.bases, again.bases)
    assert not torch.allclose(t.bases, syn.ground_truth(spec.replace(seed=1)).bases)


# ------------------------------------------------------------------ sampling


def test_rows_are_the_sum_of_their_codes():
    spec = syn.LowRankSpec(**SMALL)
    model = syn.LowRankModel(spec)
    x, codes = model.sample(4096, seed=3)
    t = model.truth
    x64 = x.double()
    iso_part = x64 @ t.isolated.T
    torch.testing.assert_close(iso_part, codes[:, :3].double(), atol=1e-5, rtol=0)
    for g in range(2):  # a group's part is its magnitude times a unit vector of its subspace
        torch.testing.assert_close((x64 @ t.bases[g].T).norm(dim=1), codes[:, 3 + g].double(), atol=1e-5, rtol=0)
    outside = x64 - x64 @ torch.cat([t.isolated, t.bases.reshape(-1, 16)]).T @ torch.cat([t.isolated, t.bases.reshape(-1, 16)])
    assert float(outside.abs().max()) < 1e-5  # no noise: nothing outside the ground truth
    rate = (codes > 0).double().mean(0)
    torch.testing.assert_close(rate, torch.tensor([0.2] * 3 + [0.3] * 2, dtype=torch.float64), atol=0.03, rtol=0)


def test_discrete_groups_emit_only_their_directions_and_continuous_is_isotropic():
    t_disc = syn.LowRankModel(syn.LowRankSpec(**SMALL, directions=4))
    x, codes = t_disc.sample(2048, seed=0)
    c = x.double() @ t_disc.truth.bases[0].T
    fired = codes[:, 3] > 0
    unit = c[fired] / c[fired].norm(dim=1, keepdim=True)
    best = (unit @ t_disc.truth.frame.T).max(dim=1).values
    torch.testing.assert_close(best, torch.ones_like(best), atol=1e-5, rtol=0)
    cont = syn.LowRankModel(syn.LowRankSpec(**{**SMALL, "p_group": 1.0}))
    x, _ = cont.sample(20000, seed=0)
    c = x.double() @ cont.truth.bases[1].T
    u = c / c.norm(dim=1, keepdim=True)
    torch.testing.assert_close(u.T @ u / len(u), torch.eye(3, dtype=torch.float64) / 3, atol=0.02, rtol=0)
    assert float(u.mean(0).abs().max()) < 0.03  # the whole sphere, not a cone


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    model = syn.LowRankModel(syn.LowRankSpec(**{**SMALL, "noise_std": 0.1}))
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, _ = model.sample(256, seed=7)
    after = torch.rand(3)
    torch.testing.assert_close(before, after)
    b, _ = model.sample(256, seed=7)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, model.sample(256, seed=8)[0])


def test_materialised_rows_are_the_stream_and_an_activation_set(tmp_path, monkeypatch):
    monkeypatch.setattr(syn, "CHUNK_ROWS", 1000)
    spec = syn.LowRankSpec(**{**SMALL, "noise_std": 0.05})
    store = Store(tmp_path)
    acts = syn.materialise(spec, 2500, store)
    assert isinstance(acts, ActivationSet) and len(acts) == 2500 and acts.d == 16
    streamed = torch.cat(list(syn.LowRankModel(spec).stream(2500)))
    torch.testing.assert_close(acts.tensor(), streamed)
    torch.testing.assert_close(acts.truth.bases, syn.ground_truth(spec).bases)
    batch = next(acts.batches(500, seed=0))
    assert batch.shape == (500, 16)
    with pytest.raises(AttributeError, match="no tokens"):
        acts.tokens
    with pytest.raises(AttributeError, match="no n_ctx"):
        acts.n_ctx
    assert syn.materialise(spec, 2500, store).artifact.path == acts.artifact.path  # cached
    held_out = syn.materialise(spec, 2500, store, "eval")
    assert held_out.key != acts.key and not torch.allclose(held_out.tensor(), acts.tensor())


# ------------------------------------------------------------------ metrics on known decoders


def _truth():
    return syn.ground_truth(syn.LowRankSpec(**SMALL, directions=6))


def _in_group(t, g, coords):
    return torch.as_tensor(coords, dtype=torch.float64) @ t.bases[g]


def test_isolated_and_direction_recovery():
    t = _truth()
    noise = torch.randn(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dec = torch.cat([t.isolated[[2, 0]], noise])
    best = rec.isolated_recovery(dec, t)
    assert best[0] == pytest.approx(1.0) and best[2] == pytest.approx(1.0) and best[1] < 0.99
    dirs = rec.direction_recovery(torch.cat([t.directions[1], noise]), t)
    torch.testing.assert_close(dirs[1], torch.ones(6, dtype=torch.float64))
    assert rec.direction_recovery(dec, syn.ground_truth(syn.LowRankSpec(**SMALL))) is None


def test_assignment_by_energy_sign_and_firing():
    t = _truth()
    mixed = 0.6 * t.isolated[1] + 0.8 * t.bases[0, 2]  # 64 % of its energy in group 0
    dec = torch.stack(
        [
            t.isolated[0],
            -t.isolated[0],
            _in_group(t, 1, [1.0, 2.0, 0.5]),
            mixed,
            t.isolated[2] + torch.linalg.svd(torch.cat([t.isolated, t.bases.reshape(-1, 16)]))[2][-1] * 2,
        ]
    )
    a = rec.assign_latents(dec, t)
    assert list(a.owner) == [0, -1, 3 + 1, 3 + 0, -1]  # −u_0 is not feature 0; the last has 20 % in u_2
    assert list(a.kind) == ["isolated", "none", "group", "group", "none"]
    assert a.energy[3] == pytest.approx(0.64)
    dead = rec.assign_latents(dec, t, firings=np.array([10, 0, 3, 10, 10]), min_firings=5)
    assert list(dead.kind) == ["isolated", "dead", "dead", "group", "none"]
    with pytest.raises(ValueError, match="min_energy"):
        rec.assign_latents(dec, t, min_energy=0.0)


def test_subspace_recovery_and_agreement_known_answers():
    t = _truth()
    g = torch.Generator().manual_seed(0)
    rot = [subspaces.random_subspace(3, 3, g, dtype=torch.float64) for _ in range(2)]
    full = torch.cat([t.isolated, rot[0] @ t.bases[0], rot[1] @ t.bases[1]])  # an arbitrary basis of each group
    a = rec.assign_latents(full, t)
    np.testing.assert_allclose(rec.subspace_recovery(full, t, a), np.ones((2, 3)), atol=1e-9)
    partial = torch.cat([t.isolated, t.bases[0, :2], rot[1] @ t.bases[1]])  # group 0 misses one dimension
    cos = rec.subspace_recovery(partial, t, rec.assign_latents(partial, t))
    np.testing.assert_allclose(cos[0], [1, 1, 0], atol=1e-9)
    other = torch.cat([t.isolated, t.bases[0], t.bases[1] * 3])
    agree = rec.cross_seed_span_agreement(
        [full, other, partial], t, [a, rec.assign_latents(other, t), rec.assign_latents(partial, t)]
    )
    assert agree.shape == (3, 2, 3)
    np.testing.assert_allclose(agree[0], np.ones((2, 3)), atol=1e-9)
    np.testing.assert_allclose(agree[1, 0], [1, 1, 0], atol=1e-9)


def test_random_subspace_reference_matches_r_over_d():
    cos = rec.random_subspace_cosines(4, 32, 400, torch.Generator().manual_seed(0))
    assert cos.shape == (400, 4)
    assert float((cos**2).mean()) == pytest.approx(4 / 32, abs=0.01)


def test_rotation_null_keeps_isolated_latents_and_subspaces():
    spec = syn.LowRankSpec(d=40, n_isolated=4, n_groups=2, rank=8, noise_std=0.0)
    t = syn.ground_truth(spec)
    dec = torch.cat([t.isolated, t.bases[0], -t.bases[0], t.bases[1]]).float()  # the same dictionary in both seeds
    asg = [rec.assign_latents(dec, t)] * 2
    real = seed_stability.stability_scores([dec, dec], 0.7)
    null = rec.rotation_null([dec, dec], t, asg, 0.7, torch.Generator().manual_seed(0))
    torch.testing.assert_close(null.fraction[:, :4], real.fraction[:, :4])  # isolated latents untouched
    assert float(real.mean_best[:, 4:].mean()) == pytest.approx(1.0, abs=1e-6)
    assert float(null.mean_best[:, 4:].mean()) < 0.8  # an identical basis becomes a random one
    # ± a basis turned at random still has a partner within 1/sqrt(r) (max |coordinate| of a unit vector)
    assert float(null.mean_best[:, 4:20].min()) >= 1 / math.sqrt(8) - 1e-6


def test_within_subspace_null_and_its_checks():
    t = _truth()
    out = rec.within_subspace_null(t, [6, 6], 3, 0.7, torch.Generator().manual_seed(0))
    assert set(out) >= {"fraction_stable", "mean_best", "pair_share"} and 0 <= out["fraction_stable"] <= 1
    with pytest.raises(ValueError, match="per_group"):
        rec.within_subspace_null(t, [6], 3, 0.7)


def test_mcc_against_ground_truth():
    t = _truth()
    exact = torch.cat([t.isolated, t.directions.reshape(-1, 16)])
    perm = exact[torch.randperm(len(exact), generator=torch.Generator().manual_seed(0))]
    out = rec.mcc(perm, t)
    assert out["isolated"] == pytest.approx(1.0, abs=1e-6) and out["all_directions"] == pytest.approx(1.0, abs=1e-6)
    assert set(rec.mcc(perm, syn.ground_truth(syn.LowRankSpec(**SMALL)))) == {"isolated"}
    assert math.isfinite(rec.mcc(torch.randn(20, 16), t)["isolated"])


def test_standard_mcc_counts_unmatched_directions_as_zero():
    t = _truth()
    exact = torch.cat([t.isolated, t.directions.reshape(-1, 16)]).float()
    half = exact[: len(exact) // 2]  # fewer latents than directions, each one exact
    out = rec.mcc(half, t)
    assert out["all_directions_saelens"] == pytest.approx(1.0, abs=1e-6)  # min(n_true, F) = F: inflated
    assert out["all_directions"] == pytest.approx(len(half) / len(exact), abs=1e-6)
    # a plain reference: greedy is optimal when every latent is one distinct true direction
    assert rec.mcc_over_truth(exact, exact) == pytest.approx(1.0) and rec.mcc_over_truth(exact, -exact) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ground-truth"):
        rec.mcc_over_truth(torch.zeros(0, 16), exact)
