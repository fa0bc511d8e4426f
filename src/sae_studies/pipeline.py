"""The first arrows of every study, in one place: profile → store → LM → activations.

A notebook starts with `run = pipeline.start(profile, overrides)` and then asks `run` for the
model, token streams and activations it needs; everything comes from (or goes to) the cache.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import activations, lm, plotting, profile_checks, smollm2, sweep, table_cache
from .analyses import quality
from .config import EMBEDDED_MODEL, Profile, load_profile
from .store import UNCOMMITTED, Store, git_commit, git_dirty
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
            self._splicers[key] = quality.Splicer(
                self.model,
                hook,
                self.eval_contexts(n_tokens),
                keep_first=self.loaded.n_prefix,
                compute_dtype=self.loaded.compute_dtype,
            )
        return self._splicers[key]

    def save_figure(self, fig, name: str):
        return plotting.save_figure(fig, name, self.profile.figures_dir)

    def result_path(self, name: str) -> Path:
        """A table another notebook of this profile wrote (e.g. study 1's findings, read by study
        2): this run's own folder if it holds it, else the committed figures of the profile."""
        own = self.profile.figures_dir / name
        committed = self.profile.committed_figures_dir
        if not own.exists() and committed is not None and (committed / name).exists():
            return committed / name
        return own

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

    def cached_table(
        self, name: str, compute: Callable[[], pd.DataFrame], inputs: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """``compute()``'s table, kept in the store so that a rerun of the notebook from the top
        reads it (keyed by the profile, the package's code and the cells run before: `table_cache`)."""
        return table_cache.cached_table(self.store, self.profile, name, compute, inputs)

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
            found,
            study,
            self.profile.figures_dir,
            title=title,
            model=model or self.model_label,
            profile=self.profile.name,
            provenance=self.provenance,
        )

    @property
    def provenance(self) -> str:
        """What the findings record about where they came from: profile, overrides and commit."""
        P = self.profile
        overrides = ", ".join(f"{k}={v!r}" for k, v in P.overrides) or "none"
        commit = git_commit() or "unknown commit"
        dirty = f" {UNCOMMITTED}" if git_dirty() else ""
        return f"overrides: {overrides}; code at commit {commit[:10]}{dirty}"


def model_shape(profile: Profile) -> tuple[int, int] | None:
    """(n_layers, d_model) of the profile's model without loading it: the embedded model's from
    the profile, SmolLM2's from its known shape; None for a hub model (its own notebook checks
    layers once the model is loaded)."""
    if profile.lm.name == EMBEDDED_MODEL:
        return profile.lm.n_layers, profile.lm.d_model
    if profile.lm.name == smollm2.NAME:
        return smollm2.N_LAYERS, smollm2.D_MODEL
    return None


def check_studies(profile: Profile) -> None:
    """Every study's own rules that need the model's shape, at start, before anything is built:
    the layer fields against the layer count and each study's `check`."""
    from .studies import architectures, flow, hierarchical, kron, stability, synthetic

    warm = profile.sae.lr_warm_up_fraction  # every ladder's warm-up (ladder.plan's default rule)
    synthetic.check(profile.study02, warm)
    shape = model_shape(profile)
    if shape is None:
        return
    n_layers, d_model = shape
    try:
        profile_checks.check_layers(profile, n_layers)
        stability.check(profile.study01, n_layers, warm)
        d_sae3 = profile.study03.expansion_factor * d_model
        hierarchical.check(profile.study03, d_sae3, n_layers, profile.activations.batch_size, warm)
        kron.check_config(profile.study04, d_model, profile.activations.n_tokens, warm)
        flow.check_study05(profile.study05, n_layers, profile.sae.k, d_model, profile.corpus.source, warm)
        architectures.check(profile.study06, d_model, n_layers, warm)
    except ValueError as err:
        raise ValueError(f"profile {profile.name!r}: {err}") from None


def start(profile: str, overrides: Mapping[str, Any] | str | None = None) -> Run:
    """Load and check the profile (every field, and every study's rules, before any work), set the
    plot style and create the run's figures folder. A publishing run starts from an empty staging
    folder, so a failed earlier run cannot leak into the committed figures."""
    plotting.use_style()
    run = Run(load_profile(profile, overrides))
    check_studies(run.profile)
    if run.profile.publishing:
        shutil.rmtree(run.profile.figures_dir, ignore_errors=True)
    run.profile.figures_dir.mkdir(parents=True, exist_ok=True)
    return run
