"""Architectures by name: one `Recipe` per architecture, registered next to its class.

A study asks for an architecture by name (``"topk"``, ``"matryoshka_batchtopk"``, ``"kron"``…)
and gets an :class:`SAESpec` from its recipe: the recipe validates the width, ``k`` and the
study's options and turns the options into the SAELens config fields they mean (Matryoshka
prefix fractions into widths, Kronecker heads into ``h, m, n``…). Training (`train.py`) then asks
the recipe which SAELens training class to build.

Adding an architecture is one file that defines its SAELens classes and calls
:func:`register` with its recipe, plus one import line in ``saes/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from sae_lens.registry import (
    SAE_CLASS_REGISTRY,
    SAE_TRAINING_CLASS_REGISTRY,
    register_sae_class,
    register_sae_training_class,
)

from ..checks import check_int


@dataclasses.dataclass(frozen=True)
class SAESpec:
    """What makes one SAE, beyond the activations it is trained on (part of its cache key)."""

    architecture: str
    """A recipe name (see :func:`names`)."""
    d_sae: int
    k: int | None = None
    """Active latents per token for the TopK family (mean per token for BatchTopK)."""
    seed: int = 0
    extra: tuple[tuple[str, Any], ...] = ()
    """SAELens config fields the recipe derived from the study's options, e.g.
    (("matryoshka_widths", [256, 1024]),)."""

    def __post_init__(self) -> None:
        recipe = get(self.architecture)
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be positive, got {self.d_sae}")
        if recipe.uses_k and (self.k is None or self.k < 1):
            raise ValueError(f"architecture {self.architecture!r} needs k ≥ 1, got {self.k}")

    def with_seed(self, seed: int) -> SAESpec:
        return dataclasses.replace(self, seed=seed)


def _no_options(d_sae: int, k: int | None, **options: Any) -> dict[str, Any]:
    if options:
        raise ValueError(f"this architecture takes no options; got {sorted(options)}")
    return {}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a study's request (width, k, seed, options) becomes a SAELens training config."""

    name: str
    """What studies ask for."""
    training_class: str
    """The SAELens-registered training architecture used by default (the sparse path for the
    TopK family)."""
    reference_class: str | None = None
    """SAELens' own training class, used instead when ``sae.fast`` is False (None: the same)."""
    uses_k: bool = True
    batch_threshold: bool = False
    """BatchTopK family: trained with a batch-level top-k whose threshold (an EMA) becomes a
    JumpReLU threshold at inference; ``sae.debias_batchtopk_threshold`` applies to it."""
    options: Callable[..., dict[str, Any]] = _no_options
    """``options(d_sae, k, **study_options) -> {config field: value}``; raises ValueError naming
    the option and the allowed values on bad input."""
    summary: str = ""

    def training_class_for(self, fast: bool) -> str:
        return self.training_class if fast or self.reference_class is None else self.reference_class

    def spec(self, d_sae: int, k: int | None = None, seed: int = 0, **options: Any) -> SAESpec:
        """The validated spec of one SAE; ``k`` is ignored by architectures without one."""
        check_int("d_sae", d_sae, 1)
        if self.uses_k:
            check_int("k", k, 1, d_sae, f" (at most d_sae={d_sae})")
        else:
            k = None
        extra = self.options(d_sae, k, **options)
        return SAESpec(self.name, d_sae, k, seed, tuple(extra.items()))

    def problem(self, d_sae: int, k: int | None = None, **options: Any) -> str | None:
        """Why ``spec(d_sae, k, **options)`` would fail, or None: for grids that skip such cells."""
        try:
            self.spec(d_sae, k, **options)
        except ValueError as err:
            return str(err)
        return None


RECIPES: dict[str, Recipe] = {}


def names() -> list[str]:
    return sorted(RECIPES)


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown SAE architecture {name!r}; valid: {names()}")
    return RECIPES[name]


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def _guarded(registry: dict, register_fn: Callable, name: str, classes: tuple[type, type]) -> None:
    """Register with SAELens once. SAELens refuses a second registration; re-importing a module
    (a notebook re-running its cells, autoreload) re-creates the same classes, which replace the
    old ones. A different class under a taken name is an error."""
    current = registry.get(name)
    if current is not None:
        if not all(_same_class(c, e) for c, e in zip(current, classes)):
            raise ValueError(
                f"SAELens architecture {name!r} is already registered to {current[0].__name__}, "
                f"not to {classes[0].__name__} from {classes[0].__module__}"
            )
        if all(c is e for c, e in zip(current, classes)):
            return
        del registry[name]  # the same classes, re-created by a module reload
    register_fn(name, *classes)


def register(
    recipe: Recipe | None = None,
    training: Mapping[str, tuple[type, type]] | None = None,
    inference: Mapping[str, tuple[type, type]] | None = None,
) -> None:
    """Register a recipe and the SAELens classes it needs (idempotent)."""
    for name, classes in (training or {}).items():
        _guarded(SAE_TRAINING_CLASS_REGISTRY, register_sae_training_class, name, classes)
    for name, classes in (inference or {}).items():
        _guarded(SAE_CLASS_REGISTRY, register_sae_class, name, classes)
    if recipe is not None:
        for cls in (recipe.training_class, recipe.reference_class):
            if cls is not None and cls not in SAE_TRAINING_CLASS_REGISTRY:
                raise ValueError(f"recipe {recipe.name!r} names training class {cls!r}, which SAELens does not know")
        RECIPES[recipe.name] = recipe
