"""The `study04:` section of a profile (`Study04Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Study04Config:
    """KronSAE against TopK (notebook 04; logic in `studies/kron.py`).

    Every SAE reads the residual stream after block `layer` and trains through `train.train_sae`
    on the sparse path with `k` active latents: TopK and KronSAE `main_mn` at each of
    `expansion_factors` × `seeds` (equal tokens, and KronSAE again at TopK's training FLOPs);
    the (m, n) sweep at `sweep_expansion_factor` × `sweep_seeds`; the composition ablation at
    `sweep_expansion_factor` × `seeds`; and a budget curve (`convergence_multiples`, first seed).
    Nothing here depends on the model: a profile for another model (smollm2, a hub model) sets
    `layer` and, if it likes, the sizes. Scaling up on a GPU (the paper: F ∈ 2^15..2^17, ℓ0 = 50,
    lr 8e-4, 125M tokens, batch 8,192): `expansion_factors: [64, 128]` at d = 576 (F = 36,864 and
    73,728; m·n = 8, 16 and 32 divide both), `k: 50`, `lr: 8.0e-4`, `train_tokens: 125000000`,
    `batch_size: 8192`, `convergence_multiples: [0.25, 0.5, 1.0]`, `threads: null`, and timing
    sizes such as `[[576, 36864], [576, 73728]]`.
    """

    layer: int = 2
    """Residual-stream layer (blocks.{layer}.hook_resid_post) every SAE of the study reads."""
    k: int = 32
    """Active latents per token, equal for TopK and KronSAE (the paper: ℓ0 = 50)."""
    expansion_factors: tuple[int, ...] = (4, 8)
    """Dictionary sizes F = factor × d_model of the TopK / KronSAE comparison (≥ 2 sizes)."""
    main_mn: tuple[int, int] = (2, 4)
    """(m, n) of the KronSAE in the comparison and the composition ablation (m ≤ n, m·n | F)."""
    sweep_expansion_factor: int = 8
    """Dictionary size factor of the (m, n) sweep, the composition ablation and the budget curve."""
    sweep_mn: tuple[tuple[int, int], ...] = ((1, 4), (2, 2), (2, 4), (4, 4), (4, 8))
    """(m, n) of the sweep: m = 1 (its encoder is wider than TopK's, (1+n)/n), m = n, and the
    paper's settings; must include main_mn."""
    compositions: tuple[str, ...] = ("mand", "relu_product", "product")
    """Compositions of the ablation: mand = sqrt(u v) if both > 0 else 0; relu_product =
    ReLU(u)·ReLU(v); product = u·v of the raw pre-activations (ranked by value)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the comparison and the ablation (≥ 2; error bars are the spread over them)."""
    sweep_seeds: tuple[int, ...] = (0, 1)
    """Seeds of the (m, n) sweep (a subset of seeds)."""
    train_tokens: int = 131_072
    """Token budget of every SAE at equal tokens (the FLOP-matched KronSAE gets more, the budget
    curve multiples of it). Measured on the default model: the budget curve shows how far from
    levelled off this is; notebook 04 prints the gain of the last doubling."""
    batch_size: int = 1024
    """Rows per training step (must divide activations.n_tokens); 1024 gives 128 steps at the
    default budget, twice sae.dead_feature_window, so AuxK acts in the second half."""
    lr: float | None = 2e-3
    """Adam learning rate of this study's SAEs (None: sae.lr). Short runs need more than the
    profile's 8e-4 (see Study01Config.lr); equal for both architectures."""
    convergence_multiples: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    """Budget multiples of the EV-vs-tokens curve (must include 1.0)."""
    convergence_tokens: tuple[int, ...] = ()
    """Rungs of study 4's token-budget ladder (tokens per SAE, strictly increasing multiples of
    `batch_size`; doublings, so the convergence gate reads the last doubling). () skips it. Per
    seed of `convergence_seeds`, one warmup-stable-decay run (`sae_studies.ladder`) of TopK and one
    of KronSAE `main_mn` (mAND) at `sweep_expansion_factor`, with the study's k and lr: about
    (1 + ladder_decay_fraction) × the top rung's tokens per ladder. The `convergence` profile runs
    it and writes figures/convergence/04_ladder.csv, which the default notebook reads (the smollm2
    profile runs its own) to gate the equal-tokens verdict on the paired gap EV(KronSAE) − EV(TopK) at `train_tokens` (so include
    rungs up to it)."""
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the ladder (at least 2: the gate compares the last doubling with the seed spread)."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0), in (0, 1)."""
    n_ce_tokens: int = 8_192
    """Validation tokens (a multiple of lm.n_ctx) for loss recovered with the SAE spliced in."""
    n_top: int = 32
    """Top activations per latent for the token-entropy proxy."""
    min_firings: int = 16
    """Latents with fewer top activations than this get no token entropy."""
    timing_sizes: tuple[tuple[int, int], ...] = ((128, 1024), (128, 4096), (256, 4096), (256, 16384))
    """(d, F) at which the notebook times encoder forward + backward of TopK and each KronSAE
    of timing_mn on random inputs (seconds; bench/bench_kron.py holds the large sizes)."""
    timing_mn: tuple[tuple[int, int], ...] = ((2, 4), (4, 4), (4, 8))
    timing_batch: int = 1024
    timing_repeats: int = 5
    """Timed rounds (every architecture once per round, median reported), after one warm-up."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default); 1 on the shared 2-core machine
    (see Study01Config.threads)."""
