"""Profiles: every parameter a study uses, typed and documented, loaded from `configs/*.yaml`.

A profile file holds only the values that differ from the defaults declared here. A notebook
calls `load_profile(profile, overrides)`; overrides use dotted names (`{"lm.d_model": 256}`).
Unknown profile names, section names and field names fail with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EMBEDDED_MODEL = "embedded"


def repo_root() -> Path:
    """The checkout this package lives in (editable install), else the working directory."""
    env = os.environ.get("SAE_STUDIES_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists() and (here / "configs").is_dir():
        return here
    return Path.cwd().resolve()


@dataclass(frozen=True)
class CorpusConfig:
    source: str = "fortunes"
    """`fortunes` (the embedded corpus) or `hf:<dataset name>` for a HF dataset (hub profiles)."""
    hf_split: str = "train"
    hf_text_column: str = "text"
    hf_n_texts: int = 200_000
    """How many texts to stream from a HF dataset."""
    val_fraction: float = 0.05
    """Share of entries held out for validation, chosen by a hash of their text (fixed split)."""
    vocab_size: int = 2048
    """Byte-level BPE vocabulary trained on the corpus (embedded model only)."""


@dataclass(frozen=True)
class LMConfig:
    name: str = EMBEDDED_MODEL
    """`embedded` trains the repository's own model; any other name goes to
    `HookedTransformer.from_pretrained` (gpt2, pythia-70m-deduped, gemma-2-2b, ...)."""
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 128
    """Context length, used for training and for harvesting activations."""
    train_epochs: float = 2.0
    """Passes over the training token stream."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"


@dataclass(frozen=True)
class ActivationConfig:
    n_tokens: int = 1_048_576
    """Tokens harvested per hook (from the training split)."""
    n_eval_tokens: int = 65_536
    """Tokens harvested per hook from the validation split, for metrics."""
    batch_size: int = 4096
    """Rows per batch streamed to SAE training; must divide n_tokens."""


@dataclass(frozen=True)
class SAEConfig:
    expansion_factor: int = 8
    """Dictionary size F = expansion_factor × d_in."""
    k: int = 32
    train_tokens: int = 1_048_576
    """Tokens seen in training (several passes over the harvested store if larger)."""
    lr: float = 8e-4
    """Adam learning rate. Gao et al.'s scaling rule 2e-4 / sqrt(F / 2^14) gives 8e-4 at F = 1,024."""
    lr_warm_up_fraction: float = 0.05
    lr_decay_fraction: float = 0.2
    aux_loss_coefficient: float = 1 / 32
    l1_coefficient: float = 1.0
    """Sparsity coefficient for the standard (ReLU + L1) SAE."""
    jumprelu_sparsity_coefficient: float = 0.5
    dead_feature_window: int = 64
    """Steps without firing after which a latent counts as dead (AuxK input); at the default
    budget (256 steps of 4,096 tokens) that is a quarter of the run."""
    fast: bool = True
    """Train TopK-family SAEs on the repository's sparse path (False: SAELens' dense path)."""
    debias_batchtopk_threshold: bool = True
    """BatchTopK's inference threshold is SAELens' EMA (rate `topk_threshold_lr` = 0.01) of each
    batch's smallest selected activation, started at 0, so after n steps it holds only
    1 − 0.99^n of its target (72 % after 128 steps) and the exported JumpReLU fires ~2k latents
    per token on short runs. True divides it by that factor at the end of training (Adam's bias
    correction); False keeps SAELens' value. Only BatchTopK-family SAEs depend on it."""
    device: str = "cpu"


@dataclass(frozen=True)
class Study00Config:
    layer: int = 2
    """Residual stream layer used for the first SAE sanity check."""
    ks: tuple[int, ...] = (8, 16, 32, 64)
    n_samples: int = 4
    """Prompts used to show generations."""


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
    subspace_dim: int = 16
    """Dimension of the subspaces compared across seeds (top singular directions of a group)."""
    n_random_subspaces: int = 8
    """Draws averaged for the random and covariance-drawn reference subspaces."""
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
    seed: int = 0
    train_tokens: int = 1_048_576
    """Training tokens of every SAE in this study (all see the same activations and budget)."""
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


@dataclass(frozen=True)
class Profile:
    name: str
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    activations: ActivationConfig = field(default_factory=ActivationConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    study00: Study00Config = field(default_factory=Study00Config)
    study01: Study01Config = field(default_factory=Study01Config)
    study03: Study03Config = field(default_factory=Study03Config)

    @property
    def root(self) -> Path:
        return repo_root()

    @property
    def data_dir(self) -> Path:
        """Cached artifacts. Shared by all profiles: artifacts are keyed by their parameters."""
        return Path(os.environ.get("SAE_STUDIES_DATA", self.root / "data"))

    @property
    def figures_dir(self) -> Path:
        """The default profile writes the committed figures; other profiles write to build/."""
        if self.name == "default":
            return self.root / "figures"
        return self.root / "build" / "figures" / self.name

    def with_overrides(self, overrides: dict[str, Any]) -> "Profile":
        return _apply(self, overrides, self.name)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in (repo_root() / "configs").glob("*.yaml"))


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> Profile:
    """Load `configs/<name>.yaml` on top of the defaults, then apply dotted overrides."""
    path = repo_root() / "configs" / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown profile {name!r}; available: {available_profiles()}")
    values = yaml.safe_load(path.read_text()) or {}
    flat = {f"{section}.{key}": v for section, body in values.items() for key, v in body.items()}
    return _apply(Profile(name=name), {**flat, **(overrides or {})}, name)


def _apply(profile: Profile, overrides: dict[str, Any], where: str) -> Profile:
    sections = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile) if f.name != "name"}
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections:
            raise ValueError(f"{where}: unknown section {section!r} in {dotted!r}; valid: {sorted(sections)}")
        valid = {f.name: f for f in dataclasses.fields(sections[section])}
        if key not in valid:
            raise ValueError(f"{where}: unknown parameter {dotted!r}; valid in {section}: {sorted(valid)}")
        if isinstance(getattr(sections[section], key), tuple) and isinstance(value, list):
            value = tuple(value)
        changes.setdefault(section, {})[key] = value
    return dataclasses.replace(
        profile, **{s: dataclasses.replace(sections[s], **kv) for s, kv in changes.items()}
    )


def as_dict(obj: Any) -> dict[str, Any]:
    """A config section as plain data, for artifact keys and manifests."""
    return dataclasses.asdict(obj)
