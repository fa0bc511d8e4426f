"""The `study05:` section of a profile (`Study05Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


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
