"""Architectures by name (recipes), the SAELens registration guard, and the shared input checks."""

import pytest
import torch

from sae_studies import checks
from sae_studies.saes import registry


def test_every_recipe_builds_a_spec_and_names_a_registered_class():
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    for name in registry.names():
        recipe = registry.get(name)
        spec = recipe.spec(256, 8)
        assert spec.architecture == name and spec.d_sae == 256
        assert (spec.k is None) == (not recipe.uses_k)
        for fast in (True, False):
            assert recipe.training_class_for(fast) in SAE_TRAINING_CLASS_REGISTRY


def test_recipe_options_become_config_fields_and_defaults_leave_keys_unchanged():
    m = registry.get("matryoshka_batchtopk").spec(1024, 32, prefixes=(0.125, 0.25, 0.5))
    assert dict(m.extra) == {"matryoshka_widths": [128, 256, 512, 1024]}
    assert registry.get("matryoshka_batchtopk").spec(1024, 32, prefixes=(0.125, 0.25, 0.5, 1.0)).extra == m.extra
    assert registry.get("multi_topk").spec(1024, 32).extra == ()  # defaults: the cache keys of earlier runs hold
    assert dict(registry.get("multi_topk").spec(1024, 32, factor=2).extra) == {"multi_topk_factor": 2}
    assert registry.get("hierarchical_topk").spec(1024, 32).extra == ()
    assert dict(registry.get("hierarchical_topk").spec(1024, 8, levels=[2, 8]).extra) == {"levels": [2, 8]}


@pytest.mark.parametrize(
    "name,d_sae,k,options,match",
    [
        ("multi_topk", 64, 32, {}, r"k \* factor"),
        ("matryoshka_batchtopk", 64, 8, {"prefixes": (0.5, 0.25)}, "strictly increasing"),
        ("topk", 64, 65, {}, "at most d_sae=64"),
        ("topk", 64, None, {}, "k must be"),
        ("standard", 64, None, {"nope": 1}, "takes no options"),
        ("hierarchical_topk", 64, 8, {"levels": [4, 2]}, "increasing"),
    ],
)
def test_bad_requests_fail_with_the_parameter_named(name, d_sae, k, options, match):
    recipe = registry.get(name)
    with pytest.raises(ValueError, match=match):
        recipe.spec(d_sae, k, **options)
    assert recipe.problem(d_sae, k, **options) is not None
    assert registry.get("topk").problem(64, 8) is None


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: .*topk"):
        registry.get("topkk")
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        registry.SAESpec("topkk", 64, 4)


def test_a_recipe_must_name_known_classes():
    with pytest.raises(ValueError, match="does not know"):
        registry.register(registry.Recipe(name="ghost", training_class="no_such_class"))
    assert "ghost" not in registry.names()


def test_checks_name_the_parameter_and_the_allowed_values():
    assert checks.check_int("k", 3, 1, 5) == 3
    with pytest.raises(ValueError, match=r"k must be an integer in 1..5; got k=7"):
        checks.check_int("k", 7, 1, 5)
    with pytest.raises(ValueError, match="k must be an integer"):
        checks.check_int("k", True)
    assert checks.check_sorted_ints("ks", [1, 4, 8]) == [1, 4, 8]
    with pytest.raises(ValueError, match="strictly increasing"):
        checks.check_sorted_ints("ks", [8, 4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        checks.check_probability("p", 1.5)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        checks.check_cosine_threshold("threshold", -1.2)
    with pytest.raises(ValueError, match="one of"):
        checks.check_choice("theme", "poems", ["limerick", "zippy"])
    with pytest.raises(ValueError, match=r"boolean mask of shape \[4\]"):
        checks.check_mask("m", torch.ones(4), 4)
    a, b = torch.ones(2, 3), torch.zeros(5, 3)
    assert checks.tensor_digest(a) == checks.tensor_digest(a.clone()) != checks.tensor_digest(b)
