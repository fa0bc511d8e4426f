"""The range rule of every profile field: what values `section.field` allows.

`RULES` maps section → field → rule; a rule is a function `(name, value)` that raises a
ValueError naming the field, what it allows and what it got. The small constructors here
(`at_least`, `interval`, `one_of`, `increasing`, `seeds`, ...) build them. `profile_checks`
applies them at load, after each value's type has been checked against its annotation; its test
asserts that every numeric field has a rule here. `SHADOWED` lists the settings a study section
holds for itself (a study section wins over the `sae` section).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .precision import PRECISIONS

Rule = Callable[[str, Any], None]


# ----------------------------------------------------------------------------------------------
# range rules
# ----------------------------------------------------------------------------------------------


def _fail(name: str, allowed: str, value: Any) -> None:
    raise ValueError(f"{name} must be {allowed}; got {name}={value!r}")


def at_least(lo: float) -> Rule:
    def rule(name: str, value: Any) -> None:
        for v in value if isinstance(value, tuple) else (value,):
            if v is not None and v < lo:
                _fail(name, f"≥ {lo:g}" + (" (every entry)" if isinstance(value, tuple) else ""), value)

    return rule


def above(lo: float) -> Rule:
    def rule(name: str, value: Any) -> None:
        for v in value if isinstance(value, tuple) else (value,):
            if v is not None and not v > lo:
                _fail(name, f"> {lo:g}" + (" (every entry)" if isinstance(value, tuple) else ""), value)

    return rule


def interval(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> Rule:
    text = f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"

    def rule(name: str, value: Any) -> None:
        for v in value if isinstance(value, tuple) else (value,):
            if v is None:
                continue
            if (v <= lo if open_lo else v < lo) or (v >= hi if open_hi else v > hi):
                _fail(name, text + (" (every entry)" if isinstance(value, tuple) else ""), value)

    return rule


def one_of(*allowed: Any) -> Rule:
    def rule(name: str, value: Any) -> None:
        for v in value if isinstance(value, tuple) else (value,):
            if v not in allowed:
                _fail(name, f"one of {list(allowed)}" + (" (every entry)" if isinstance(value, tuple) else ""), value)

    return rule


def increasing(lo: float = 1) -> Rule:
    """A non-empty, strictly increasing list with entries ≥ lo."""

    def rule(name: str, value: Any) -> None:
        if not value:
            _fail(name, "a non-empty list", value)
        at_least(lo)(name, value)
        if any(a >= b for a, b in zip(value, value[1:])):
            _fail(name, "strictly increasing (sorted, no repeats)", value)

    return rule


def increasing_or_empty(lo: float = 1) -> Rule:
    def rule(name: str, value: Any) -> None:
        if value:
            increasing(lo)(name, value)

    return rule


def seeds(at_least_n: int = 1) -> Rule:
    def rule(name: str, value: Any) -> None:
        if len(value) < at_least_n or len(set(value)) != len(value) or any(s < 0 for s in value):
            _fail(name, f"at least {at_least_n} distinct non-negative seed(s)", value)

    return rule


def device(name: str, value: Any) -> None:
    if not (value in ("cpu", "cuda", "mps") or str(value).startswith("cuda:")):
        _fail(name, "'cpu', 'cuda', 'cuda:<index>' or 'mps'", value)


def corpus_source(name: str, value: Any) -> None:
    if value != "fortunes" and not str(value).startswith("hf:"):
        _fail(name, "'fortunes', 'hf:<dataset name>' or 'hf:<local dataset path>'", value)


def extra_sources(name: str, value: Any) -> None:
    """Distinct names of the prose sources `corpus.py` knows (imported here: corpus imports config)."""
    from .corpus import check_extra_sources

    check_extra_sources(value)


def both(*rules: Rule) -> Rule:
    def rule(name: str, value: Any) -> None:
        for r in rules:
            r(name, value)

    return rule


POS, NONNEG, PROB, UNIT = at_least(1), at_least(0), interval(0, 1), interval(0, 1, open_lo=True)
OPEN_UNIT = interval(0, 1, open_lo=True, open_hi=True)
LAYER = at_least(0)  # upper bound: the model's layer count, checked in `check_layers`
#: weight dtypes of the LM (`lm.dtype`); compute precisions (`lm.compute_dtype`, `sae.dtype`) are
#: `precision.PRECISIONS`, the names `precision.resolve` accepts
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")

#: section → field → rule. Fields that are not numbers (names, free text) need none.
#: Every study with a token-budget ladder (`studies/budget_ladders.py`) has these three settings.
LADDER: dict[str, Rule] = {
    "convergence_tokens": increasing_or_empty(),
    "convergence_seeds": seeds(2),
    "ladder_decay_fraction": OPEN_UNIT,
}

RULES: dict[str, dict[str, Rule]] = {
    "corpus": {
        "source": corpus_source,
        "hf_n_texts": POS,
        "val_fraction": OPEN_UNIT,
        "vocab_size": at_least(260),
        "extra_sources": extra_sources,
    },
    "lm": {
        "n_layers": POS,
        "d_model": POS,
        "n_heads": POS,
        "d_mlp": POS,
        "n_ctx": at_least(2),
        "train_epochs": above(0),
        "batch_size": POS,
        "lr": above(0),
        "weight_decay": NONNEG,
        "warmup_steps": NONNEG,
        "seed": NONNEG,
        "device": device,
        "dtype": one_of(*WEIGHT_DTYPES),
        "compute_dtype": one_of(*PRECISIONS),
    },
    "activations": {"n_tokens": POS, "n_eval_tokens": POS, "batch_size": POS},
    "runner": {"cpus_per_task": NONNEG, "gpus_per_task": NONNEG, "max_retries": NONNEG},
    "sae": {
        "expansion_factor": POS,
        "k": POS,
        "train_tokens": POS,
        "lr": above(0),
        "lr_warm_up_fraction": PROB,
        "lr_decay_fraction": PROB,
        "aux_loss_coefficient": NONNEG,
        "l1_coefficient": NONNEG,
        "jumprelu_sparsity_coefficient": NONNEG,
        "dead_feature_window": POS,
        "device": device,
        "dtype": one_of(*PRECISIONS),
        "prefetch": NONNEG,
        "shuffle_block_rows": NONNEG,
        "shuffle_window_blocks": POS,
        "feed_dtype": one_of("float32", "bfloat16"),
    },
    "study00": {
        "layer": LAYER,
        "ks": increasing(),
        "n_samples": POS,
        "n_loss_tokens": POS,
        "stat_layers": increasing_or_empty(0),
        "threads": POS,
    },
    "study01": {
        "layers": increasing(0),
        "seeds": seeds(2),
        "expansion_factors": increasing(),
        "reduced_expansion_factors": increasing_or_empty(),
        "train_tokens": POS,
        "batch_size": POS,
        "lr": above(0),
        "l1_coefficient": NONNEG,
        "matryoshka_prefixes": both(increasing_or_empty(0), interval(0, 1, open_lo=True, open_hi=True)),
        "tau": UNIT,
        "tau_sweep": both(increasing(0), UNIT),
        "analysis_expansion_factor": POS,
        "n_ce_tokens": POS,
        "n_marginal_features": POS,
        "n_top_activations": POS,
        "min_firings": POS,
        "single_token_share": UNIT,
        "subspace_dim": POS,
        "n_random_subspaces": POS,
        "n_random_ablations": POS,
        "hungarian_max_features": POS,
        "pool_seeds": seeds(2),
        "pool_group_size": at_least(2),
        "pool_refit_tokens": POS,
        **LADDER,
        "ladder_warmup_tokens": NONNEG,
        "lr_sweep_rung": NONNEG,
        "convergence_lrs": both(increasing(0), above(0)),
        "threads": POS,
    },
    "study02": {
        "d": at_least(2),
        "n_isolated": NONNEG,
        "n_groups": NONNEG,
        "rank": POS,
        "directions": POS,
        "p_isolated": PROB,
        "p_group": PROB,
        "magnitude_mean": above(0),
        "magnitude_std": NONNEG,
        "noise_std": NONNEG,
        "layout": one_of("orthogonal", "random"),
        "data_seed": NONNEG,
        "n_rows": POS,
        "n_eval_rows": POS,
        "seeds": seeds(2),
        "dict_factor": above(0),
        "k": POS,
        "train_tokens": POS,
        "sweep_train_tokens": POS,
        "batch_size": POS,
        "lr": above(0),
        "l1_coefficient": NONNEG,
        **LADDER,
        "sweep_seeds": seeds(2),
        "sweep_ranks": increasing(),
        "sweep_dict_factors": both(increasing(0), above(0)),
        "sweep_dict_rank": POS,
        "sweep_dict_directions": POS,
        "tau": UNIT,
        "recovered_cos": UNIT,
        "min_energy": UNIT,
        "min_firings": POS,
        "subspace_dim": POS,
        "n_random_subspaces": POS,
        "threads": POS,
    },
    "study03": {
        "layer": LAYER,
        "ks": increasing(),
        "expansion_factor": POS,
        "seeds": seeds(1),
        "train_tokens": POS,
        "budget_sweep": increasing_or_empty(),
        "lr": above(0),
        **LADDER,
        "reduced_ks": increasing_or_empty(),
        "matryoshka_fractions": both(increasing(0), UNIT),
        "n_ce_tokens": POS,
        "n_top": POS,
        "threads": POS,
    },
    "study04": {
        "layer": LAYER,
        "k": POS,
        "expansion_factors": increasing(),
        "main_mn": POS,
        "sweep_expansion_factor": POS,
        "seeds": seeds(2),
        "sweep_seeds": seeds(1),
        "train_tokens": POS,
        "batch_size": POS,
        "lr": above(0),
        "convergence_multiples": both(increasing(0), above(0)),
        **LADDER,
        "n_ce_tokens": POS,
        "n_top": POS,
        "min_firings": POS,
        "timing_batch": POS,
        "timing_repeats": POS,
        "threads": POS,
    },
    "study05": {
        **LADDER,
        "first_layer": LAYER,
        "last_layer": LAYER,
        "expansion_factor": POS,
        "k": POS,
        "seeds": seeds(1),
        "train_tokens": POS,
        "batch_size": POS,
        "lr": above(0),
        "match_k": POS,
        "null_quantile": OPEN_UNIT,
        "null_cov_tokens": POS,
        "min_firings": POS,
        "n_top_activations": POS,
        "graph_resid_threshold": interval(-1, 1),
        "graph_module_threshold": interval(-1, 1),
        "deactivation_windows": POS,
        "deactivation_features": POS,
        "deactivation_windows_per_feature": POS,
        "deactivation_r": NONNEG,
        "steer_layer": LAYER,
        "judge_ceiling": PROB,
        "seeds_per_theme": POS,
        "seed_feature_sae_seeds": POS,
        "max_token_share": PROB,
        "enrichment_tokens": POS,
        "scales": above(0),
        "alpha": interval(-10, 10),
        "linear_end": NONNEG,
        "removal_scales": interval(-100, 0, open_hi=True),
        "removal_prompts": POS,
        "removal_prompt_words": POS,
        "samples_per_prompt": POS,
        "max_new_tokens": POS,
        "temperature": above(0),
        "top_p": UNIT,
        "generation_batch_size": POS,
        "generation_seed": NONNEG,
        "classifier_entries": POS,
        "classifier_max_features": POS,
        "classifier_c": above(0),
        "repetition_n": POS,
        "anchor_windows": POS,
        "n_shown_samples": NONNEG,
        "threads": POS,
    },
    "study06": {
        "layer": LAYER,
        "expansion_factor": POS,
        "k": POS,
        "seeds": seeds(2),
        "train_tokens": POS,
        "batch_size": POS,
        "lr": above(0),
        "standard_lr": above(0),
        "matryoshka_prefixes": both(increasing(0), OPEN_UNIT),
        "hierarchical_ks": increasing(),
        "kron_mn": POS,
        "l1_coefficients": both(increasing(0), above(0)),
        "tau": OPEN_UNIT,
        "min_firings": POS,
        "duplicate_cosine": OPEN_UNIT,
        "collapse_duplicate_share": UNIT,
        "n_ce_tokens": POS,
        "probe_ks": increasing(),
        "probe_min_tokens": POS,
        "probe_max_texts": POS,
        "probe_test_fraction": OPEN_UNIT,
        "absorption_max_occurrences": POS,
        "absorption_max_k": POS,
        "absorption_f1_jump": PROB,
        "absorption_min_probe_f1": PROB,
        "absorption_min_words": POS,
        "handle_subspace_cosine": OPEN_UNIT,
        "handle_scales": both(increasing(0), above(0)),
        **LADDER,
        "convergence_lrs": both(increasing_or_empty(0), above(0)),
        "lr_sweep_rung": NONNEG,
        "threads": POS,
    },
}

#: Study fields that decide a setting the `sae` section also holds: the study's value wins for
#: that study (a None study value falls back to the sae value).
SHADOWED = {
    "train_tokens": ("study01", "study02", "study03", "study04", "study05", "study06"),
    "lr": ("study01", "study02", "study04", "study05", "study06"),
    "l1_coefficient": ("study01", "study02"),
    "k": ("study04", "study05", "study06"),
}
