"""Train SAELens SAEs on harvested activations through `SAETrainer`, cached per parameters.

An SAE is fixed by its architecture, dictionary size, sparsity, seed, the training settings of
the profile (`SAEConfig`) and the activations it reads; that set is its artifact key. The seed
sets the initialisation and the data order only; the activations are shared.

TopK-family SAEs train on the repository's sparse path (`sae_studies.saes`) unless
`sae.fast` is False; either way they are saved with `save_inference_model` in SAELens format and
loaded back with `SAE.load_from_disk`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, get_sae_training_class
from sae_lens.training.sae_trainer import SAETrainer

from . import saes as _saes  # registers the repository's architectures with SAELens
from .activations import ActivationSet
from .config import SAEConfig
from .store import Artifact, Store

BUILTIN = ("topk", "batchtopk", "standard", "jumprelu", "matryoshka_batchtopk")
TOPK_FAMILY_FIELDS = ("k", "aux_loss_coefficient")


def architectures() -> list[str]:
    """Every architecture name `train_sae` accepts."""
    return sorted(SAE_TRAINING_CLASS_REGISTRY)


@dataclasses.dataclass(frozen=True)
class SAESpec:
    """What makes one SAE, beyond the activations it is trained on."""

    architecture: str
    d_sae: int
    k: int | None = None
    """Active latents per token for the TopK family (mean per token for BatchTopK)."""
    seed: int = 0
    extra: tuple[tuple[str, Any], ...] = ()
    """Architecture-specific config fields, e.g. (("matryoshka_widths", [256, 1024]),)."""

    def __post_init__(self) -> None:
        if self.architecture not in SAE_TRAINING_CLASS_REGISTRY:
            raise ValueError(f"unknown SAE architecture {self.architecture!r}; valid: {architectures()}")
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be positive, got {self.d_sae}")
        needs_k = "k" in {f.name for f in dataclasses.fields(get_sae_training_class(self.architecture)[1])}
        if needs_k and (self.k is None or self.k < 1):
            raise ValueError(f"architecture {self.architecture!r} needs k ≥ 1, got {self.k}")

    def with_seed(self, seed: int) -> "SAESpec":
        return dataclasses.replace(self, seed=seed)


def training_class_name(spec: SAESpec, sae_cfg: SAEConfig) -> str:
    """The registered training class: the sparse fast path for the TopK family unless disabled."""
    if sae_cfg.fast:
        return _saes.FAST_TRAINING_ARCHITECTURES.get(spec.architecture, spec.architecture)
    return spec.architecture


def build_training_sae(spec: SAESpec, d_in: int, sae_cfg: SAEConfig, steps: int, data_mean: torch.Tensor | None = None):
    """A freshly initialised SAELens training SAE for `spec` (seeded).

    `data_mean` (in the SAE's normalised input space) initialises the decoder bias: SAELens 6
    starts it at zero, which costs a short run most of its steps on learning the mean of a
    residual stream. Gao et al. start it at the geometric median; the mean is the usual stand-in.
    """
    sae_cls, cfg_cls = get_sae_training_class(training_class_name(spec, sae_cfg))
    values: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": spec.d_sae,
        "k": spec.k,
        "dtype": "float32",
        "device": sae_cfg.device,
        "normalize_activations": "expected_average_only_in",
        "aux_loss_coefficient": sae_cfg.aux_loss_coefficient,
        "l1_coefficient": sae_cfg.l1_coefficient,
        "l1_warm_up_steps": steps // 20,
        "l0_coefficient": sae_cfg.jumprelu_sparsity_coefficient,
        "l0_warm_up_steps": steps // 20,
        **dict(spec.extra),
    }
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(dict(spec.extra)) - fields
    if unknown:
        raise ValueError(f"{spec.architecture}: unknown config field(s) {sorted(unknown)}; valid: {sorted(fields)}")
    torch.manual_seed(spec.seed)
    sae = sae_cls(cfg_cls(**{k: v for k, v in values.items() if k in fields}))
    if data_mean is not None:
        with torch.no_grad():
            sae.b_dec.copy_(data_mean)
    return sae


def normalised_mean(acts: ActivationSet, n_rows: int = 65_536) -> torch.Tensor:
    """Mean of the activations after SAELens' `expected_average_only_in` scaling, which maps the
    mean norm to sqrt(d): the scale the training SAE sees."""
    x = acts.tensor(min(n_rows, len(acts))).double()
    scale = acts.d**0.5 / x.norm(dim=-1).mean()
    return (x.mean(0) * scale).float()


def has_topk_threshold(architecture: str) -> bool:
    """BatchTopK family: trained with a global top-k threshold that becomes a JumpReLU threshold."""
    return "topk_threshold_lr" in {f.name for f in dataclasses.fields(get_sae_training_class(architecture)[1])}


@torch.no_grad()
def debias_topk_threshold(sae, n_updates: int) -> None:
    """Divide a BatchTopK training SAE's threshold EMA (started at 0) by 1 − (1 − lr)^n_updates,
    so it estimates the batch threshold itself rather than a share of it (see SAEConfig)."""
    if n_updates < 1:
        raise ValueError(f"n_updates must be ≥ 1, got {n_updates}")
    sae.topk_threshold = sae.topk_threshold / (1 - (1 - sae.cfg.topk_threshold_lr) ** n_updates)


def artifact_params(spec: SAESpec, acts: ActivationSet, sae_cfg: SAEConfig, batch_size: int) -> dict[str, Any]:
    cfg = dataclasses.asdict(sae_cfg)
    cfg.pop("expansion_factor")  # d_sae is in the spec
    cfg.pop("k")
    if not has_topk_threshold(spec.architecture):
        cfg.pop("debias_batchtopk_threshold")  # no effect on them: their cached artifacts stay valid
    return {"spec": dataclasses.asdict(spec), "activations": acts.key, "training": cfg, "batch_size": batch_size}


def train_sae(
    acts: ActivationSet, spec: SAESpec, sae_cfg: SAEConfig, store: Store, batch_size: int = 4096
) -> tuple[SAE, Artifact]:
    """Train (or load from the cache) one SAE on `acts`; return the inference SAE and its artifact."""
    steps = sae_cfg.train_tokens // batch_size
    if steps < 1:
        raise ValueError(f"sae.train_tokens ({sae_cfg.train_tokens}) is smaller than one batch ({batch_size})")
    data = acts.batches(batch_size, seed=spec.seed)  # fails early if batch_size does not divide

    def build(tmp: Path) -> dict:
        sae = build_training_sae(spec, acts.d, sae_cfg, steps, data_mean=normalised_mean(acts))
        trainer_cfg = SAETrainerConfig(
            total_training_samples=steps * batch_size,
            train_batch_size_samples=batch_size,
            lr=sae_cfg.lr,
            lr_end=sae_cfg.lr / 10,
            lr_warm_up_steps=int(steps * sae_cfg.lr_warm_up_fraction),
            lr_decay_steps=int(steps * sae_cfg.lr_decay_fraction),
            device=sae_cfg.device,
            dead_feature_window=sae_cfg.dead_feature_window,
            feature_sampling_window=max(1, steps),
            n_batches_for_norm_estimate=min(20, steps),
        )
        trainer = SAETrainer(trainer_cfg, sae, data_provider=data)
        start = time.time()
        trainer.fit()
        seconds = time.time() - start
        if sae_cfg.debias_batchtopk_threshold and has_topk_threshold(training_class_name(spec, sae_cfg)):
            debias_topk_threshold(sae, steps)  # one threshold update per training step
        sae.cfg.metadata.hook_name = acts.hook
        sae.save_inference_model(tmp)
        summary = {
            "train_seconds": round(seconds, 2),
            "tokens_per_second": round(steps * batch_size / seconds),
            "training_class": training_class_name(spec, sae_cfg),
            "train_l0": sae.cfg.metadata.l0,
            "dead_at_end": sae.cfg.metadata.num_dead_features,
        }
        (tmp / "training.json").write_text(json.dumps(summary, indent=1))
        return summary

    art = store.get_or_build("sae", artifact_params(spec, acts, sae_cfg, batch_size), build)
    return load_sae(art.path, sae_cfg.device), art


def load_sae(path: Path, device: str = "cpu") -> SAE:
    sae = SAE.load_from_disk(str(path), device=device)
    sae.eval()
    return sae


def train_seeds(
    acts: ActivationSet, spec: SAESpec, seeds: Sequence[int], sae_cfg: SAEConfig, store: Store, batch_size: int = 4096
) -> list[SAE]:
    """One SAE per seed, identical but for the seed."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    return [train_sae(acts, spec.with_seed(s), sae_cfg, store, batch_size)[0] for s in seeds]
