"""The first arrows of every study, in one place: profile → store → LM → activations.

A notebook starts with `run = pipeline.start(profile, overrides)` and then asks `run` for the
model, token streams and activations it needs; everything comes from (or goes to) the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from . import activations, lm, metrics, plotting
from .config import Profile, load_profile
from .store import Store


@dataclass
class Run:
    profile: Profile
    _splicers: dict = field(default_factory=dict, repr=False)

    @cached_property
    def store(self) -> Store:
        return Store(self.profile.data_dir)

    @cached_property
    def loaded(self) -> lm.LoadedModel:
        return lm.load_model(self.profile.lm, self.profile.corpus, self.store)

    @property
    def model(self):
        return self.loaded.model

    def activations(self, hooks: list[str], split: str = "train") -> dict[str, activations.ActivationSet]:
        """Harvested activations: the training budget on `train`, the eval budget on `val`."""
        cfg = self.profile.activations
        n_tokens = cfg.n_tokens if split == "train" else cfg.n_eval_tokens
        return activations.harvest(self.loaded, hooks, n_tokens, self.store, split=split)

    def eval_contexts(self, n_tokens: int | None = None) -> np.ndarray:
        """Validation windows [n, n_ctx] covering the eval token budget (for CE metrics)."""
        n = (n_tokens or self.profile.activations.n_eval_tokens) // self.model.cfg.n_ctx
        return self.loaded.streams["val"].contexts(self.model.cfg.n_ctx)[:n]

    def splicer(self, hook: str, n_tokens: int | None = None) -> metrics.Splicer:
        """The CE evaluator of `hook` on `eval_contexts(n_tokens)`, one per (hook, budget), so the
        clean and zero-ablation CE and the cached activations are shared by every SAE evaluated."""
        key = (hook, n_tokens)
        if key not in self._splicers:
            self._splicers[key] = metrics.Splicer(self.model, hook, self.eval_contexts(n_tokens))
        return self._splicers[key]

    def save_figure(self, fig, name: str):
        return plotting.save_figure(fig, name, self.profile.figures_dir)


def start(profile: str, overrides: dict[str, Any] | None = None, threads: int | None = None) -> Run:
    """Load the profile, set the plot style and torch's thread count (all cores by default)."""
    if threads:
        torch.set_num_threads(threads)
    plotting.use_style()
    return Run(load_profile(profile, overrides))
