"""Study 5: profile checks, grid and tables (studies.flow; the verdict rules: test_study05_claims.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sae_studies.analyses import flow
from sae_studies.config import load_profile
from sae_studies.studies import flow as sf
from sae_studies.study_config import Study05Config


def C(**kw) -> Study05Config:
    return dataclasses.replace(Study05Config(), **kw)


# ------------------------------------------------------------------ checks and grid


def test_profiles_pass_the_checks():
    for name in ("smoke", "default"):
        P = load_profile(name)
        layers = sf.check_study05(P.study05, P.lm.n_layers, P.sae.k, P.lm.d_model)
        assert layers == list(range(P.lm.n_layers))


def test_window_and_steer_layer():
    assert sf.window_layers(C(first_layer=1, last_layer=2), 4) == [1, 2]
    assert sf.window_layers(C(first_layer=2), 4) == [2, 3]
    assert sf.steer_layer(C(), [0, 1, 2, 3]) == 2
    assert sf.steer_layer(C(steer_layer=1), [0, 1, 2, 3]) == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"last_layer": 4}, r"study05.last_layer must be an integer in 0..3"),
        (
            {"first_layer": 5},
            r"study05.first_layer must be an integer in 0..3 \(the model has 4 layers\); got study05.first_layer=5",
        ),
        ({"steer_layer": 0, "first_layer": 1}, r"study05.steer_layer must be an integer in 1..3"),
        (
            {"themes": ("limerick", "poems")},
            r"each of study05.themes must be one of \['fortunes', 'limerick', 'murphy', 'startrek', 'zippy'\]; got 'poems'",
        ),
        ({"graph_resid_threshold": 1.2}, r"study05.graph_resid_threshold must be a cosine in \[-1, 1\]; got 1.2"),
        ({"graph_module_threshold": -2}, r"study05.graph_module_threshold must be a cosine in \[-1, 1\]"),
        ({"match_k": 3}, r"study05.match_k must be an integer >= 5"),
        ({"null_kind": "uniform"}, r"study05.null_kind must be one of \['covariance', .*\]; got 'uniform'"),
        ({"schedules": ("constant", "cosine")}, r"each of study05.schedules must be one of"),
        ({"scales": (1.0, 0.5)}, r"study05.scales must be positive and strictly increasing"),
        ({"removal_scales": (0.5,)}, r"study05.removal_scales must be negative"),
        ({"seeds": (0, 0)}, r"study05.seeds must be distinct"),
        ({"architecture": "nope"}, r"unknown SAE architecture 'nope'"),
        ({"seeds": (0,), "seed_feature_sae_seeds": 2}, r"study05.seed_feature_sae_seeds must be an integer in 1..1"),
        ({"max_token_share": 1.5}, r"study05.max_token_share"),
    ],
)
def test_bad_sections_fail_naming_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        sf.check_study05(C(**bad), 4, 32, 128)


def test_steering_jobs_carry_the_sae_seed_of_each_feature():
    cond = sf.steering_conditions(C(scales=(1.0,), schedules=("constant",), removal_scales=(-1.0,)))
    jobs = sf.steering_jobs(cond, {"limerick": [(0, 7), (1, 3)]}, [0, 1], {"limerick": [2]}, samples=2)
    assert set(zip(jobs.sae_seed, jobs.feature)) == {(0, 7), (1, 3)}
    assert jobs.groupby("cell")[["sae_seed", "feature"]].nunique().max().max() == 1  # one feature per cell
    plain = sf.steering_jobs(cond, {"limerick": [7]}, [0], {"limerick": [2]}, samples=1)
    assert plain.sae_seed.isna().all() and (plain.feature == 7).all()


def test_steering_conditions_cover_the_grid():
    c = C(scales=(0.5, 1.0), schedules=("constant", "linear"), removal_scales=(-1.0,))
    cond = sf.steering_conditions(c)
    toward = cond[cond.direction == "toward"]
    assert len(toward) == 1 + 2 + 2 * 2
    assert ((toward.span == "none") == (toward.s == 0)).all()
    away = cond[cond.direction == "away"]
    assert set(away.schedule) == {"none", "constant", "remove"} and len(away) == 1 + 2 * 2


def test_group_table_and_fractions():
    rng = np.random.default_rng(0)
    import torch

    decs = {p: torch.as_tensor(rng.normal(size=(10, 6)), dtype=torch.float32) for p in flow.window_positions([0, 1])}
    m = flow.match_decoders(decs, [0, 1])
    thr = {(k, layer): 0.6 for k in flow.SOURCES for layer in (0, 1)}
    alive = {0: np.arange(10) < 8, 1: np.ones(10, bool)}
    g = sf.group_table(m, thr, alive)
    assert len(g) == 18 and set(g["group"]) <= set(flow.GROUPS)
    frac = sf.group_fractions(g)
    np.testing.assert_allclose(frac.sum(1), 1.0)
    assert list(frac.columns) == list(flow.GROUPS)


def test_mean_se():
    df = pd.DataFrame({"a": ["x"] * 4 + ["y"] * 2, "v": [1.0, 2.0, 3.0, 4.0, 5.0, 5.0]})
    out = sf.mean_se(df, ["a"], ["v"]).set_index("a")
    assert out.loc["x", "v"] == 2.5 and out.loc["x", "v_n"] == 4
    assert out.loc["x", "v_se"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert out.loc["y", "v_se"] == 0
    with_nan = pd.DataFrame({"s": [1.0, np.nan, np.nan], "v": [1.0, 2.0, 4.0]})
    assert len(sf.mean_se(with_nan, ["s"], ["v"])) == 2  # a removal (s = NaN) is a group of its own


def test_removal_prompts():
    from sae_studies.corpus import Entry

    entries = [
        Entry("There once was a man from Peru", "limerick", "f"),
        Entry("Beam me up", "startrek", "f"),
        Entry("There was a young lady of Niger", "limerick", "f"),
    ]
    prompts = sf.removal_prompt_texts(entries, "limerick", n=5, words=3)
    assert sorted(prompts) == ["There once was", "There was a"]
    with pytest.raises(
        ValueError, match=r"theme must be one of \['fortunes', 'limerick', 'murphy', 'startrek', 'zippy'\]; got 'poems'"
    ):
        sf.removal_prompt_texts(entries, "poems", n=1, words=3)
    with pytest.raises(ValueError, match="no validation entry of theme 'zippy'"):
        sf.removal_prompt_texts(entries, "zippy", n=1, words=3)
