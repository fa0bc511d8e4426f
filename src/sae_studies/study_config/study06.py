"""The `study06:` section of a profile (`Study06Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


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
    `convergence_architectures`, the first ladder seed's ladder up to rung `lr_sweep_rung` at each
    rate, held-out EV at that rung (HierarchicalTopK read at `k`), the grid widened by factors of 2
    while the best sits at its edge. It reports each architecture's best rate and the EV the
    study's rate gives up; it does not change the rate."""
    lr_sweep_rung: int | None = None
    """Index into `convergence_tokens` of the rung the rate is checked at (None: the one below the
    top, where the gate judges the ladder's last doubling, or the only rung; as study 1's)."""
    convergence_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every ladder (≥ 2: stability and the gate's seed spread need them)."""
    convergence_architectures: tuple[str, ...] = ("topk", "hierarchical_topk", "kron")
    """Architectures on the ladder: TopK (the gap's reference) and the stability rule's candidates
    (HierarchicalTopK is read at `k`); not the standard SAE (its L1 coefficient is the table's)."""
    ladder_decay_fraction: float = 0.2
    """Share of each rung's steps spent on its decay branch (learning rate linearly to 0)."""
    threads: int | None = 1
    """torch threads for this notebook (None: torch's default); see Study01Config.threads."""
