"""Study 4: KronSAE against TopK — quality at equal size, tokens and FLOPs, and what it saves.

The grid (:func:`grid`) is a set of SAEs on one residual-stream hook, every one trained through
``train.train_sae`` on the sparse path, each identified by (architecture, F, m, n, composition,
budget, tokens, seed); groups of the study are views of one results table:

* **main** — TopK and KronSAE ``main_mn`` (mAND) at each F of ``expansion_factors``, equal k and
  equal tokens, every seed;
* **flops** — the same KronSAE given the tokens that make its training FLOPs equal TopK's
  (:func:`flops_matched_tokens`);
* **sweep** — KronSAE (mAND) at ``sweep_expansion_factor`` for each ``(m, n)`` of ``sweep_mn``;
* **composition** — KronSAE ``main_mn`` at ``sweep_expansion_factor`` with each composition;
* **convergence** — TopK and KronSAE ``main_mn``, seed ``seeds[0]``, at multiples of the budget.

FLOPs are counted analytically per token (:func:`encoder_flops`, :func:`training_flops`), as
2 × multiply-adds. Efficiency is measured by :func:`time_encoder` (forward + backward of each
architecture's encoder on the sparse training path) and :func:`peak_memory`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from ..analyses import features, quality
from ..checks import check_choice, check_int
from ..config import SAEConfig
from ..saes import registry
from ..saes.kron import COMPOSITIONS, kron_select, kron_shape
from ..study_config import Study04Config
from .budget_ladders import check_ladder

COMPOSITION_LABELS = {"mand": "mAND", "relu_product": "ReLU(u)·ReLU(v)", "product": "u·v"}


# ---------------------------------------------------------------------------------------
# analytic compute
# ---------------------------------------------------------------------------------------
def _pre_width(d_sae: int, mn: tuple[int, int] | None) -> int:
    if mn is None:
        return d_sae
    shape = kron_shape(d_sae, None, *mn)
    return shape.n_pre


def encoder_flops(d: int, d_sae: int, k: int, mn: tuple[int, int] | None = None) -> int:
    """Encoder FLOPs per token (2 × multiply-adds): ``2(d·F + k·d)`` for TopK (``mn=None``),
    ``2(d·h(m+n) + k·d)`` for KronSAE (REFERENCES §7; the ``k·d`` is the selected latents'
    share, equal for both)."""
    return 2 * (d * _pre_width(d_sae, mn) + k * d)


def training_flops(d: int, d_sae: int, k: int, mn: tuple[int, int] | None = None) -> int:
    """Training FLOPs per token on the sparse path (2 × multiply-adds), encoder + decoder:

    * encoder forward ``d·W`` (W = F, or h(m+n) for KronSAE);
    * encoder backward only at the selected entries: ``k·d`` (TopK: the k latents) or ``2k·d``
      (KronSAE: up to 2k distinct parents of the k selected pairs);
    * decoder forward ``k·d`` and backward ``2k·d`` (value gradients and selected rows).

    Per-step costs (Adam, decoder-row norms: ``O(F·d)`` per batch, not per token) are left out.
    """
    parents = k if mn is None else 2 * k
    return 2 * (d * _pre_width(d_sae, mn) + parents * d + 3 * k * d)


def flops_matched_tokens(tokens: int, d: int, d_sae: int, k: int, mn: tuple[int, int], batch_size: int) -> int:
    """KronSAE tokens whose training FLOPs equal TopK's on ``tokens`` (rounded down to batches)."""
    ratio = training_flops(d, d_sae, k) / training_flops(d, d_sae, k, mn)
    return max(batch_size, int(tokens * ratio) // batch_size * batch_size)


# ---------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One SAE of the study."""

    arch: str
    """"topk" or "kron"."""
    expansion: int
    """F / d."""
    d_sae: int
    m: int | None
    n: int | None
    composition: str | None
    budget: str
    """"tokens" (the study's token budget × `multiple`) or "flops" (KronSAE at TopK's FLOPs)."""
    multiple: float
    train_tokens: int
    seed: int

    @property
    def label(self) -> str:
        if self.arch == "topk":
            return "TopK"
        return f"KronSAE ({self.m},{self.n}) {COMPOSITION_LABELS[self.composition]}"

    def spec(self, k: int) -> registry.SAESpec:
        if self.arch == "topk":
            return registry.get("topk").spec(self.d_sae, k, self.seed)
        return registry.get("kron").spec(self.d_sae, k, self.seed, m=self.m, n=self.n, composition=self.composition)

    def row(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "label": self.label}


def check_config(cfg: Study04Config, d: int, n_tokens: int, warmup_fraction: float = SAEConfig.lr_warm_up_fraction) -> None:
    """Fail early, naming the parameter, if the grid cannot be built at input size ``d``.
    ``warmup_fraction`` is the profile's ``sae.lr_warm_up_fraction`` (the ladder's warm-up)."""
    check_int("study04.layer", cfg.layer, 0)
    check_int("study04.batch_size", cfg.batch_size, 1)
    if n_tokens % cfg.batch_size:
        raise ValueError(f"study04.batch_size={cfg.batch_size} must divide activations.n_tokens={n_tokens}")
    if len(set(cfg.seeds)) != len(cfg.seeds) or len(cfg.seeds) < 2:
        raise ValueError(f"study04.seeds must be at least 2 distinct seeds (spread over seeds); got {list(cfg.seeds)}")
    if not set(cfg.sweep_seeds) <= set(cfg.seeds) or len(cfg.sweep_seeds) < 1:
        raise ValueError(
            f"study04.sweep_seeds {list(cfg.sweep_seeds)} must be a non-empty subset of study04.seeds {list(cfg.seeds)}"
        )
    for e in (*cfg.expansion_factors, cfg.sweep_expansion_factor):
        check_int("study04 expansion factor", e, 1)
        check_int("study04.k", cfg.k, 1, e * d, f" (at most the dictionary size {e}·{d})")
        for mn in (cfg.main_mn, *cfg.sweep_mn):
            try:
                kron_shape(e * d, None, *mn)
            except ValueError as err:
                raise ValueError(f"study04: (m, n) = {tuple(mn)} at F = {e}·{d}: {err}") from None
    if tuple(cfg.main_mn) not in {tuple(mn) for mn in cfg.sweep_mn}:
        raise ValueError(
            f"study04.main_mn {tuple(cfg.main_mn)} must be one of study04.sweep_mn {[tuple(x) for x in cfg.sweep_mn]}"
        )
    for c in cfg.compositions:
        check_choice("study04.compositions entry", c, COMPOSITIONS)
    if "mand" not in cfg.compositions:
        raise ValueError(f"study04.compositions must include 'mand' (the reference); got {list(cfg.compositions)}")
    if 1.0 not in cfg.convergence_multiples or any(x <= 0 for x in cfg.convergence_multiples):
        raise ValueError(f"study04.convergence_multiples must be positive and include 1.0; got {list(cfg.convergence_multiples)}")
    if cfg.train_tokens < cfg.batch_size:
        raise ValueError(f"study04.train_tokens={cfg.train_tokens} is smaller than one batch ({cfg.batch_size})")
    if cfg.convergence_tokens:
        check_ladder("study04", cfg, cfg.batch_size, warmup_fraction)


def grid(cfg: Study04Config, d: int) -> list[Variant]:
    """Every distinct SAE of the study (groups share SAEs; each is trained and evaluated once)."""
    T, mn0, B = cfg.train_tokens, tuple(cfg.main_mn), cfg.batch_size
    out: dict[tuple, Variant] = {}

    def add(arch, e, mn, comp, budget, mult, tokens, seed):
        v = Variant(arch, e, e * d, *(mn or (None, None)), comp, budget, mult, tokens, seed)
        out.setdefault(dataclasses.astuple(v), v)

    for e in cfg.expansion_factors:
        for s in cfg.seeds:
            add("topk", e, None, None, "tokens", 1.0, T, s)
            add("kron", e, mn0, "mand", "tokens", 1.0, T, s)
            add("kron", e, mn0, "mand", "flops", 1.0, flops_matched_tokens(T, d, e * d, cfg.k, mn0, B), s)
    e = cfg.sweep_expansion_factor
    for s in cfg.seeds:
        add("topk", e, None, None, "tokens", 1.0, T, s)
        for comp in cfg.compositions:
            add("kron", e, mn0, comp, "tokens", 1.0, T, s)
    for s in cfg.sweep_seeds:
        for mn in cfg.sweep_mn:
            add("kron", e, tuple(mn), "mand", "tokens", 1.0, T, s)
    for mult in cfg.convergence_multiples:
        tokens = max(B, int(T * mult) // B * B)
        add("topk", e, None, None, "tokens", mult, tokens, cfg.seeds[0])
        add("kron", e, mn0, "mand", "tokens", mult, tokens, cfg.seeds[0])
    return list(out.values())


def training_config(sae_cfg: SAEConfig, cfg: Study04Config, variant: Variant) -> SAEConfig:
    """The profile's SAE settings with this study's learning rate and the variant's tokens."""
    lr = sae_cfg.lr if cfg.lr is None else cfg.lr
    return dataclasses.replace(sae_cfg, train_tokens=variant.train_tokens, lr=lr, k=cfg.k)


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
def evaluate(
    sae, eval_x: torch.Tensor, tokens: np.ndarray, n_ctx: int, splicer: quality.Splicer | None, n_top: int, min_firings: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """Quality and interpretability proxies of one SAE on held-out activations, and a per-latent
    table (``frequency``: share of held-out tokens it fires on; ``token_entropy``: NaN below
    ``min_firings``), which the frequency-matched entropy rule reads. The row holds EV (about
    the mean), L0, dead fraction (no firing on the eval tokens), loss recovered (NaN without a splicer), mean token entropy (bits, over latents
    with ≥ ``min_firings`` of their top-``n_top`` activations) and the median log10 firing
    frequency of live latents. One encoding pass serves the reconstruction and the top
    activations (streamed in batches: no [tokens, F] matrix)."""
    acc = quality.VarianceAccumulator()

    def encode_and_score(xb: torch.Tensor) -> torch.Tensor:
        z = sae.encode(xb)
        acc.update(xb, sae.decode(z))
        return z

    with torch.no_grad():
        top = features.top_activations(encode_and_score, eval_x, n_top)
    stats = features.surface_statistics(top, tokens, n_ctx, min_firings=min_firings)
    density = top.density
    live = density[density > 0]
    row = {
        "explained_variance": acc.explained_variance,
        "l0": float(density.sum()),
        "dead_fraction": float((density == 0).mean()),
        "token_entropy": float(np.nanmean(stats.token_entropy)) if stats.token_entropy.notna().any() else np.nan,
        "median_log10_frequency": float(np.median(np.log10(live))) if live.size else np.nan,
        "loss_recovered": np.nan,
    }
    if splicer is not None:
        row["loss_recovered"] = splicer.report(lambda a: sae.decode(sae.encode(a.to(sae.device)))).loss_recovered
    latents = pd.DataFrame({"frequency": density, "token_entropy": stats.token_entropy.to_numpy(float)})
    return row, latents


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------
def results_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The results table: one row per SAE (``Variant.row()`` plus its metrics); m and n as
    nullable integers (TopK rows have none)."""
    return pd.DataFrame(list(rows)).astype({"m": "Int64", "n": "Int64"})


def _is_main_kron(df: pd.DataFrame, cfg: Study04Config, composition: str | None = "mand") -> pd.Series:
    m, n = cfg.main_mn
    sel = (df.arch == "kron") & (df.m == m) & (df.n == n)
    return sel & (df.composition == composition) if composition else sel


def main_table(results: pd.DataFrame, cfg: Study04Config) -> pd.DataFrame:
    """TopK and KronSAE ``main_mn`` (mAND) at every F of the study, standard budget, with a
    ``model`` column: "TopK", "KronSAE, equal tokens", "KronSAE, equal FLOPs"."""
    sel = (results.multiple == 1.0) & results.expansion.isin(cfg.expansion_factors) & results.seed.isin(cfg.seeds)
    sel &= ((results.arch == "topk") & (results.budget == "tokens")) | _is_main_kron(results, cfg)
    df = results[sel].copy()
    df["model"] = np.where(
        df.arch == "topk", "TopK", np.where(df.budget == "flops", "KronSAE, equal FLOPs", "KronSAE, equal tokens")
    )
    return df


def sweep_table(results: pd.DataFrame, cfg: Study04Config) -> pd.DataFrame:
    """KronSAE (mAND) at the sweep size for every (m, n), with its analytic encoder ratio."""
    sel = (results.arch == "kron") & (results.expansion == cfg.sweep_expansion_factor) & (results.composition == "mand")
    sel &= (results.budget == "tokens") & (results.multiple == 1.0) & results.seed.isin(cfg.sweep_seeds)
    df = results[sel].copy()
    df["mn"] = [f"({m},{n})" for m, n in zip(df.m, df.n)]
    df["heads"] = df.d_sae // (df.m * df.n)
    df["encoder_ratio"] = (df.m + df.n) / (df.m * df.n)
    return df


def composition_table(results: pd.DataFrame, cfg: Study04Config) -> pd.DataFrame:
    """KronSAE ``main_mn`` at the sweep size for every composition (standard budget)."""
    sel = _is_main_kron(results, cfg, None) & (results.expansion == cfg.sweep_expansion_factor) & (results.budget == "tokens")
    return results[sel & (results.multiple == 1.0) & results.seed.isin(cfg.seeds)].copy()


def convergence_table(results: pd.DataFrame, cfg: Study04Config) -> pd.DataFrame:
    """TopK and KronSAE ``main_mn`` (seed ``seeds[0]``) at every budget multiple of the sweep size."""
    sel = (results.expansion == cfg.sweep_expansion_factor) & (results.seed == cfg.seeds[0]) & (results.budget == "tokens")
    sel &= (results.arch == "topk") | _is_main_kron(results, cfg)
    return results[sel].sort_values(["arch", "train_tokens"]).copy()


def summarise(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation over seeds (ddof=1) and count of each metric per group."""
    out = df.groupby(list(by), dropna=False)[list(metrics)].agg(["mean", "std", "count"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    return out.reset_index()


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean difference ``a − b`` over seeds and its standard error (independent samples)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    var = sum(x.var(ddof=1) / x.size for x in (a, b) if x.size > 1)
    return float(a.mean() - b.mean()), float(np.sqrt(var))


def convergence_gap(conv: pd.DataFrame, metric: str = "explained_variance") -> pd.DataFrame:
    """Per architecture: the metric at the study's budget (multiple 1), at the largest budget,
    and the gain from the last doubling of the budget — how far from levelled off the budget is."""
    rows = []
    for arch, g in conv.groupby("arch"):
        g = g.sort_values("multiple")
        at1 = float(g[metric][g.multiple == 1.0].iloc[0])
        last, prev = g.iloc[-1], g.iloc[-2] if len(g) > 1 else g.iloc[-1]
        rows.append(
            {
                "arch": arch,
                "at_budget": at1,
                "largest_multiple": float(last.multiple),
                "at_largest": float(last[metric]),
                "gain_to_largest": float(last[metric]) - at1,
                "gain_last_step": float(last[metric]) - float(prev[metric]),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# efficiency: encoder forward + backward on the sparse training path
# ---------------------------------------------------------------------------------------
class EncoderPass:
    """One encoder forward + backward of a freshly initialised training SAE, as its training step
    does it: dense no-grad pre-activations, selection, the selected values' gradient into the
    encoder (a random linear loss on the k values stands in for the decoder). Calling it starts
    without gradients (SAETrainer sets them to None every step) and reuses the pre-activation
    buffer of the previous call, as training does; :meth:`reset` also drops that buffer, so a
    measurement after it counts the buffer."""

    def __init__(
        self, arch: str, d: int, d_sae: int, k: int, mn: tuple[int, int] | None = None, batch: int = 1024, seed: int = 0
    ):
        from sae_lens.registry import get_sae_training_class

        from ..saes.sparse_topk import use_fast_bookkeeping

        recipe = registry.get(arch)
        spec = recipe.spec(d_sae, k, seed, **({} if mn is None else {"m": mn[0], "n": mn[1]}))
        sae_cls, cfg_cls = get_sae_training_class(recipe.training_class)
        torch.manual_seed(seed)
        self.arch, self.k = arch, k
        self.sae = use_fast_bookkeeping(sae_cls(cfg_cls(d_in=d, d_sae=d_sae, k=k, **dict(spec.extra))))
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, d, generator=g)
        self.w = torch.randn(batch * k, generator=g)

    def reset(self) -> None:
        self.sae.zero_grad(set_to_none=True)
        self.sae.__dict__.pop("_hidden_pre_buffer", None)
        self.sae.__dict__.pop("_pre_buffer", None)

    def __call__(self) -> None:
        sae = self.sae
        sae.zero_grad(set_to_none=True)
        sae_in_nob = sae._fast_sae_in(self.x)
        if self.arch == "kron":
            sae_in, pre = sae._sparse_pre(sae_in_nob)
            acts = sae._pair_acts(pre, sae_in, kron_select(pre, sae.factors, self.k, sae.cfg.composition))
        else:
            sae_in, hidden_pre = sae._fast_hidden_pre(sae_in_nob)
            with torch.no_grad():
                selected, pattern = sae._select(hidden_pre)
            acts, _ = sae._fast_values(selected, pattern, sae_in, relu=True)
        (acts * self.w).sum().backward()


def time_round_robin(fns: dict[Any, Callable[[], None]], repeats: int = 3) -> dict[Any, float]:
    """Median wall time (s) of each function over ``repeats`` rounds after one warm-up call
    each; every round calls every function once, so a change of load on a shared machine hits
    all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[Any, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return {key: float(np.median(ts)) for key, ts in times.items()}


def peak_memory(fn: Callable[[], None]) -> int:
    """Peak bytes of CPU tensors allocated during one call, above what was allocated before it:
    the running sum of torch's allocation and free events (torch.profiler, profile_memory) in
    time order. Tensors only: allocator caches, MKL workspaces and Python objects are not in it.
    An :class:`EncoderPass` is reset first, so its pre-activation buffer and gradients count."""
    if isinstance(fn, EncoderPass):
        fn.reset()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)


def efficiency_table(
    sizes: Sequence[tuple[int, int]],
    k: int,
    mns: Sequence[tuple[int, int]],
    batch: int,
    repeats: int = 3,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """Encoder forward + backward time (round-robin medians, :func:`time_round_robin`) and peak
    memory of TopK and each KronSAE (m, n) at every (d, F) of ``sizes``, with the analytic
    ratios next to the measured ones."""
    rows = []
    for d, F in progress(list(sizes)) if progress else sizes:
        passes = {None: EncoderPass("topk", d, F, k, None, batch)}
        passes.update({mn: EncoderPass("kron", d, F, k, mn, batch) for mn in mns if F % (mn[0] * mn[1]) == 0})
        seconds = time_round_robin(passes, repeats)
        for mn, fn in passes.items():
            rows.append(
                {
                    "d": d,
                    "d_sae": F,
                    "arch": "topk" if mn is None else "kron",
                    "m": mn[0] if mn else pd.NA,
                    "n": mn[1] if mn else pd.NA,
                    "seconds": seconds[mn],
                    "peak_mib": peak_memory(fn) / 2**20,
                    "encoder_gflop": encoder_flops(d, F, k, mn) * batch / 1e9,
                }
            )
            fn.reset()
    df = pd.DataFrame(rows).astype({"m": "Int64", "n": "Int64"})
    base = df[df.arch == "topk"].set_index(["d", "d_sae"])
    kron = df[df.arch == "kron"].copy()
    idx = list(zip(kron.d, kron.d_sae))
    kron["time_ratio"] = kron.seconds.to_numpy() / base.seconds.loc[idx].to_numpy()
    kron["memory_ratio"] = kron.peak_mib.to_numpy() / base.peak_mib.loc[idx].to_numpy()
    kron["analytic_ratio"] = ((kron.m + kron.n) / (kron.m * kron.n)).astype(float)
    kron["flop_ratio"] = kron.encoder_gflop.to_numpy() / base.encoder_gflop.loc[idx].to_numpy()
    return pd.concat([df[df.arch == "topk"], kron], ignore_index=True)
