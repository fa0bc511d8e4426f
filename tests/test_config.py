import pytest

from sae_studies import config


def test_profiles_load_and_differ():
    smoke, default = config.load_profile("smoke"), config.load_profile("default")
    assert smoke.lm.d_model < default.lm.d_model
    assert config.load_profile("gpt2").lm.name == "gpt2"
    assert {"smoke", "default", "gpt2"} <= set(config.available_profiles())


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown profile 'nope'.*smoke"):
        config.load_profile("nope")


@pytest.mark.parametrize("key, message", [("lm.nope", "valid in lm"), ("nope.x", "unknown section")])
def test_unknown_parameter_names_the_valid_ones(key, message):
    with pytest.raises(ValueError, match=message):
        config.load_profile("smoke", {key: 1})


def test_overrides_apply_and_lists_become_tuples():
    p = config.load_profile("smoke", {"lm.d_model": 48, "study00.ks": [2, 4]})
    assert p.lm.d_model == 48 and p.study00.ks == (2, 4)


def test_only_the_default_profile_writes_committed_figures():
    assert config.load_profile("default").figures_dir == config.repo_root() / "figures"
    assert "build" in config.load_profile("smoke").figures_dir.parts
