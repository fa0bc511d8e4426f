"""The `study03:` section of a profile (`Study03Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Study03Config:
    """HierarchicalTopK against per-k TopK SAEs (notebook 03)."""

    layer: int = 2
    ks: tuple[int, ...] = (8, 16, 32, 64)
    """The sparsity grid, sorted ascending; the HierarchicalTopK SAE is trained at K = max(ks)."""
    expansion_factor: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    """Every model of the grid is trained once per seed; numbers are reported as mean ± sd over them."""
    train_tokens: int = 1_048_576
    """Training tokens of every SAE in this study (all see the same activations and budget)."""
    lr: float | None = None
    """Adam learning rate of every SAE of this study, its ladder included (None: sae.lr). On
    SmolLM2 sae.lr = 4e-4 is far below what this batch (4,096) and budget need: study 1's sweep at
    the same layer and width (TopK, k = 32, 524k tokens) gave held-out EV 0.56 at 4e-4 and 0.94 at
    3.2e-3, so the smollm2 profile sets study 1's chosen rate here."""
    budget_sweep: tuple[int, ...] = ()
    """Token budgets of the training-length sweep (TopK per k and HierarchicalTopK, first seed):
    does HierarchicalTopK reach the TopK front when trained longer? () skips it. The
    `convergence` profile runs it and writes figures/convergence/03_budget_sweep.csv, which the
    default profile's notebook reads (the same model)."""
    convergence_tokens: tuple[int, ...] = ()
    """Rungs of study 3's token-budget ladder (tokens per SAE, strictly increasing multiples of
    activations.batch_size; doublings, so the convergence gate reads the last doubling). () skips
    it. Per seed of `convergence_seeds`, one warmup-stable-decay run (`sae_studies.ladder`) of TopK
    at each k of `ks` and of HierarchicalTopK at K = max(ks): about (1 + ladder_decay_fraction) ×
    the top rung's tokens per ladder. The `convergence` profile runs it and writes
    figures/convergence/03_ladder.csv, which the default notebook reads to gate the Pareto verdict
    on the gap ΔEV = hierarchical@k − TopK@k at `train_tokens` (so include rungs up to it)."""
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the ladder (at least 2: the gate compares the last doubling with the seed spread)."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0), in (0, 1)."""
    baselines: tuple[str, ...] = ("topk", "batchtopk", "multi_topk", "matryoshka_batchtopk")
    """Architectures trained separately at each k of the grid."""
    reduced_baselines: tuple[str, ...] = ("matryoshka_batchtopk",)
    """Baselines trained only at `reduced_ks`: Matryoshka trains on SAELens' dense path, several
    times slower per token on a CPU than the sparse TopK family. () trains every baseline at every k."""
    reduced_ks: tuple[int, ...] = (16, 64)
    matryoshka_fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    """Matryoshka prefix widths as fractions of the dictionary size."""
    n_ce_tokens: int = 16_384
    """Validation tokens used for CE loss / loss recovered (reconstruction uses all eval tokens)."""
    n_top: int = 32
    """Top activations per latent for the token-entropy proxy."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default); see Study01Config.threads."""
