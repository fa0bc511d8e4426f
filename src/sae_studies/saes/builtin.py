"""Recipes for SAELens' own architectures, used as they are (their dense training path).

* ``standard`` — ReLU + L1 (no k; sparsity from ``sae.l1_coefficient``);
* ``jumprelu`` — per-latent learned thresholds (no k; ``sae.jumprelu_sparsity_coefficient``);
* ``matryoshka_batchtopk`` — nested dictionary prefixes, loss summed over prefixes (option
  ``prefixes``: fractions of the dictionary in (0, 1); the full width is always added).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sae_studies.saes.registry import Recipe, register


def matryoshka_widths(d_sae: int, prefixes: Sequence[float]) -> list[int]:
    """Strictly increasing prefix widths ending at ``d_sae`` from fractions in (0, 1]."""
    prefixes = list(prefixes)
    if not prefixes or any(not 0 < p <= 1 for p in prefixes) or prefixes != sorted(set(prefixes)):
        raise ValueError(f"matryoshka prefixes must be strictly increasing fractions of the dictionary in (0, 1]; got {prefixes}")
    widths = sorted({max(1, int(round(p * d_sae))) for p in prefixes} - {d_sae})
    return widths + [d_sae]


def _matryoshka_options(d_sae: int, k: int | None, prefixes: Sequence[float] = (0.125, 0.25, 0.5)) -> dict[str, Any]:
    return {"matryoshka_widths": matryoshka_widths(d_sae, prefixes)}


register(
    Recipe(
        name="standard",
        training_class="standard",
        uses_k=False,
        summary="ReLU + L1 (SAELens 'standard'); L0 set by sae.l1_coefficient.",
    )
)
register(
    Recipe(
        name="jumprelu",
        training_class="jumprelu",
        uses_k=False,
        summary="JumpReLU (Rajamanoharan et al. 2024): learned per-latent thresholds.",
    )
)
register(
    Recipe(
        name="matryoshka_batchtopk",
        training_class="matryoshka_batchtopk",
        batch_threshold=True,
        options=_matryoshka_options,
        summary="Matryoshka BatchTopK (Bussmann, Nabeshima et al. 2025): nested dictionary prefixes.",
    )
)
