"""The `study02:` section of a profile (`Study02Config`): every field with its meaning, unit and
measured rationale."""

from __future__ import annotations

from dataclasses import dataclass


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
