"""Every profile value checked at load, before any model is trained or data harvested.

`check_profile(profile)` runs inside `config.load_profile`: each field's value is checked against
its declared type (from the dataclass annotations) and against its range rule in
`profile_rules.RULES`, and
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
from typing import Any

from .profile_rules import RULES, SHADOWED, _fail

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
