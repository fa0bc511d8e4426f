"""Train SAELens SAEs on harvested activations through `SAETrainer`, cached per parameters.

An SAE is fixed by its architecture, dictionary size, sparsity, seed, the training settings of
the profile (`SAEConfig`) and the activations it reads; that set is its artifact key. The seed
sets the initialisation and the data order only; the activations are shared.

TopK-family SAEs train on the repository's sparse path (`sae_studies.saes`) unless
`sae.fast` is False, in the precision `sae.dtype` resolves to (`sae_studies.precision`: SAETrainer's
bfloat16 autocast around the step, float32 master weights and Adam state); either way they are saved with `save_inference_model` in SAELens format and
loaded back with `SAE.load_from_disk`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.training.sae_trainer import SAETrainer

from . import feed, sweep
from .activations import ActivationSet
from .config import SAEConfig
from .devices import check_device
from .precision import resolve as resolve_precision
from .precision import resolved_name as precision_name
from .saes import registry
from .saes.registry import SAESpec
from .saes.sparse_topk import use_fast_bookkeeping
from .store import Artifact, Store
from .sweep import SAEJob  # a grid's unit of work: notebooks build `train.SAEJob`s for `run.train`

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.train", "sae_studies.saes", "sae_studies.activations", "sae_studies.feed", "sae_studies.precision")

__all__ = ["SAESpec", "SAEJob", "architectures", "sae_params", "train_sae", "train_seeds", "load_sae", "build_training_sae"]


def architectures() -> list[str]:
    """Every architecture name `train_sae` accepts (the registered recipes)."""
    return registry.names()


def training_class_name(spec: SAESpec, sae_cfg: SAEConfig) -> str:
    """The registered training class: the sparse fast path for the TopK family unless disabled."""
    return registry.get(spec.architecture).training_class_for(sae_cfg.fast)


def build_training_sae(
    spec: SAESpec,
    d_in: int,
    sae_cfg: SAEConfig,
    steps: int,
    data_mean: torch.Tensor | None = None,
    coefficient_warm_up_steps: int | None = None,
):
    """A freshly initialised SAELens training SAE for `spec` (seeded).

    The sparsity coefficient (L1 / L0) warms up over `coefficient_warm_up_steps` (default
    steps // 20, the learning-rate warm-up of an ordinary run; a ladder passes its own).

    `data_mean` (in the SAE's normalised input space) initialises the decoder bias: SAELens 6
    starts it at zero, which costs a short run most of its steps on learning the mean of a
    residual stream. Gao et al. start it at the geometric median; the mean is the usual stand-in.
    """
    sae_cls, cfg_cls = get_sae_training_class(training_class_name(spec, sae_cfg))
    warm = steps // 20 if coefficient_warm_up_steps is None else coefficient_warm_up_steps
    values: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": spec.d_sae,
        "k": spec.k,
        "dtype": "float32",
        "device": sae_cfg.device,
        "normalize_activations": "expected_average_only_in",
        "aux_loss_coefficient": sae_cfg.aux_loss_coefficient,
        "l1_coefficient": sae_cfg.l1_coefficient,
        "l1_warm_up_steps": warm,
        "l0_coefficient": sae_cfg.jumprelu_sparsity_coefficient,
        "l0_warm_up_steps": warm,
        **dict(spec.extra),
    }
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(dict(spec.extra)) - fields
    if unknown:
        raise ValueError(f"{spec.architecture}: unknown config field(s) {sorted(unknown)}; valid: {sorted(fields)}")
    torch.manual_seed(spec.seed)
    # the fast path's bookkeeping (COO feature_acts, a reused hidden_pre buffer): set on this
    # instance only, so saved SAEs keep SAELens' defaults
    sae = use_fast_bookkeeping(sae_cls(cfg_cls(**{k: v for k, v in values.items() if k in fields})))
    if data_mean is not None:
        with torch.no_grad():
            sae.b_dec.copy_(data_mean)
    return sae


def input_scale(acts: ActivationSet, n_rows: int = 65_536) -> float:
    """SAELens' `expected_average_only_in` scaling factor sqrt(d) / E‖x‖ (on the first n_rows rows):
    the training SAE sees x · scale, and saving folds 1 / scale back into the inference SAE."""
    x = acts.tensor(min(n_rows, len(acts))).double()
    return float(acts.d**0.5 / x.norm(dim=-1).mean())


def normalised_mean(acts: ActivationSet, n_rows: int = 65_536) -> torch.Tensor:
    """Mean of the activations after SAELens' `expected_average_only_in` scaling, which maps the
    mean norm to sqrt(d): the scale the training SAE sees."""
    x = acts.tensor(min(n_rows, len(acts))).double()
    return (x.mean(0) * input_scale(acts, n_rows)).float()


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
    # the precision this machine resolves `dtype` to, not the name: `auto` on a bfloat16 machine
    # and on one without must not share an SAE. Float32 adds nothing, so float32 SAEs cached
    # before the setting existed keep their keys.
    precision = precision_name(cfg.pop("dtype"), sae_cfg.device)
    if precision != "float32":
        cfg["precision"] = precision
    if not registry.get(spec.architecture).batch_threshold:
        cfg.pop("debias_batchtopk_threshold")  # no effect on them: their cached artifacts stay valid
    for name in ("prefetch", "shuffle_block_rows", "shuffle_window_blocks", "feed_dtype"):
        cfg.pop(name)  # the feed enters only through feed_key, and only when it changes the batches
    fed = feed.feed_key(sae_cfg.shuffle_block_rows, sae_cfg.shuffle_window_blocks, sae_cfg.feed_dtype)
    return {
        "spec": dataclasses.asdict(spec),
        "activations": acts.key,
        "training": cfg,
        "batch_size": batch_size,
        **({"feed": fed} if fed else {}),
    }


def sae_params(
    acts: ActivationSet, spec: SAESpec, sae_cfg: SAEConfig, batch_size: int, key_extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The artifact parameters (hence the store key) of the SAE `train_sae` makes from these
    arguments: what a sweep looks up to skip a job whose SAE exists, without training."""
    params = artifact_params(spec, acts, sae_cfg, batch_size)
    overlap = set(params) & set(key_extra or {})
    if overlap:
        raise ValueError(f"key_extra must not replace the SAE's own key entries {sorted(overlap)}")
    params.update(key_extra or {})
    return params


def train_sae(
    acts: ActivationSet,
    spec: SAESpec,
    sae_cfg: SAEConfig,
    store: Store,
    batch_size: int = 4096,
    *,
    init: Mapping[str, torch.Tensor] | None = None,
    frozen: Sequence[str] = (),
    key_extra: Mapping[str, Any] | None = None,
) -> tuple[SAE, Artifact]:
    """Train (or load from the cache) one SAE on `acts`; return the inference SAE and its artifact.

    `init` overwrites parameters of the freshly initialised training SAE (names as in the training
    SAE, values in its normalised input space, see `input_scale`); `frozen` parameters keep their
    value throughout training; `key_extra` adds entries to the cache key that say where `init`
    came from (e.g. the pooled refit's sources). The pooled refit of study 1 is this with a frozen
    decoder.
    """
    steps = sae_cfg.train_tokens // batch_size
    if steps < 1:
        raise ValueError(f"sae.train_tokens ({sae_cfg.train_tokens}) is smaller than one batch ({batch_size})")
    check_device("sae.device", sae_cfg.device)
    acts.batches(batch_size, seed=spec.seed)  # fails early if batch_size does not divide
    params = sae_params(acts, spec, sae_cfg, batch_size, key_extra)

    def build(tmp: Path) -> dict:
        sae = build_training_sae(spec, acts.d, sae_cfg, steps, data_mean=normalised_mean(acts))
        named = dict(sae.named_parameters())
        unknown = (set(init or {}) | set(frozen)) - set(named)
        if unknown:
            raise ValueError(f"init / frozen name unknown parameters {sorted(unknown)}; valid: {sorted(named)}")
        with torch.no_grad():
            for name, value in (init or {}).items():
                named[name].copy_(value)
        start_values = {name: named[name].detach().clone() for name in frozen}
        for name in frozen:
            named[name].requires_grad_(False)
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
            # SAETrainer wraps each step in torch.autocast(device type, bfloat16): SAELens' dense
            # architectures autocast as they do on a GPU; the sparse path reads the same context
            autocast=resolve_precision(sae_cfg.dtype, sae_cfg.device) == torch.bfloat16,
        )
        data = feed.sae_feed(acts, batch_size, spec.seed, sae_cfg)
        trainer = SAETrainer(trainer_cfg, sae, data_provider=data)
        start = time.time()
        try:
            trainer.fit()
        finally:
            if isinstance(data, feed.Prefetcher):
                data.close()  # stop the reader thread now, not at garbage collection
        seconds = time.time() - start
        # SAETrainer may rescale parameters in place (it folds the input normalisation into the
        # decoder at the end), so a frozen parameter keeps its direction, not its scale
        frozen_cos = {
            name: float(
                torch.nn.functional.cosine_similarity(
                    named[name].detach().reshape(v.shape[0], -1), v.reshape(v.shape[0], -1), dim=1
                ).min()
            )
            for name, v in start_values.items()
        }
        for name in frozen:
            named[name].requires_grad_(True)
        if sae_cfg.debias_batchtopk_threshold and registry.get(spec.architecture).batch_threshold:
            debias_topk_threshold(sae, steps)  # one threshold update per training step
        sae.cfg.metadata.hook_name = acts.hook
        sae.save_inference_model(tmp)
        summary = {
            "precision": precision_name(sae_cfg.dtype, sae_cfg.device),
            "train_seconds": round(seconds, 2),
            "tokens_per_second": round(steps * batch_size / seconds),
            "training_class": training_class_name(spec, sae_cfg),
            "train_l0": sae.cfg.metadata.l0,
            "dead_at_end": sae.cfg.metadata.num_dead_features,
            **({"feed_wait_seconds": round(data.wait_seconds, 2)} if isinstance(data, feed.Prefetcher) else {}),
            **({"frozen_min_row_cosine": frozen_cos} if frozen else {}),
        }
        (tmp / "training.json").write_text(json.dumps(summary, indent=1))
        return summary

    art = store.get_or_build("sae", params, build, code=BUILDER_CODE)
    return load_sae(art.path, sae_cfg.device), art


def load_sae(path: Path, device: str = "cpu") -> SAE:
    """An inference SAE saved by `train_sae`, on `device` (checked: a ValueError names it when
    this machine lacks it). Analyses move their inputs to wherever it is (see `devices`)."""
    sae = SAE.load_from_disk(str(path), device=str(check_device("device", device)))
    sae.eval()
    return sae


def train_seeds(
    acts: ActivationSet,
    spec: SAESpec,
    seeds: Sequence[int],
    sae_cfg: SAEConfig,
    store: Store,
    batch_size: int = 4096,
    runner: sweep.Runner | None = None,
) -> list[SAE]:
    """One SAE per seed, identical but for the seed, through the sweep `runner` (in process by
    default)."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    jobs = [sweep.SAEJob(acts, spec.with_seed(s), sae_cfg, batch_size) for s in seeds]
    return [sae for sae, _ in sweep.train_all(jobs, store, runner, desc=f"{spec.architecture} seeds")]
