"""The first arrows of every study, in one place: profile → store → LM → activations.

A notebook starts with `run = pipeline.start(profile, overrides)` and then asks `run` for the
model, token streams and activations it needs; everything comes from (or goes to) the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from . import activations, lm, plotting, sweep
from .analyses import quality
from .config import EMBEDDED_MODEL, Profile, load_profile
from .store import Store
from .studies import verdicts


@dataclass
class Run:
    profile: Profile
    _splicers: dict = field(default_factory=dict, repr=False)

    @cached_property
    def store(self) -> Store:
        return Store(self.profile.data_dir)

    @cached_property
    def runner(self) -> sweep.Runner:
        """Where this run's SAE grids train: the profile's `runner` section (in process, or a Ray
        cluster when `runner.address` or `RAY_ADDRESS` names one)."""
        return sweep.make_runner(self.profile.runner, self.profile.sae.device)

    def train(self, jobs: list[sweep.SAEJob], desc: str = "SAEs") -> list[tuple]:
        """`(SAE, artifact)` per job, in order, through the run's runner (see `sweep.train_all`)."""
        return sweep.train_all(jobs, self.store, self.runner, desc)

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
        """Validation windows covering the eval token budget (for CE metrics), BOS included for
        models that need one."""
        return self.loaded.contexts("val", n_tokens or self.profile.activations.n_eval_tokens)

    def splicer(self, hook: str, n_tokens: int | None = None) -> quality.Splicer:
        """The CE evaluator of `hook` on `eval_contexts(n_tokens)`, one per (hook, budget), so the
        clean and zero-ablation CE and the cached activations are shared by every SAE evaluated.
        The BOS position (if any) is never replaced: SAEs are not trained on it."""
        key = (hook, n_tokens)
        if key not in self._splicers:
            self._splicers[key] = quality.Splicer(self.model, hook, self.eval_contexts(n_tokens), keep_first=self.loaded.n_prefix)
        return self._splicers[key]

    def save_figure(self, fig, name: str):
        return plotting.save_figure(fig, name, self.profile.figures_dir)

    def sweep_table(self, name: str, compute: Callable[[], pd.DataFrame] | None) -> pd.DataFrame:
        """A training-length sweep's table, `<figures_dir>/<name>.csv`. With `compute` (the profile
        runs the sweep): computed and written. Without: the default profile reads the table the
        `convergence` profile wrote (the same embedded model); any other profile gets an empty table."""
        if compute is not None:
            table = compute()
            table.to_csv(self.profile.figures_dir / f"{name}.csv", index=False)
            return table
        committed = self.profile.root / "figures" / "convergence" / f"{name}.csv"
        if self.profile.name == "default" and committed.exists():
            return pd.read_csv(committed)
        return pd.DataFrame()

    @property
    def model_label(self) -> str:
        """How findings tables name the model, e.g. "embedded (4 layers, d_model 128)"."""
        cfg = self.profile.lm
        if cfg.name == EMBEDDED_MODEL:
            return f"embedded ({cfg.n_layers} layers, d_model {cfg.d_model}, trained on the fortune corpus)"
        return cfg.name

    def write_findings(self, found: list[verdicts.Verdict], study: str, title: str, model: str | None = None):
        """`figures_dir/findings_<study>.md`: the study's verdict table for this profile (`model`
        names what the numbers come from when it is not the profile's LM, e.g. synthetic data)."""
        return verdicts.write_findings(
            found, study, self.profile.figures_dir, title=title, model=model or self.model_label, profile=self.profile.name
        )


def start(profile: str, overrides: dict[str, Any] | None = None) -> Run:
    """Load the profile, set the plot style and create the profile's figures folder (tables are
    written there too, before any figure)."""
    plotting.use_style()
    run = Run(load_profile(profile, overrides))
    run.profile.figures_dir.mkdir(parents=True, exist_ok=True)
    return run
