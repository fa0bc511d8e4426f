"""Token-budget ladders: one warmup-stable-decay run per SAE, an SAE at every rung.

A ladder is a small plan of rungs on top of SAELens' `SAETrainer`, not a second trainer:

* **trunk**: one run at a constant learning rate after a linear warm-up of `warmup_steps`
  (SAELens' "constant" scheduler), checkpointed by the trainer's own `save_checkpoint` (SAE
  weights, Adam moments, scheduler and coefficient state, dead-latent counters, activation
  scaler) at every rung's *branch point*;
* **rung i** (R_i tokens = S_i steps of `batch_size` rows): a branch from the trunk's checkpoint
  at step b_i = S_i − d_i that trains d_i = max(1, round(decay_fraction · S_i)) more steps with
  the learning rate falling linearly from its constant value to 0 (the "constant" scheduler's
  decay phase). The branch's tokens are counted inside the rung: the rung's SAE has taken
  exactly S_i optimiser steps on the first S_i batches of the seed's data stream (the same
  batches an ordinary `train_sae` run of R_i tokens reads), b_i of them on the trunk and d_i on
  the branch.

Cost: b_n + Σ d_i steps, about (1 + decay_fraction) × S_n for doubling rungs (1.175 S_n for
four doublings at 0.2) instead of Σ S_i ≈ 2 S_n for separate runs; `LadderPlan.cost_steps`.

Every checkpoint and every rung SAE is an artifact of the store keyed by its parameters (the
trunk's key leaves out the ladder's top rung, so adding a rung reuses the trunk). A ladder
killed mid-way resumes from its last published checkpoint: the trainer reloads its state and
the data stream restarts at the batch the checkpoint had reached (`feed.data_feed(start=)`),
so the resumed ladder produces the same SAEs as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.config import SAETrainerConfig
from sae_lens.constants import SAE_WEIGHTS_FILENAME
from sae_lens.training.optim import get_lr_scheduler
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import feed
from .activations import ActivationSet
from .config import SAEConfig
from .devices import check_device
from .precision import resolve as resolve_precision
from .saes import registry
from .saes.registry import SAESpec
from .store import Artifact, Store
from .train import (
    BUILDER_CODE,
    artifact_params,
    build_training_sae,
    debias_topk_threshold,
    load_sae,
    normalised_mean,
    training_class_name,
)

__all__ = ["LadderPlan", "Ladder", "plan", "train_ladder", "rung_schedule"]

CHECKPOINT_KIND = "ladder_checkpoint"
POSITION_FILE = "ladder_position.json"
LR_FILE = "lr.npy"
CODE = (*BUILDER_CODE, "sae_studies.ladder")
"""The modules whose source builds a ladder's artifacts (their version is part of every key)."""
WARMUP_REFERENCE_TOKENS = 1_048_576
"""The longest run whose warm-up a ladder copies by default (`plan`). Not the top rung's own: until
2026-12-07 the default was 5 % of the first rung, which left ladders starting at 65k tokens with
no warm-up at all and moved TopK's live fraction stable at 1M (lr 8e-3) from an ordinary run's
0.015 to 0.020 (none) or 0.009 (6 steps); a 4M ladder's 5 % (100 steps at batch 2,048) would fall
past the branch points of its 65k and 131k rungs. 5 % of 1M (25 steps at 2,048) fits before them."""
NORM_BATCHES = 20
"""Batches the trainer reads to estimate the activation scale before its first step (as `train_sae`)."""


@dataclass(frozen=True)
class LadderPlan:
    """The steps of a ladder: rungs, branch points, decay lengths, warm-up and cost (all in steps of
    `batch_size` rows)."""

    rungs: tuple[int, ...]
    """Training tokens of each rung's SAE, strictly increasing multiples of batch_size."""
    batch_size: int
    decay_fraction: float
    """Share of a rung's steps spent on its decay branch (the rest is the shared trunk)."""
    warmup_steps: int
    """Linear learning-rate warm-up at the start of the trunk (also the sparsity-coefficient warm-up)."""

    @property
    def rung_steps(self) -> tuple[int, ...]:
        return tuple(r // self.batch_size for r in self.rungs)

    @property
    def decay_steps(self) -> tuple[int, ...]:
        return tuple(max(1, round(self.decay_fraction * s)) for s in self.rung_steps)

    @property
    def branch_steps(self) -> tuple[int, ...]:
        """Trunk step each rung branches from (its checkpoint)."""
        return tuple(s - d for s, d in zip(self.rung_steps, self.decay_steps))

    @property
    def norm_batches(self) -> int:
        return min(NORM_BATCHES, self.rung_steps[0])

    @property
    def cost_steps(self) -> int:
        """Optimiser steps of the whole ladder: the trunk to the last branch point plus every branch."""
        return self.branch_steps[-1] + sum(self.decay_steps)

    @property
    def cost_ratio(self) -> float:
        """cost_steps over the longest rung's steps (what separate runs would cost: sum of rung steps)."""
        return self.cost_steps / self.rung_steps[-1]


def plan(
    rungs: Sequence[int],
    batch_size: int,
    decay_fraction: float = 0.2,
    warmup_fraction: float = 0.05,
    warmup_tokens: int | None = None,
) -> LadderPlan:
    """Validate and build a ladder plan. The warm-up is `warmup_tokens` (rounded down to steps) or,
    by default, `warmup_fraction` of the top rung or of `WARMUP_REFERENCE_TOKENS`, whichever is
    shorter: an ordinary `train_sae` run's warm-up (5 % of its own length) at the top rung's length,
    at most a 1M-token run's. Every rung shares it, so a ladder up to 1M tokens reproduces an
    ordinary run at its top rung bit for bit, and a longer one at its 1M rung. Its rungs past 1M
    are not ordinary runs: at 4M (TopK 8×, lr 8e-3, 3 seeds; `bench/bench_ladder.py --tokens
    4194304`) live fraction stable 0.060 ± 0.005 against an ordinary run's 0.039 ± 0.004, at the
    same EV (0.965 vs 0.964)."""
    rungs = tuple(int(r) for r in rungs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not rungs or any(r < batch_size or r % batch_size for r in rungs):
        raise ValueError(f"ladder rungs must be multiples of batch_size {batch_size} (at least one batch); got {list(rungs)}")
    if any(a >= b for a, b in zip(rungs, rungs[1:])):
        raise ValueError(f"ladder rungs must be strictly increasing token counts; got {list(rungs)}")
    if not 0 < decay_fraction < 1:
        raise ValueError(f"decay_fraction must be in (0, 1), got {decay_fraction}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    if warmup_tokens is not None and warmup_tokens < 0:
        raise ValueError(f"warmup_tokens must be >= 0 (or None: plan's default); got {warmup_tokens}")
    if warmup_tokens is None:
        warmup_tokens = int(warmup_fraction * min(rungs[-1], WARMUP_REFERENCE_TOKENS))
    warmup = warmup_tokens // batch_size
    p = LadderPlan(rungs, batch_size, decay_fraction, warmup if warmup >= 2 else 0)  # SAELens' warm-up needs >= 2 steps
    b = p.branch_steps
    if b[0] < max(1, p.warmup_steps) or any(x >= y for x, y in zip(b, b[1:])):
        raise ValueError(
            f"rungs {list(rungs)} at batch_size {batch_size} give branch steps {list(b)}: each must come after the warm-up "
            f"({p.warmup_steps} steps) and after the previous one; use longer or more widely spaced rungs"
        )
    return p


@dataclass
class Ladder:
    """A trained ladder: one inference SAE and artifact per rung, the plan, and the optimiser steps
    this call ran (0 when everything came from the store)."""

    plan: LadderPlan
    saes: list[SAE]
    artifacts: list[Artifact]
    steps_run: int


class _Counted:
    """An iterator of batches that counts what it has handed out (its position in the stream)."""

    def __init__(self, it: Iterator[torch.Tensor], start: int):
        self.it, self.consumed = it, start

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        batch = next(self.it)
        self.consumed += 1
        return batch


def _training_key(spec: SAESpec, acts: ActivationSet, sae_cfg: SAEConfig, p: LadderPlan) -> dict[str, Any]:
    """`train_sae`'s key (precision and feed included) with its schedule replaced by the ladder's."""
    key = artifact_params(spec, acts, sae_cfg, p.batch_size)
    for name in ("train_tokens", "lr_warm_up_fraction", "lr_decay_fraction"):
        key["training"].pop(name)
    key["schedule"] = {"kind": "warmup-stable", "warmup_steps": p.warmup_steps, "norm_batches": p.norm_batches}
    return key


def checkpoint_params(spec: SAESpec, acts: ActivationSet, sae_cfg: SAEConfig, p: LadderPlan, step: int) -> dict[str, Any]:
    """Store key of the trunk's checkpoint after `step` steps (independent of the ladder's rungs)."""
    return {**_training_key(spec, acts, sae_cfg, p), "step": step}


def rung_params(spec: SAESpec, acts: ActivationSet, sae_cfg: SAEConfig, p: LadderPlan, i: int) -> dict[str, Any]:
    """Store key (kind "sae") of rung i's SAE: the trunk's key, its branch point and decay length."""
    key = _training_key(spec, acts, sae_cfg, p)
    key["schedule"] = {
        **key["schedule"],
        "kind": "warmup-stable-decay",
        "branch_step": p.branch_steps[i],
        "decay_steps": p.decay_steps[i],
    }
    return {**key, "train_tokens": p.rungs[i]}


def _trainer_config(sae_cfg: SAEConfig, p: LadderPlan, total_steps: int, decay_steps: int, checkpoint_path: str | None):
    return SAETrainerConfig(
        total_training_samples=total_steps * p.batch_size,
        train_batch_size_samples=p.batch_size,
        lr=sae_cfg.lr,
        lr_end=sae_cfg.lr / 10,  # as train_sae; the "constant" scheduler decays from lr to 0 whatever it is
        lr_scheduler_name="constant",
        lr_warm_up_steps=p.warmup_steps,
        lr_decay_steps=decay_steps,
        device=sae_cfg.device,
        dead_feature_window=sae_cfg.dead_feature_window,
        feature_sampling_window=max(1, p.rung_steps[-1]),
        n_batches_for_norm_estimate=p.norm_batches,
        checkpoint_path=checkpoint_path,
        autocast=resolve_precision(sae_cfg.dtype, sae_cfg.device) == torch.bfloat16,  # as train_sae
    )


def _trainer(acts, spec, sae_cfg, p, total_steps, decay_steps, checkpoint: Path | None, checkpoint_path: str | None = None):
    """An SAETrainer on a fresh SAE, or on the state of `checkpoint` with the data stream resumed
    where the checkpoint left it; records the learning rate of every optimiser step in `.lrs`."""
    sae = build_training_sae(spec, acts.d, sae_cfg, 1, normalised_mean(acts), coefficient_warm_up_steps=p.warmup_steps)
    start = 0
    if checkpoint is not None:
        sae.load_state_dict(load_file(checkpoint / SAE_WEIGHTS_FILENAME))
        start = json.loads((checkpoint / POSITION_FILE).read_text())["batches_consumed"]
    source = feed.sae_feed(acts, p.batch_size, spec.seed, sae_cfg, start=start)
    data = _Counted(source, start)
    trainer = SAETrainer(_trainer_config(sae_cfg, p, total_steps, decay_steps, checkpoint_path), sae, data_provider=data)
    if checkpoint is not None:
        trainer.load_trainer_state(checkpoint)
        # SAELens saves a checkpoint before it counts the step it has just taken
        trainer.n_training_steps = trainer.n_training_samples // p.batch_size
    lrs: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    trainer.lrs = lrs  # type: ignore[attr-defined]
    return trainer, data


def _fit(trainer: SAETrainer, data: _Counted) -> None:
    try:
        trainer.fit()
    finally:
        if isinstance(data.it, feed.Prefetcher):
            data.it.close()  # stop the reader thread now, not at garbage collection


def _copy_into(source: Path, out: Path) -> None:
    shutil.copytree(source, out, dirs_exist_ok=True)


def _ensure_trunk(acts, spec, sae_cfg, p: LadderPlan, store: Store, needed: list[int]) -> int:
    """Publish the trunk checkpoints at branch steps `needed` (those not yet in the store), resuming
    from the latest published one before them; return the optimiser steps run."""
    missing = [b for b in needed if store.get(CHECKPOINT_KIND, checkpoint_params(spec, acts, sae_cfg, p, b), CODE) is None]
    if not missing:
        return 0
    target = max(missing)
    resume, resume_art = 0, None
    for b in p.branch_steps:
        art = store.get(CHECKPOINT_KIND, checkpoint_params(spec, acts, sae_cfg, p, b), CODE) if b < target else None
        if art is not None:
            resume, resume_art = b, art
    with tempfile.TemporaryDirectory(prefix="ladder-") as tmp_root:
        published = {"lr_from": 0}

        def publish(checkpoint_path: Path | None) -> None:
            assert checkpoint_path is not None
            step = trainer.n_training_samples // p.batch_size
            (checkpoint_path / POSITION_FILE).write_text(json.dumps({"step": step, "batches_consumed": data.consumed}))
            # the learning rate of every trunk step since the previous checkpoint (its segment)
            np.save(checkpoint_path / LR_FILE, np.asarray(trainer.lrs[published["lr_from"] :]))
            published["lr_from"] = len(trainer.lrs)
            store.get_or_build(
                CHECKPOINT_KIND,
                checkpoint_params(spec, acts, sae_cfg, p, step),
                lambda out: _copy_into(checkpoint_path, out),
                code=CODE,
            )
            shutil.rmtree(checkpoint_path, ignore_errors=True)

        trainer, data = _trainer(acts, spec, sae_cfg, p, target, 0, resume_art.path if resume_art else None, tmp_root)
        trainer.save_checkpoint_fn = publish
        # checkpoints at the branch points (SAELens saves once n_training_samples passes a threshold)
        trainer.checkpoint_thresholds = [b * p.batch_size - 1 for b in p.branch_steps if resume < b <= target]
        _fit(trainer, data)
    return len(trainer.lrs)


def _train_rung(acts, spec, sae_cfg, p: LadderPlan, store: Store, i: int) -> tuple[Artifact, int]:
    params = rung_params(spec, acts, sae_cfg, p, i)
    ran = {"steps": 0}

    def build(tmp: Path) -> dict:
        ckpt = store.get(CHECKPOINT_KIND, checkpoint_params(spec, acts, sae_cfg, p, p.branch_steps[i]), CODE)
        if ckpt is None:
            raise RuntimeError(f"rung {i}: its trunk checkpoint (step {p.branch_steps[i]}) is not in the store")
        trainer, data = _trainer(acts, spec, sae_cfg, p, p.rung_steps[i], p.decay_steps[i], ckpt.path)
        # the branch's schedule: warm-up, constant to the branch point, then linear decay to 0; the
        # trunk's scheduler state ends at the branch point, so rebuild it and step it there
        trainer.lr_scheduler = get_lr_scheduler(
            "constant",
            optimizer=trainer.optimizer,
            training_steps=p.rung_steps[i],
            lr=sae_cfg.lr,
            warm_up_steps=p.warmup_steps,
            decay_steps=p.decay_steps[i],
            lr_end=sae_cfg.lr,
            num_cycles=1,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": fast-forward only
            for _ in range(p.branch_steps[i]):
                trainer.lr_scheduler.step()
        start = time.time()
        _fit(trainer, data)
        seconds = time.time() - start
        if sae_cfg.debias_batchtopk_threshold and registry.get(spec.architecture).batch_threshold:
            debias_topk_threshold(trainer.sae, p.rung_steps[i])  # one threshold update per step, trunk included
        trainer.sae.cfg.metadata.hook_name = acts.hook
        trainer.sae.save_inference_model(tmp)
        np.save(tmp / LR_FILE, np.asarray(trainer.lrs))
        ran["steps"] = len(trainer.lrs)
        summary = {
            "branch_seconds": round(seconds, 2),
            "training_class": training_class_name(spec, sae_cfg),
            "train_l0": trainer.sae.cfg.metadata.l0,
            "dead_at_end": trainer.sae.cfg.metadata.num_dead_features,
        }
        (tmp / "training.json").write_text(json.dumps(summary, indent=1))
        return summary

    return store.get_or_build("sae", params, build, code=CODE), ran["steps"]


def train_ladder(
    acts: ActivationSet,
    spec: SAESpec,
    sae_cfg: SAEConfig,
    store: Store,
    rungs: Sequence[int],
    batch_size: int = 4096,
    decay_fraction: float = 0.2,
    progress: bool = True,
    warmup_tokens: int | None = None,
) -> Ladder:
    """Train (or load from the store) one SAE per rung of a warmup-stable-decay ladder.

    `sae_cfg` gives the learning rate (the constant phase) and every other training setting;
    its `train_tokens`, `lr_decay_fraction` are replaced by the rungs and `decay_fraction`, and the
    warm-up is `warmup_tokens` or, by default, `plan`'s (an ordinary run's at the top rung's
    length, at most a 1M-token run's). Missing trunk checkpoints are trained first (resuming from
    the latest one in the store), then every missing rung's branch.
    """
    p = plan(rungs, batch_size, decay_fraction, sae_cfg.lr_warm_up_fraction, warmup_tokens)
    acts.batches(batch_size, spec.seed)  # fails early if batch_size does not divide the rows
    check_device("sae.device", sae_cfg.device)
    missing = [i for i in range(len(p.rungs)) if store.get("sae", rung_params(spec, acts, sae_cfg, p, i), CODE) is None]
    steps = _ensure_trunk(acts, spec, sae_cfg, p, store, [p.branch_steps[i] for i in missing])
    artifacts = []
    for i in tqdm(range(len(p.rungs)), desc=f"ladder {spec.architecture} seed {spec.seed}", disable=not progress, leave=False):
        art, ran = _train_rung(acts, spec, sae_cfg, p, store, i)
        artifacts.append(art)
        steps += ran
    return Ladder(p, [load_sae(a.path, sae_cfg.device) for a in artifacts], artifacts, steps)


def rung_schedule(acts: ActivationSet, spec: SAESpec, sae_cfg: SAEConfig, store: Store, p: LadderPlan, i: int) -> np.ndarray:
    """The learning rate of every optimiser step rung i's SAE took (trunk segments from the stored
    checkpoints, then its branch), as the trainer recorded them: what the schedule figure and
    tests read."""
    parts = []
    for b in p.branch_steps[: i + 1]:
        art = store.get(CHECKPOINT_KIND, checkpoint_params(spec, acts, sae_cfg, p, b), CODE)
        if art is None:
            raise ValueError(f"trunk checkpoint at step {b} is not in the store; train the ladder first")
        parts.append(np.load(art.path / LR_FILE))
    art = store.get("sae", rung_params(spec, acts, sae_cfg, p, i), CODE)
    if art is None:
        raise ValueError(f"rung {i} is not in the store; train the ladder first")
    return np.concatenate([*parts, np.load(art.path / LR_FILE)])
