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


def test_only_a_publishing_run_of_a_committed_profile_stages_for_figures(monkeypatch):
    root = config.repo_root()
    monkeypatch.delenv(config.PUBLISH_ENV, raising=False)
    assert config.load_profile("default").figures_dir == root / "build" / "figures" / "default"  # interactive
    monkeypatch.setenv(config.PUBLISH_ENV, "1")
    default = config.load_profile("default")
    assert default.publishing and default.figures_dir == root / "build" / "publish" / "default"
    assert default.committed_figures_dir == root / "figures"
    assert config.load_profile("smollm2").committed_figures_dir == root / "figures" / "smollm2"
    overridden = config.load_profile("default", {"sae.k": 16})
    assert not overridden.publishing
    assert overridden.figures_dir == root / "build" / "figures" / f"default-{overridden.overrides_hash}"
    smoke = config.load_profile("smoke")
    assert not smoke.publishing and smoke.figures_dir == root / "build" / "figures" / "smoke"
