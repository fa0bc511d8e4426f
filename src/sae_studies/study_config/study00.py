"""The `study00:` section of a profile (`Study00Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Study00Config:
    layer: int = 2
    """Residual stream layer used for the first SAE sanity check."""
    ks: tuple[int, ...] = (8, 16, 32, 64)
    n_samples: int = 4
    """Prompts used to show generations."""
    n_loss_tokens: int = 65_536
    """Validation tokens the model's cross-entropy is measured on."""
    stat_layers: tuple[int, ...] = ()
    """Layers whose activation statistics are shown (() = every layer; a deep model harvests up to
    the deepest one, so pick a few on SmolLM2)."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default); see Study01Config.threads."""
