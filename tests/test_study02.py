"""Study 2: parameter checks, cells, verdict rules (one table each way) and a tiny end-to-end run
through train.train_sae on generated rows (no language model)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.config import Profile, load_profile
from sae_studies.store import Store
from sae_studies.studies import budget_ladders as BL
from sae_studies.studies import synthetic as S2
from sae_studies.studies import synthetic_claims
from sae_studies.studies import synthetic_control as S2C
from sae_studies.studies import synthetic_ladder as S2L
from sae_studies.studies.verdicts import Verdict
from sae_studies.study_config import Study02Config

TINY = Study02Config(
    d=12,
    n_isolated=2,
    n_groups=2,
    rank=3,
    n_rows=2048,
    n_eval_rows=1024,
    seeds=(0, 1),
    train_tokens=2048,
    sweep_train_tokens=1024,
    batch_size=256,
    lr=5e-3,
    convergence_tokens=(1024, 2048),
    convergence_seeds=(0, 1),
    architectures=("topk", "standard"),
    sweep_seeds=(0, 1),
    sweep_ranks=(2,),
    sweep_directions=(1, None),
    sweep_dict_rank=2,
    sweep_dict_directions=2,
    sweep_dict_factors=(1.0,),
    min_firings=1,
    subspace_dim=3,
    n_random_subspaces=2,
    k=2,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# ------------------------------------------------------------------ parameters


def test_profiles_pass_the_checks():
    for name in ("smoke", "default"):
        spec = S2.check(load_profile(name).study02)
        assert spec.n_gt_dims <= spec.d
    assert S2.check(TINY).rank == 3


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"rank": 12}, ["study02", "rank", "1..11"]),
        ({"directions": 0}, ["directions", ">= 1"]),
        ({"p_group": 2.0}, ["p_group"]),
        ({"dict_factor": 0.1}, ["dict_factor", "n_isolated=2"]),
        ({"sweep_dict_factors": (0.05,)}, ["sweep_dict_factors", "n_isolated=2"]),
        ({"k": 100}, ["study02.k", "F=16"]),
        ({"seeds": (0,)}, ["study02.seeds", "at least 2"]),
        ({"sweep_seeds": (1, 1)}, ["study02.sweep_seeds"]),
        ({"batch_size": 300}, ["batch_size", "divide"]),
        ({"sweep_ranks": (6,)}, ["n_isolated + n_groups × rank", "d=12"]),
        ({"architectures": ("nope",)}, ["architectures", "topk"]),
        ({"tau": 0.0}, ["study02.tau"]),
        ({"sweep_directions": (0,)}, ["sweep_directions"]),
    ],
)
def test_bad_configs_fail_early_naming_the_parameter(changes, words):
    with pytest.raises(ValueError) as err:
        S2.check(dataclasses.replace(TINY, **changes))
    for w in words:
        assert w in str(err.value)


def test_dictionary_size_and_cells():
    assert S2.dictionary_size(2.0, 26, 8) == 52
    assert S2.dictionary_size(0.5, 104, 8) == 52
    with pytest.raises(ValueError, match="smaller than the n_isolated=8"):
        S2.dictionary_size(0.5, 10, 8)
    cfg = dataclasses.replace(TINY, sweep_ranks=(1, 2), sweep_directions=(1, 2, 4, None))
    assert S2.phase_cells(cfg) == [(1, 1), (1, 2), (1, None), (2, 2), (2, 4), (2, 8), (2, None)]
    models, labels = S2.size_models(TINY)
    # the phase diagram's F: at least the cell's ground-truth directions (r = 8, k = 32: 104 > 2 × 32)
    wide = dataclasses.replace(TINY, d=48, n_isolated=8, n_groups=3, dict_factor=2.0, sweep_ranks=(2, 8))
    spec = S2.spec_of(wide, 8, 32)
    assert spec.n_gt_dims == 32 and spec.n_gt_directions == 104 and S2.phase_dictionary_size(wide, spec) == 104
    assert S2.phase_dictionary_size(wide, S2.spec_of(wide, 2, 2)) == 2 * (8 + 3 * 2)  # dimensions rule already enough
    assert S2.phase_dictionary_size(wide, S2.spec_of(wide, 8, None)) == 64  # continuous: no directions to count
    assert all(f >= (spec_.n_gt_directions or 0) for spec_, f in S2.phase_models(wide)[0])
    assert [m[1] for m in models] == [2 + 2 * 4] and labels[0]["n_directions"] == 10


# ------------------------------------------------------------------ verdict rules


def test_verdict_control_and_class_composition():
    classes = pd.DataFrame(
        {
            "class": ["stable"] * 9 + ["unstable"] * 9 + ["dead"] * 3,
            "kind": ["isolated"] * 8 + ["group"] + ["group"] * 8 + ["none"] + ["group"] * 3,
        }
    )
    comp = S2C.class_composition(classes)
    assert comp.loc["stable", "isolated"] == pytest.approx(8 / 9) and comp.loc["unstable", "group"] == pytest.approx(8 / 9)
    assert comp.loc["partial"].sum() == 0  # absent class: zeros, not an error
    yes = Verdict("4", "p", "o", "agrees", "r")
    no = dataclasses.replace(yes, outcome="disagrees")
    assert synthetic_claims.verdict_control(comp, yes).outcome == "agrees"
    assert synthetic_claims.verdict_control(comp, no).outcome == "partly"
    flipped = comp.rename(index={"stable": "unstable", "unstable": "stable"})
    assert synthetic_claims.verdict_control(flipped, no).outcome == "disagrees"


# ------------------------------------------------------------------ a tiny end-to-end run


def test_tiny_run_through_train_sae(tmp_path):
    store = Store(tmp_path)
    profile = dataclasses.replace(Profile(name="tiny"), study02=TINY)
    spec = S2.check(TINY)
    acts, eval_x = S2.data(spec, TINY, store)
    d_sae = S2.dictionary_size(TINY.dict_factor, spec.n_gt_dims, TINY.n_isolated)
    results = {}
    for arch in TINY.architectures:
        saes = S2.train_models(acts, arch, d_sae, TINY, S2.sae_config(profile), store, TINY.seeds)
        assert saes[0].cfg.metadata.hook_name == "synthetic/train"
        results[arch] = S2.evaluate(saes, acts, eval_x, TINY, arch, TINY.seeds, torch.Generator().manual_seed(0))
    res = results["topk"]
    assert len(res.per_seed) == 2 and res.to_truth.shape == (2, 2, 3) and res.cross_seed.shape == (1, 2, 3)
    assert res.iso_best.shape == (2, 2) and res.dir_best is None
    assert set(res.latents.kind) <= {"isolated", "group", "none", "dead"} and len(res.latents) == 2 * d_sae
    assert set(res.nulls.null) >= {"covariance", "isotropic_span"}
    np.testing.assert_allclose(res.per_seed.cross_seed_cos2, (res.cross_seed**2).mean(), atol=1e-12)  # one pair
    row = S2.summary_row(res)
    assert row["d_sae"] == d_sae and 0 <= row["random_cos2"] <= 1
    classes = S2C.study1_classes(res, TINY)
    assert set(classes["class"]) <= {"stable", "partial", "unstable", "dead"}
    assert len(S2C.hungarian_rows(res, TINY.tau)) == 1
    cov = torch.cov(eval_x.double().T)
    ov, _ = S2C.study1_subspace(res, classes, cov, TINY, torch.Generator().manual_seed(0))
    assert set(ov.columns) >= {"group", "control", "overlap", "dim"}
    wide, _ = S2C.study1_subspace(res, classes, cov, TINY, torch.Generator().manual_seed(0), dim=10**6, not_stable=True)
    assert wide.empty or (wide.dim == 12 // 2).all()  # capped at d / 2, skipped when the class is smaller
    # the ladder: one row per architecture, rung and seed, the same numbers evaluate() gives its rung SAEs
    lad = S2L.ladder_table(profile, store, acts, eval_x, progress=False)
    assert len(lad) == len(TINY.architectures) * 2 * 2 and set(S2L.QUANTITIES) <= set(lad.columns)
    rungs = list(TINY.convergence_tokens)
    ladders = BL.train_arms(
        acts, S2L.arms(profile, spec), rungs, TINY.convergence_seeds, store, TINY.batch_size, 0.2, progress=False
    )
    assert [lad_.saes[-1].cfg.d_sae for lad_ in ladders["topk"]] == [d_sae, d_sae]
    top = S2.evaluate(
        [lad_.saes[-1] for lad_ in ladders["topk"]], acts, eval_x, TINY, "topk", TINY.convergence_seeds, torch.Generator()
    )
    got = lad[(lad.architecture == "topk") & (lad.tokens == 2048)].sort_values("seed")
    np.testing.assert_allclose(got.ev, top.per_seed.ev, rtol=1e-6)
    np.testing.assert_allclose(got.iso_recovered, top.per_seed.iso_recovered)
    phase = S2.sweep(profile, store, *S2.phase_models(TINY), progress=False)
    assert list(phase.multiple.fillna(-1)) == [1, -1] and phase.dir_recovered.notna().tolist() == [True, False]


# ------------------------------------------------------------------ the ladder's gate


def _ladder(moving: str | None) -> pd.DataFrame:
    """Two architectures, three rungs, three seeds: every quantity level (seed sd 0.01) except
    ``moving``, which rises by 0.1 per doubling for "standard"."""
    rows = []
    for arch in ("topk", "standard"):
        for i, t in enumerate((1024, 2048, 4096)):
            for seed in range(3):
                row = {"architecture": arch, "tokens": t, "seed": seed}
                for q in S2L.QUANTITIES:
                    row[q] = 0.5 + 0.01 * (seed - 1) + (0.1 * i if q == moving and arch == "standard" else 0.0)
                rows.append(row)
    return pd.DataFrame(rows)


def test_ladder_verdict_reads_the_top_rung_gated_on_every_quantity_of_the_verdict_for_every_architecture():
    before = Verdict("isolated features are recovered", "p", "o", "agrees", "r", n=5)

    def rule(rows):
        return synthetic_claims.verdict_isolated(rows, 0.9)

    level = S2L.ladder_verdict(before, rule, _ladder(None), "isolated", 2048)
    want = rule(_ladder(None).query("tokens == 4096"))
    # every quantity sits at 0.5, below the rule's 90 %: the top rung's reading, levelled off
    assert level.outcome == want.outcome == "disagrees" and level.statistic == pytest.approx(want.statistic)
    assert level.convergence.converged and "read on the ladder at 4,096 tokens" in level.ours
    assert "until 2026-12-07 read at the profile's budget (2,048 tokens, 5 seeds)" in level.previous
    moved = S2L.ladder_verdict(before, rule, _ladder("isolated_stable"), "isolated", 2048)
    assert moved.outcome == "untested" and "isolated latents' fraction stable, standard" in moved.convergence.quantity
    # a quantity the verdict does not read does not gate it
    assert S2L.ladder_verdict(before, rule, _ladder("group_stable"), "isolated", 2048).outcome == "disagrees"
    assert S2L.ladder_verdict(before, rule, pd.DataFrame(), "isolated", 2048) is before
    table = S2L.gate_table(_ladder("ev"), 4096)
    assert set(table.architecture) == {"topk", "standard"} and set(table.quantity) == set(S2L.QUANTITIES)
    assert not table[(table.quantity == "ev") & (table.architecture == "standard")].converged.item()


def test_ladder_settings_are_checked_at_load():
    with pytest.raises(ValueError, match="study02.convergence_seeds"):
        S2.check(dataclasses.replace(TINY, convergence_seeds=(0,)))
    with pytest.raises(ValueError, match="study02.convergence_tokens"):
        S2.check(dataclasses.replace(TINY, convergence_tokens=(1024, 1000)))
