"""The study sections of a profile: one frozen dataclass per notebook (00-06), every field with
the meaning and unit a researcher changes it by. `config.Profile` holds one of each; a profile
file sets them under `study00:` … `study06:`.
"""

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
    """The ladder's learning-rate warm-up in tokens (None: 5 % of its first rung). An ordinary run
    warms up over 5 % of its own length (5 % of the top rung reproduces it bit for bit). Default
    model, layer 2, TopK 8×, 1M tokens, lr 2e-3, 3 seeds: the same EV either way; live fraction
    stable 0.012 vs 0.016 (sd 0.001) in float32, 0.0149 vs 0.0149 (sd 0.004 / 0.0025) in bfloat16."""
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
    1; smoke LM forward passes 3× slower). Set None on a machine of your own."""


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


@dataclass(frozen=True)
class Study02Config:
    """Synthetic low-rank model of seed dependence (notebook 02).

    Activations come from `analyses.synthetic.LowRankSpec` (isolated unit features plus groups of
    features that live in rank-r subspaces with no preferred basis), materialised through the
    store and trained on through `train.train_sae`, exactly like harvested LM activations. No
    language model is loaded. The main model is trained for every architecture × seed; the
    sweeps (rank × directions, dictionary size) use `sweep_architecture` and `sweep_seeds`.
    """

    d: int = 48
    """Dimension of the synthetic activations."""
    n_isolated: int = 8
    """Isolated features: fixed unit directions, each its own 1-d subspace."""
    n_groups: int = 3
    """Low-rank groups; each spans a rank-dimensional subspace."""
    rank: int = 8
    """r, the dimension of each group's subspace (1..d-1) in the main model."""
    directions: int | None = None
    """k directions per group spread evenly on the subspace's sphere (k ≥ rank), or None: the
    continuous, rotation-invariant variant (directions uniform on the sphere)."""
    p_isolated: float = 0.05
    """Firing probability of each isolated feature per row, in [0, 1]."""
    p_group: float = 0.1
    """Firing probability of each group per row (one point in its subspace when it fires), in [0, 1]."""
    magnitude_mean: float = 1.0
    """Mean firing magnitude (> 0); magnitudes are max(0, N(mean, std²))."""
    magnitude_std: float = 0.25
    noise_std: float = 0.02
    """Isotropic Gaussian noise added to every row, per dimension."""
    layout: str = "orthogonal"
    """`orthogonal`: all isolated directions and group subspaces mutually orthogonal (needs
    n_isolated + n_groups × rank ≤ d); `random`: drawn independently (superposition)."""
    data_seed: int = 0
    """Seed of the ground truth and of the generated rows (the SAE seeds are separate)."""
    n_rows: int = 262_144
    """Rows materialised for training (SAEs make several passes when train_tokens is larger)."""
    n_eval_rows: int = 16_384
    """Held-out rows (a separate stream) for EV, L0 and firing counts."""
    architectures: tuple[str, ...] = ("topk", "batchtopk", "standard")
    """Architectures of the main model (registry names)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """SAE seeds of the main model (at least 2, distinct)."""
    dict_factor: float = 2.0
    """Dictionary size F = round(dict_factor × (n_isolated + n_groups × rank)), i.e. relative to
    the number of dimensions the ground truth spans; must give F ≥ n_isolated. The phase diagram
    raises each cell's F to at least its number of ground-truth directions (see
    `studies.synthetic.phase_dictionary_size`), so no cell has fewer latents than directions."""
    k: int = 4
    """Active latents per row of the TopK family."""
    train_tokens: int = 1_048_576
    """Training rows per SAE of the main model. Measured on the default model (2 seeds, lr 2e-3):
    held-out EV at 262k / 524k / 1M / 2M rows was TopK 0.83 / 0.86 / 0.88 / 0.87, BatchTopK
    0.91 / 0.97 / 0.985 / 0.985, standard 0.93 / 0.97 / 0.97 / 0.97 (d = 32 pilot; the ladder
    of `convergence_tokens` re-measures it in the notebook): 1M is where every architecture has levelled off."""
    sweep_train_tokens: int = 524_288
    """Training rows per SAE of the sweeps (TopK only; there EV is within ~0.02 of its plateau at
    524k, and the notebook compares the sweep cell equal to the main model with the main model)."""
    batch_size: int = 1024
    """Rows per training step; must divide n_rows."""
    lr: float = 2e-3
    l1_coefficient: float = 1.0
    """L1 coefficient of the standard (ReLU + L1) SAE."""
    convergence_tokens: tuple[int, ...] = (131_072, 262_144, 524_288, 1_048_576, 2_097_152)
    """Rungs of study 2's token-budget ladder (rows per SAE, strictly increasing multiples of
    batch_size; doublings, so the convergence gate reads the last doubling). () skips it. Per
    architecture and seed of `convergence_seeds`, one warmup-stable-decay run
    (`sae_studies.ladder`) of the main model's SAE, about (1 + ladder_decay_fraction) × the top
    rung's rows each; the notebook gates the main model's verdicts on the quantities they read at
    `train_tokens` (so include rungs up to it). Replaces `budgets` (separate runs, one seed)."""
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the ladder (at least 2: the gate compares the last doubling with the seed spread)."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0), in (0, 1)."""
    sweep_architecture: str = "topk"
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every sweep cell (at least 2)."""
    sweep_ranks: tuple[int, ...] = (2, 4, 8)
    """Ranks r of the phase diagram (each needs n_isolated + n_groups × r ≤ d in the orthogonal layout)."""
    sweep_directions: tuple[int | None, ...] = (1, 2, 4, None)
    """Directions per group of the phase diagram as multiples of the rank (k = m × r), None for
    the continuous variant."""
    sweep_dict_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Dictionary sizes of the size sweep, as multiples of the number of ground-truth directions
    n_isolated + n_groups × k of the discrete model with rank `sweep_dict_rank` and
    k = `sweep_dict_directions` × rank."""
    sweep_dict_rank: int = 4
    sweep_dict_directions: int = 4
    tau: float = 0.7
    """Cosine threshold of study 1's stability (a latent is matched in another seed at cos ≥ tau)."""
    recovered_cos: float = 0.9
    """A ground-truth direction counts as recovered by a latent with cosine ≥ this."""
    min_energy: float = 0.5
    """A latent belongs to the ground-truth subspace holding at least this share of its squared norm."""
    min_firings: int = 8
    """Latents firing fewer times on the held-out rows are dead (left out of every class)."""
    subspace_dim: int = 32
    """Cap on the dimension of study 1's class-subspace comparison run on the synthetic SAEs (as
    study01.subspace_dim: the class is compared at the dimension it spans, at most this and d / 2)."""
    n_random_subspaces: int = 32
    """Draws of every random reference (random subspaces, null rotations)."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default)."""


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


@dataclass(frozen=True)
class Study05Config:
    """Cross-layer feature flow and multi-layer steering (notebook 05).

    One SAE per position of a window of consecutive layers (residual after each layer, MLP out,
    attention out, plus the residual entering the window: the embedding when it starts at 0),
    per seed; data-free matching between them, flow graphs, the deactivation test and steering.
    Definitions: `sae_studies.analyses.flow` and `sae_studies.analyses.steering`.
    """

    first_layer: int = 0
    """First layer of the window of consecutive layers (a real model's profile picks a window)."""
    last_layer: int | None = None
    """Last layer of the window, inclusive (None: the model's last layer)."""
    architecture: str = "topk"
    """One architecture for every position (a registered recipe name)."""
    expansion_factor: int = 8
    """Dictionary size F = expansion_factor × d_model at every position."""
    k: int | None = None
    """Active latents per token (None: sae.k of the profile)."""
    seeds: tuple[int, ...] = (0, 1)
    """SAE seeds: every position is trained once per seed; matching and deactivation numbers
    carry their spread over them. Steering uses the first seed's SAEs."""
    train_tokens: int = 262_144
    """Training tokens per SAE (overrides sae.train_tokens): the window has (3·layers + 1) × seeds
    SAEs. TopK 8× at d = 128 trains at ~33k tokens/s on the busy 2-core machine: ~8 s per SAE."""
    batch_size: int = 2048
    """Rows per SAE training step (must divide activations.n_tokens)."""
    lr: float | None = 2e-3
    """Adam learning rate for these SAEs (None: sae.lr); study 1 measured 2e-3 as a good rate for
    runs this short (EV ≈ 0.9 for TopK 8× at 262k tokens on the default model)."""
    convergence_tokens: tuple[int, ...] = ()
    """Rungs of study 5's token-budget ladder (tokens per SAE, strictly increasing multiples of
    `batch_size`; doublings, so the convergence gate reads the last doubling). () skips it. Per
    seed of `convergence_seeds` and residual position of the window, one warmup-stable-decay run
    (`sae_studies.ladder`) of the study's SAE: about (1 + ladder_decay_fraction) × the top rung's
    tokens per ladder, (layers + 1) × seeds ladders. At every rung the persistence share the
    verdict reads (`studies.flow_ladder`); the persistence verdict is gated on it at
    `train_tokens` (so include rungs up to it)."""
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the ladder (at least 2: the gate compares the last doubling with the seed spread)."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0), in (0, 1)."""
    match_k: int = 5
    """Matches kept per feature and source (the general top-k operator; ≥ 5 for the random-top-5
    deactivation baseline). Groups and graphs use the best match unless stated."""
    null_kind: str = "covariance"
    """Null dictionaries for s(P): rows drawn from N(0, Σ_P) with Σ_P the covariance of position
    P's activations ("covariance"), or "clipped" / "isotropic_span" (see seed_stability.NULL_KINDS)."""
    null_quantile: float = 0.99
    """A score is high when it beats this quantile of the null's scores at the same layer and
    source: the layer-wise thresholds of the groups."""
    null_cov_tokens: int = 65_536
    """Training tokens used to estimate each position's covariance for the null."""
    min_firings: int = 8
    """Features firing fewer times on the validation tokens are dead and left out of the groups."""
    n_top_activations: int = 32
    """Top activations per feature for the automatic explanations (graph node labels)."""
    graph_resid_threshold: float = 0.5
    """Flow graphs: a residual link needs a cosine at least this (published default 0.5)."""
    graph_module_threshold: float = 0.15
    """Flow graphs: an MLP / attention parent needs a cosine at least this (published 0.15)."""
    deactivation_windows: int = 64
    """Validation windows (n_ctx tokens each) the deactivation test searches for firing features."""
    deactivation_features: int = 40
    """Residual features tested per layer and seed (drawn among those that fire in the windows)."""
    deactivation_windows_per_feature: int = 1
    """Windows per feature in which its active tokens are edited and measured."""
    deactivation_r: float = 0.0
    """Rescaling of the predecessor's contribution, h ← h + (r − 1)·a·u (0 removes it)."""
    steer_layer: int | None = None
    """Layer whose residual SAE gives the theme seed features (None: the middle of the window)."""
    themes: tuple[str, ...] = ("fortunes", "limerick", "murphy", "startrek", "zippy")
    """Corpus categories used as steering themes."""
    judge_ceiling: float = 0.5
    """Steering-toward verdicts judge only themes whose unsteered theme score is at most this: the
    model's own register (the generic `fortunes`) cannot be raised, so it is shown, not judged."""
    seeds_per_theme: int = 3
    """Steering seed features per theme (at least 3: a theme's verdict must not rest on one
    feature), chosen by `studies.flow.pick_seed_features`: most enriched first, non-token
    features preferred, drawn in turn from `seed_feature_sae_seeds` SAE seeds."""
    seed_feature_sae_seeds: int = 2
    """SAE seeds the steering seed features come from (at least 2 where `seeds` has 2)."""
    max_token_share: float = 0.5
    """A latent whose top activations fall on one token this often (or more) is a token feature
    (e.g. ':' or a digit); such features are used as steering seeds only when too few others are
    enriched for the theme."""
    enrichment_tokens: int = 262_144
    """Training tokens over which theme enrichment (standardised mean difference) is measured."""
    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    """Steering strengths s > 0, in units of the median residual norm at the steered layer."""
    schedules: tuple[str, ...] = ("constant", "exponential", "linear")
    """Multi-layer schedules over the flow chain's layers."""
    alpha: float = -0.05
    """Exponential schedule s·e^{α(l − l_seed)} (published α = −0.05)."""
    linear_end: float = 0.25
    """Linear schedule: from s at the chain's first layer to s·linear_end at its last."""
    removal_scales: tuple[float, ...] = (-0.5, -1.0)
    """Negative strengths for steering away from a theme (besides removal of the feature)."""
    prompts: tuple[str, ...] = ("I think", "The", "You", "It is", "My", "When the", "There is", "All")
    """Neutral prompts for steering toward a theme (the paper's is "I think ")."""
    removal_prompts: int = 8
    """Prompts per theme for steering away: the first words of validation entries of the theme."""
    removal_prompt_words: int = 3
    """Words of a validation entry used as a removal prompt."""
    samples_per_prompt: int = 4
    """Sampled continuations per prompt and condition (error bars are over prompts × samples)."""
    max_new_tokens: int = 36
    """New tokens per generation (published 36)."""
    temperature: float = 1.27
    """Sampling temperature (published 1.27)."""
    top_p: float = 0.7
    """Nucleus sampling mass (published 0.7)."""
    generation_batch_size: int = 64
    """Generations sampled together (different conditions share a batch)."""
    generation_seed: int = 0
    classifier_entries: int | None = None
    """Training entries the theme classifier is fitted on (None: all; else a seeded random subset)."""
    classifier_max_features: int = 50_000
    """TF-IDF vocabulary of the theme classifier."""
    classifier_c: float = 4.0
    """Inverse regularisation of the theme classifier's logistic regression."""
    repetition_n: int = 2
    """n of the repeated-n-gram share."""
    anchor_windows: int = 32
    """Validation windows that fix the coherence scale (real text = 1, shuffled tokens = 0)."""
    n_shown_samples: int = 3
    """Steered samples printed per theme."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default); 1 on the busy 2-core machine."""


@dataclass(frozen=True)
class Study06Config:
    """Every architecture side by side (notebook 06; logic in `studies/architectures.py`).

    Every SAE reads the residual stream after block `layer`, has the same dictionary size
    F = `expansion_factor` × d_model, sees the same `train_tokens` tokens and trains through
    `train.train_sae`, once per seed. TopK-family SAEs run at `k` active latents; HierarchicalTopK
    is trained at K = max(`hierarchical_ks`) and read at each of its k (its top-k prefix); the
    standard ReLU SAE's L1 coefficient is chosen from `l1_coefficients` (first seed) as the one
    whose measured L0 is nearest `k` (in log ratio), then trained on every seed at it.
    """

    layer: int = 2
    """Residual-stream layer (blocks.{layer}.hook_resid_post) every SAE of the study reads."""
    expansion_factor: int = 8
    """Dictionary size F = expansion_factor × d_model, equal for every architecture."""
    k: int = 32
    """The matched L0: active latents per token of TopK, KronSAE and the BatchTopK family (mean
    per token), HierarchicalTopK's headline read, and the standard SAE's L0 target."""
    architectures: tuple[str, ...] = ("topk", "batchtopk", "matryoshka_batchtopk", "hierarchical_topk", "kron", "standard")
    """Registered architectures of the table (`saes.registry.names()`); must include topk (the
    reference of the stability rule)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds per architecture (≥ 2; the issue asks ≥ 5 on the committed model profiles)."""
    train_tokens: int = 262_144
    """Training tokens per SAE (equal for every architecture). Measured in study 1 on the default
    model: TopK 8× trains at about 33k tokens/s on the sparse path (8 s per SAE at 262k)."""
    batch_size: int = 2048
    """Rows per SAE training step (must divide activations.n_tokens)."""
    lr: float | None = 2e-3
    """Adam learning rate of every SAE of this study (None: sae.lr); study 1's choice for short runs."""
    standard_lr: float | None = None
    """Adam learning rate of the standard ReLU SAE, its L1 search included (None: `lr`). Adam's
    step is about lr whatever the L1 coefficient, so in a short run a low rate buys its L0 with
    explained variance: on SmolLM2 at 524k tokens (128 steps), held-out L0 / EV at lr 4e-4 for
    coefficients 2 / 5 / 10 / 40 / 160: 411 / 242 / 231 / 74 / 43 L0 at EV 0.88 / 0.82 / 0.75 /
    0.66 / 0.49; at 4e-3 for 5 / 20 / 80 / 320: L0 48 / 22 / 15 / 0.2 at EV 0.88 / 0.68 / 0.62 / 0.15."""
    matryoshka_prefixes: tuple[float, ...] = (0.125, 0.25, 0.5)
    """Matryoshka nested prefix widths as fractions of F (F itself is added)."""
    hierarchical_ks: tuple[int, ...] = (8, 16, 32, 64)
    """The k at which HierarchicalTopK is read (sorted; must include k); it is trained at the largest."""
    kron_mn: tuple[int, int] = (2, 4)
    """(m, n) of the KronSAE (m ≤ n, m·n divides F); heads h = F / (m·n)."""
    l1_coefficients: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    """Candidate L1 coefficients of the standard SAE (sorted); the one whose L0 (first seed, held-out
    tokens) is nearest k is used for every seed."""
    tau: float = 0.7
    """Cosine threshold of study 1's stability score and of within-seed duplicates."""
    min_firings: int = 8
    """Latents firing fewer times on held-out tokens are dead (left out of the live stable share)."""
    duplicate_cosine: float = 0.9
    """A latent is a within-seed duplicate when another latent of the same dictionary has decoder
    cosine ≥ this with it: a near copy. Not tau: in a small d (smoke: d = 32, F = 128) healthy TopK
    dictionaries hold many pairs above 0.7 (measured: 0.63 of latents), so tau flags every one."""
    collapse_duplicate_share: float = 0.5
    """An architecture whose mean within-seed duplicate share (see duplicate_cosine) exceeds this,
    or whose dead share does, counts as collapsed: its
    stability is reported as "untested" (a collapsed dictionary matches across seeds for the
    wrong reason)."""
    n_ce_tokens: int = 8_192
    """Validation tokens (a multiple of lm.n_ctx) for loss recovered with the SAE spliced in."""
    probe_ks: tuple[int, ...] = (1, 2, 5)
    """Sparse probing: latents kept per probe (SAEBench's k_values), chosen by the largest
    difference of class means on the training split."""
    probe_min_tokens: int = 8
    """Sparse probing: a text is a run of at least this many consecutive held-out tokens of one
    corpus category inside a context window; its SAE code is the mean over the run."""
    probe_max_texts: int = 2_000
    """Sparse probing: at most this many texts per class (positives; as many negatives drawn)."""
    probe_test_fraction: float = 0.2
    """Share of texts held out to score each probe (SAEBench: 4,000 train / 1,000 test)."""
    absorption_max_occurrences: int = 8
    """Absorption: held-out occurrences per vocabulary word used as examples."""
    absorption_max_k: int = 3
    """Absorption: at most this many main latents per letter (SAEBench's k-sparse probing, max_k)."""
    absorption_f1_jump: float = 0.03
    """Absorption: a further main latent is kept only when it raises the letter's F1 by this
    much (SAEBench's f1_jump_threshold)."""
    absorption_min_probe_f1: float = 0.6
    """Absorption: letters whose LM probe F1 is below this are left out (SAEBench's min_GT_probe_f1)."""
    absorption_min_words: int = 5
    """Absorption: letters with fewer test words than this are left out."""
    handle_subspace_cosine: float = 0.5
    """Steering handles (`studies/architectures_steering.py`): the unstable subspace handle averages
    the unstable pick's decoder row with every live unstable latent of every study-5 seed whose
    decoder row has cosine ≥ this with it (flow graphs' residual threshold, 0.5)."""
    handle_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Steering handles: strengths s (× the median residual norm at study 5's steering layer, as
    study 5's constant single-layer schedule) at which every handle is steered; a handle's score is
    its mean combined score over these strengths, prompts and samples."""
    convergence_tokens: tuple[int, ...] = ()
    """Rungs of study 6's token-budget ladder (tokens per SAE, strictly increasing doublings; ()
    skips it). Per architecture of `convergence_architectures` and seed of `convergence_seeds`,
    one warmup-stable-decay run (`sae_studies.ladder`, at the study's F, k, rate and batch); the
    stability verdict on each candidate is read at the top rung and gated on its gap to TopK over
    the whole ladder (`studies/architectures_ladder.py`). About (1 + ladder_decay_fraction) × the
    top rung's tokens per ladder."""
    convergence_lrs: tuple[float, ...] = ()
    """Learning-rate check of the study's one rate `lr` (() skips it): per architecture of
    `convergence_architectures`, the first ladder seed's ladder up to the largest rung ≤
    `train_tokens` at each rate, held-out EV at that rung (HierarchicalTopK read at `k`), the grid
    widened by factors of 2 while the best sits at its edge. It reports each architecture's best
    rate and the EV the study's rate gives up; it does not change the rate."""
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every ladder (≥ 2: stability and the gate's seed spread need them)."""
    convergence_architectures: tuple[str, ...] = ("topk", "hierarchical_topk", "kron")
    """Architectures on the ladder: TopK (the gap's reference) and the stability rule's candidates
    (HierarchicalTopK is read at `k`); not the standard SAE (its L1 coefficient is the table's)."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0)."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default); see Study01Config.threads."""
