"""Every profile value checked at load, before any model is trained or data harvested.

`check_profile(profile)` runs inside `config.load_profile`: each field's value is checked against
its declared type (from the dataclass annotations) and against the range rule in `RULES`, and
the error names the field (`section.field`), the values it allows and what it got. Cross-field
rules that need the model's shape (layers, dictionary sizes) run in `pipeline.start`, through
each study's own `check`, with the shape taken from the profile (`model_shape`), still before any
work. A test asserts that every numeric field has a rule, so a new field cannot go unchecked.

Where a study section and the `sae` section both hold a setting (train_tokens, lr, ...), the study
section wins for that study; `shadowed_settings` names what an explicitly set `sae.*` value does
not reach, and `load_profile` warns about it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from .precision import PRECISIONS

Rule = Callable[[str, Any], None]


# ----------------------------------------------------------------------------------------------
# types
# ----------------------------------------------------------------------------------------------


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list (each entry {_describe(args[0])})"
        return f"a list of exactly {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def coerce(value: Any, hint: Any) -> Any:
    """YAML / JSON values into the field's type where that loses nothing: lists become tuples
    (recursively) and integers become floats for float fields. Anything else is left for
    `check_type` to reject."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for a in args:
            if a is not type(None):
                coerced = coerce(value, a)
                if _matches(coerced, a):
                    return coerced
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        if len(args) == len(value):
            return tuple(coerce(v, a) for v, a in zip(value, args))
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_type(name: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ValueError(f"{name} must be {_describe(hint)}; got {value!r} ({type(value).__name__})")


def field_types(section: Any) -> dict[str, Any]:
    """The evaluated annotations of a config dataclass (the modules use postponed annotations)."""
    return typing.get_type_hints(type(section))


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
        "convergence_tokens": increasing_or_empty(),
        "ladder_decay_fraction": OPEN_UNIT,
        "ladder_warmup_tokens": NONNEG,
        "lr_sweep_rung": NONNEG,
        "convergence_lrs": both(increasing(0), above(0)),
        "convergence_seeds": seeds(2),
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
        "budgets": increasing_or_empty(),
        "budget_seeds": seeds(1),
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
        "n_ce_tokens": POS,
        "n_top": POS,
        "min_firings": POS,
        "timing_batch": POS,
        "timing_repeats": POS,
        "threads": POS,
    },
    "study05": {
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


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------


def check_section(section_name: str, section: Any) -> None:
    """Type and range of every field of one section, naming `section.field`."""
    hints = field_types(section)
    rules = RULES.get(section_name, {})
    for f in dataclasses.fields(section):
        name, value = f"{section_name}.{f.name}", getattr(section, f.name)
        check_type(name, value, hints[f.name])
        if f.name in rules and value is not None:
            rules[f.name](name, value)


def check_cross_fields(profile: Any) -> None:
    """Rules between fields that need no model: budgets against batch sizes and contexts."""
    A, lm = profile.activations, profile.lm
    for name, value in (("activations.n_tokens", A.n_tokens), ("activations.n_eval_tokens", A.n_eval_tokens)):
        if value % lm.n_ctx:
            _fail(name, f"a multiple of lm.n_ctx={lm.n_ctx} (whole context windows are harvested)", value)
    for section in ("activations", "study01", "study04", "study05", "study06"):
        batch = getattr(profile, section).batch_size
        if A.n_tokens % batch:
            raise ValueError(
                f"{section}.batch_size={batch} must divide activations.n_tokens={A.n_tokens} (SAEs stream whole passes)"
            )
    S2 = profile.study02
    if S2.n_rows % S2.batch_size:
        raise ValueError(f"study02.batch_size={S2.batch_size} must divide study02.n_rows={S2.n_rows}")
    for section in ("sae", "study01", "study03", "study04", "study05", "study06"):
        tokens = getattr(profile, section).train_tokens
        batch = A.batch_size if section in ("sae", "study03") else getattr(profile, section).batch_size
        if tokens < batch:
            raise ValueError(f"{section}.train_tokens={tokens} is smaller than one batch of {batch} rows")
    if lm.d_model % lm.n_heads:
        raise ValueError(f"lm.n_heads={lm.n_heads} must divide lm.d_model={lm.d_model}")
    if profile.sae.lr_warm_up_fraction + profile.sae.lr_decay_fraction > 1:
        raise ValueError("sae.lr_warm_up_fraction + sae.lr_decay_fraction must be at most 1")
    S5 = profile.study05
    if S5.last_layer is not None and S5.last_layer < S5.first_layer:
        raise ValueError(f"study05.last_layer={S5.last_layer} must be ≥ study05.first_layer={S5.first_layer}")


def check_layers(profile: Any, n_layers: int) -> None:
    """Every layer field against the model's layer count (0..n_layers − 1)."""
    fields = {
        "study00.layer": [profile.study00.layer],
        "study00.stat_layers": list(profile.study00.stat_layers),
        "study01.layers": list(profile.study01.layers),
        "study03.layer": [profile.study03.layer],
        "study04.layer": [profile.study04.layer],
        "study05.first_layer": [profile.study05.first_layer],
        "study05.last_layer": [profile.study05.last_layer],
        "study05.steer_layer": [profile.study05.steer_layer],
        "study06.layer": [profile.study06.layer],
    }
    for name, layers in fields.items():
        if any(layer is not None and not 0 <= layer < n_layers for layer in layers):
            value = layers[0] if len(layers) == 1 else layers
            _fail(name, f"a layer in 0..{n_layers - 1} (the model has {n_layers} layers)", value)


def check_profile(profile: Any) -> None:
    """Every section's types and ranges, then the cross-field rules; raises on the first problem."""
    for f in dataclasses.fields(profile):
        if f.name not in ("name", "overrides"):
            check_section(f.name, getattr(profile, f.name))
    check_cross_fields(profile)


def shadowed_settings(profile: Any, explicit: set[str]) -> list[str]:
    """Messages for `sae.*` values set explicitly (in the profile file or the overrides) that a
    study section overrides: which studies do not use them, and which value they use instead."""
    messages = []
    for key, studies in SHADOWED.items():
        if f"sae.{key}" not in explicit:
            continue
        winners = [
            f"{s}.{key}={getattr(getattr(profile, s), key)!r}" for s in studies if getattr(getattr(profile, s), key) is not None
        ]
        if winners:
            messages.append(
                f"sae.{key}={getattr(profile.sae, key)!r} does not reach the studies whose own section sets it "
                f"({', '.join(winners)}): a study section wins over the sae section; set those fields instead"
            )
    return messages
