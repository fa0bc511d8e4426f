"""The `study01:` section of a profile (`Study01Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Study01Config:
    """Feature stability across seeds and its functional asymmetry (notebook 01).

    The grid is seeds × architectures × expansion_factors × layers, every SAE trained with
    `train.train_seeds` on the same harvested activations (the seed changes only the SAE's
    initialisation and data order). Architectures named in `reduced_architectures` (the ones
    that train on SAELens' dense path, several times slower per token on a CPU than the sparse
    TopK family) are trained only at `reduced_expansion_factors`; an empty tuple trains the full
    grid for every architecture (what a GPU profile should do).
    """

    layers: tuple[int, ...] = (1, 3)
    """Residual-stream layers (blocks.{layer}.hook_resid_post) the grid is trained on."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """At least 2 distinct seeds (stability compares each seed with the others)."""
    architectures: tuple[str, ...] = ("topk", "batchtopk", "standard", "matryoshka_batchtopk")
    expansion_factors: tuple[int, ...] = (4, 8, 16)
    """Dictionary sizes F = expansion_factor × d_model."""
    reduced_architectures: tuple[str, ...] = ("standard", "matryoshka_batchtopk")
    """Architectures trained only at `reduced_expansion_factors` (CPU budget); () = full grid."""
    reduced_expansion_factors: tuple[int, ...] = (8,)
    train_tokens: int = 262_144
    """Training tokens per SAE of this study (overrides sae.train_tokens: the grid has
    seeds × architectures × sizes × layers SAEs). Measured on the 2-core reference machine with
    other jobs running: TopK 8× (1,024 latents, d = 128) trains at about 33k tokens/s on the
    sparse path, so 262k tokens cost about 8 s per SAE; the default grid (80 SAEs) about 13 min."""
    batch_size: int = 2048
    """Rows per SAE training step for this study (must divide activations.n_tokens)."""
    lr: float | None = 2e-3
    """Adam learning rate for this study's SAEs (None: sae.lr). Short runs need more than
    sae.lr = 4e-4: on smoke, 16 steps at 4e-4 leave TopK SAEs near their initialisation (EV 0.04:
    stability would measure the initialisation, not the data). Measured on the default model,
    TopK 8×, k = 32, two seeds: 131k tokens EV 0.915 / 0.891 at lr 5e-3 / 2e-3; 524k tokens EV
    0.943 / 0.933 / 0.922 at 5e-3 / 2e-3 / 1e-3 — and the fraction stable at τ = 0.7 falls with
    the rate (0.026 / 0.038 / 0.096): the learning rate is a stability knob, stated in notebook 01."""
    l1_coefficient: float | None = 5.0
    """L1 coefficient of the standard (ReLU + L1) SAE; None uses sae.l1_coefficient. Default
    model, 8×, 262k tokens, lr 2e-3: sae.l1_coefficient = 1 gives L0 ≈ 129 (4× the TopK k = 32);
    5 gives L0 ≈ 38, comparable with the TopK family, so 5 is this study's choice."""
    matryoshka_prefixes: tuple[float, ...] = (0.125, 0.25, 0.5)
    """Matryoshka nested prefix widths as fractions of d_sae (d_sae itself is added); SAELens
    needs strictly increasing positive widths ending at d_sae."""
    tau: float = 0.7
    """Cosine threshold: a feature is matched in another seed if some decoder row there has cosine ≥ tau."""
    tau_sweep: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    analysis_expansion_factor: int = 8
    """Dictionary size of the SAEs used for the functional, surface-form and subspace analyses
    (must be in expansion_factors and, for reduced architectures, in reduced_expansion_factors)."""
    n_ce_tokens: int = 16_384
    """Validation tokens (a multiple of lm.n_ctx) for CE with ablated reconstructions spliced in."""
    n_marginal_features: int = 128
    """Features sampled for single-feature ablation effects on CE (per layer, seed 0 of the
    first architecture); the FVU effect is computed exactly for every feature."""
    n_top_activations: int = 64
    """Top activating tokens per feature used for surface-form statistics and explanations."""
    min_firings: int = 8
    """Features with fewer firings among their top activations get no surface statistics."""
    single_token_share: float = 0.5
    """A feature counts as explained by a single token when at least this share of its top
    activations fall on one token."""
    subspace_dim: int = 4096
    """Largest dimension of the subspaces compared across seeds: a class is compared at the
    dimension its unit decoder rows span (90 %-energy effective rank), at most this and d / 2.
    Large by default, so d / 2 decides: a cap of 32 (before issue 19) compared about the data's
    top principal subspace, which any large set of rows reproduces (no power)."""
    n_random_subspaces: int = 32
    """Draws of every size-matched control and random reference of the subspace analysis
    (random subsets of live latents, covariance-drawn and Haar-random subspaces)."""
    n_random_ablations: int = 16
    """Size-matched random sets of live latents ablated beside the stable class (claim 2: the
    stable class's total FVU / CE effect is read against their 95th percentile); each set costs
    one spliced LM pass over n_ce_tokens."""
    hungarian_max_features: int = 4096
    """Hungarian one-to-one matching is run for dictionaries up to this size."""
    pool_architecture: str = "topk"
    pool_seeds: tuple[int, ...] = (0, 1, 2, 3)
    """Seeds split into disjoint groups of pool_group_size; each group is pooled into one SAE, so
    the groups are independent replicates of the pooled procedure (seeds not in `seeds` are
    trained for this only)."""
    pool_group_size: int = 2
    pool_refit_tokens: int = 131_072
    """Tokens of the encoder refit of a pooled SAE (decoder frozen, see stability.fit_pooled_sae)."""
    convergence_tokens: tuple[int, ...] = ()
    """Rungs of study 1's token-budget ladder (tokens per SAE, strictly increasing; doublings, so
    the convergence gate reads the last doubling). () skips the ladder; the `convergence` profile
    runs it and writes figures/convergence/01_ladder.csv, which the default notebook reads to gate
    its verdicts. Each SAE is one warmup-stable-decay run (`sae_studies.ladder`): about
    (1 + ladder_decay_fraction) × the top rung's tokens for the whole ladder."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0)."""
    ladder_warmup_tokens: int | None = None
    """The ladder's learning-rate warm-up in tokens (None: `ladder.plan`'s default, an ordinary
    run's warm-up at the top rung's length, at most a 1M-token run's: 52,428 tokens, so the ladder's
    1M rung is an ordinary 1M-token run bit for bit). Until 2026-12-07 None meant 5 % of the first
    rung; default model, layer 2, TopK 8×, 1M tokens, 3 seeds, the ladder's 1M rung against an
    ordinary run: the same EV either way; live fraction stable 0.012 vs 0.016 (sd 0.001) in float32
    at lr 2e-3, 0.0149 vs 0.0149 in bfloat16 at 2e-3, 0.0091 vs 0.0150 (sd 0.002) at 8e-3."""
    convergence_lrs: tuple[float, ...] = (1e-3, 2e-3, 4e-3)
    """Learning-rate grid of the ladder's sweep (first seed, at rung `lr_sweep_rung`, chosen by
    held-out EV); widened by factors of 2 while the best rate sits at the grid's edge."""
    lr_sweep_rung: int | None = None
    """Index into convergence_tokens of the rung the learning rate is swept at (None: the one below
    the top, or the only rung)."""
    convergence_architectures: tuple[str, ...] = ("topk", "batchtopk", "standard", "matryoshka_batchtopk")
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every ladder (stability needs ≥ 2; the gate's seed spread needs ≥ 2)."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default, all cores). 1 by default: on the
    busy 2-core reference machine a second thread costs far more than it gives at these sizes
    (measured: TopK 4× SAE training 4.5k tokens/s with 2 threads vs 33k tokens/s for TopK 8× with
    1; smoke LM forward passes 3× slower); `make figures` uses the cores by running notebooks
    side by side instead (its JOBS, 2 by default). Set None on a machine of your own (and JOBS=1)."""
