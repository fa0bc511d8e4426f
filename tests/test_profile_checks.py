"""Every profile value is checked at load, naming the field and what it allows, before any work;
overrides arrive as mappings or strings (papermill -p, make OVERRIDES=...)."""

import dataclasses
import typing

import pytest

from sae_studies import config, pipeline, profile_checks, profile_rules


@pytest.mark.parametrize(
    "override, message",
    [
        ({"study03.layer": 7}, r"study03.layer must be a layer in 0..3 \(the model has 4 layers\); got study03.layer=7"),
        ({"study03.ks": 8}, r"study03.ks must be a list \(each entry an integer\); got 8"),
        ({"sae.train_tokens": "lots"}, r"sae.train_tokens must be an integer; got 'lots'"),
        ({"lm.d_model": -4}, r"lm.d_model must be ≥ 1; got lm.d_model=-4"),
        ({"study03.train_tokens": 0}, r"study03.train_tokens must be ≥ 1"),
        ({"sae.train_tokens": 0}, r"sae.train_tokens must be ≥ 1"),
        ({"study01.tau": 1.5}, r"study01.tau must be in \(0, 1\]; got study01.tau=1.5"),
        ({"study03.ks": [16, 8]}, r"study03.ks must be strictly increasing"),
        ({"study01.seeds": [1, 1]}, r"study01.seeds must be at least 2 distinct"),
        ({"lm.device": "gpu"}, r"lm.device must be 'cpu', 'cuda'"),
        ({"lm.dtype": "half-ish"}, r"lm.dtype must be one of \['float32', 'bfloat16'"),
        ({"study01.batch_size": 3000}, r"study01.batch_size=3000 must divide activations.n_tokens"),
        ({"study05.last_layer": 9}, r"study05.last_layer must be a layer in 0..3"),
        ({"study04.main_mn": [2, 4, 8]}, r"study04.main_mn must be a list of exactly 2 values"),
        # every ladder warms up for this fraction: 51 steps run past study 5's 65k rung (branch step 25)
        (
            {"sae.lr_warm_up_fraction": 0.1},
            r"study05.convergence_tokens / ladder_decay_fraction \(warm-up: sae.lr_warm_up_fraction = 0.1\)",
        ),
    ],
)
def test_each_bad_value_is_named_at_start_before_any_work(override, message, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STUDIES_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        pipeline.start("default", override)
    assert not any(tmp_path.iterdir())  # nothing built, nothing harvested


def test_layers_are_checked_against_smollm2s_depth_without_loading_it():
    with pytest.raises(ValueError, match=r"study03.layer must be a layer in 0..29"):
        pipeline.check_studies(config.load_profile("smollm2", {"study03.layer": 30}))


@pytest.mark.parametrize(
    "overrides",
    ['{"sae.k": 16, "study00.ks": [4, 8]}', "sae.k: 16\nstudy00.ks: [4, 8]", {"sae": {"k": 16}, "study00.ks": [4, 8]}],
)
def test_overrides_as_json_yaml_or_nested_mapping(overrides):
    p = config.load_profile("smoke", overrides)
    assert p.sae.k == 16 and p.study00.ks == (4, 8)
    assert dict(p.overrides) == {"sae.k": 16, "study00.ks": [4, 8]}


@pytest.mark.parametrize("bad", ["{not: [closed", "[1, 2]", "7"])
def test_unparseable_overrides_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="overrides must be"):
        config.load_profile("smoke", bad)


def test_empty_overrides_are_no_overrides():
    assert config.load_profile("smoke", "").overrides == () and config.load_profile("smoke", None).overrides == ()


def test_ints_become_floats_and_lists_tuples():
    p = config.load_profile("smoke", {"sae.lr": 1, "study04.sweep_mn": [[1, 4], [2, 4]]})
    assert p.sae.lr == 1.0 and isinstance(p.sae.lr, float)
    assert p.study04.sweep_mn == ((1, 4), (2, 4))


def test_a_sae_value_that_a_study_section_overrides_warns():
    with pytest.warns(UserWarning, match=r"sae.train_tokens=4096 does not reach .*study03.train_tokens"):
        config.load_profile("smoke", {"sae.train_tokens": 4096})


def _flat_numeric(hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        return all(_flat_numeric(a) for a in args if a is not type(None))
    if origin is tuple:
        return all(a in (int, float, Ellipsis) for a in args)
    return hint in (int, float)


def test_every_numeric_field_has_a_range_rule():
    """A new numeric field cannot go unchecked: add its rule to profile_rules.RULES."""
    profile = config.load_profile("default")
    missing = []
    for f in dataclasses.fields(profile):
        if f.name in ("name", "overrides"):
            continue
        section = getattr(profile, f.name)
        for name, hint in profile_checks.field_types(section).items():
            if _flat_numeric(hint) and name not in profile_rules.RULES.get(f.name, {}):
                missing.append(f"{f.name}.{name}")
    assert not missing, f"fields without a range rule: {missing}"


@pytest.mark.parametrize("name", config.available_profiles())
def test_every_committed_profile_passes_its_checks(name):
    pipeline.check_studies(config.load_profile(name))
