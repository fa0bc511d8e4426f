"""Study 6: every architecture side by side — one table, one stability rule, one summary.

Every SAE reads the same activations, has the same dictionary size and token budget and trains
through `train.train_sae`, once per seed: TopK, BatchTopK, Matryoshka BatchTopK, KronSAE at
``k`` active latents; HierarchicalTopK trained at K = max(``hierarchical_ks``) and read at each k
(its top-k prefix: one row per k); the standard ReLU + L1 SAE at the L1 coefficient whose L0 is
nearest k. Per (variant, seed) on held-out tokens: EV (about the mean), L0, dead share, loss
recovered (spliced CE), training tokens/s, study 1's stability (share of live latents matched at
cosine ≥ τ in every other seed) beside its covariance null, within-seed duplicates, and
SAEBench's sparse probing and absorption (`analyses.saebench`).

The verdict rules (:func:`stability_verdicts`) and the cross-study summary (:func:`headline_summary`)
are at the end of this file; the figures are in :mod:`.architectures_plots`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analyses import quality, saebench, seed_stability
from ..analyses.intervals import decide, holm, t_interval, t_pvalue
from ..checks import check_int, check_sorted_ints
from ..config import Profile, SAEConfig
from ..saes import registry
from ..saes.registry import SAESpec
from ..study_config import Study06Config
from .budget_ladders import check_ladder, check_sweep_rung
from .verdicts import STUDIES, Verdict, spread

HIERARCHICAL = "hierarchical_topk"
REFERENCE = "topk"
STANDARD = "standard"

__all__ = [
    "check",
    "variants",
    "spec",
    "sae_config",
    "nearest_l0",
    "Trained",
    "train_all",
    "encoder",
    "ProbeData",
    "probe_data",
    "quality_and_stability",
    "evaluate",
    "null_table",
    "collapsed",
    "summary_table",
    "stability_verdicts",
    "headline_summary",
]


def check(cfg: Study06Config, d_model: int, n_layers: int, warmup_fraction: float = SAEConfig.lr_warm_up_fraction) -> int:
    """Fail early, naming the parameter, on a study-6 configuration that cannot run; returns F.
    ``warmup_fraction`` is the profile's ``sae.lr_warm_up_fraction`` (the ladder's warm-up)."""
    bad = [a for a in cfg.architectures if a not in registry.names()]
    if bad or not cfg.architectures:
        raise ValueError(f"study06.architectures has unknown {bad}; valid: {registry.names()}")
    if REFERENCE not in cfg.architectures:
        raise ValueError(f"study06.architectures must include {REFERENCE!r} (the stability rule's reference)")
    if not 0 <= cfg.layer < n_layers:
        raise ValueError(f"study06.layer must be in [0, {n_layers - 1}]; got {cfg.layer}")
    d_sae = check_int("study06.expansion_factor", cfg.expansion_factor, 1) * d_model
    check_int("study06.k", cfg.k, 1, d_sae, f" (at most F={d_sae})")
    ks = check_sorted_ints("study06.hierarchical_ks", cfg.hierarchical_ks, 1, d_sae)
    if cfg.k not in ks:
        raise ValueError(f"study06.hierarchical_ks {ks} must include study06.k={cfg.k} (the matched-L0 read)")
    if len(set(cfg.seeds)) != len(cfg.seeds) or len(cfg.seeds) < 2:
        raise ValueError(f"study06.seeds must hold at least 2 distinct seeds; got {list(cfg.seeds)}")
    for arch in cfg.architectures:
        problem = registry.get(arch).problem(d_sae, cfg.k, **_options(cfg, arch))
        if problem:
            raise ValueError(f"study06: {arch} cannot be built at F={d_sae}, k={cfg.k}: {problem}")
    if cfg.convergence_tokens:
        ladder = list(cfg.convergence_architectures)
        if (
            any(a not in cfg.architectures or a == STANDARD for a in ladder)
            or REFERENCE not in ladder
            or len(set(ladder)) != len(ladder)
        ):
            raise ValueError(
                f"study06.convergence_architectures must be distinct architectures of study06.architectures other than "
                f"{STANDARD!r} (its L1 coefficient is the table's choice), including {REFERENCE!r}; got {ladder}"
            )
        check_ladder("study06", cfg, cfg.batch_size, warmup_fraction)
    check_sweep_rung("study06", cfg)
    return d_sae


def _options(cfg: Study06Config, arch: str) -> dict:
    if arch == "matryoshka_batchtopk":
        return {"prefixes": cfg.matryoshka_prefixes}
    if arch == "kron":
        return {"m": cfg.kron_mn[0], "n": cfg.kron_mn[1]}
    return {}


def variants(cfg: Study06Config) -> list[tuple[str, str, int | None]]:
    """``(label, architecture, read k)`` of every table row: HierarchicalTopK once per read k
    (``hierarchical_topk@k``), every other architecture once (read k None: as trained)."""
    out = []
    for arch in cfg.architectures:
        if arch == HIERARCHICAL:
            out.extend((f"{HIERARCHICAL}@{k}", arch, k) for k in cfg.hierarchical_ks)
        else:
            out.append((arch, arch, None))
    return out


def spec(cfg: Study06Config, arch: str, d_sae: int, seed: int) -> SAESpec:
    """The SAE spec of one architecture: k for the TopK family, K = max(hierarchical_ks) for
    HierarchicalTopK, the Matryoshka prefixes and the Kronecker (m, n) from the config."""
    k = max(cfg.hierarchical_ks) if arch == HIERARCHICAL else cfg.k
    return registry.get(arch).spec(d_sae, k, seed, **_options(cfg, arch))


def sae_config(profile: Profile, l1_coefficient: float | None = None) -> SAEConfig:
    """The profile's SAE settings with this study's budget and learning rate (and, for the standard
    SAE, an L1 coefficient and `standard_lr` where the profile sets one)."""
    cfg = profile.study06
    lr = next(r for r in (cfg.standard_lr if l1_coefficient is not None else None, cfg.lr, profile.sae.lr) if r is not None)
    return dataclasses.replace(
        profile.sae,
        train_tokens=cfg.train_tokens,
        lr=lr,
        l1_coefficient=l1_coefficient if l1_coefficient is not None else profile.sae.l1_coefficient,
    )


def nearest_l0(l0_by_coefficient: Mapping[float, float], k: float) -> float:
    """The L1 coefficient whose measured L0 is nearest ``k`` in log ratio (|log L0/k|; ties: the
    larger coefficient, the sparser side). A coefficient with L0 = 0 (collapsed) is never nearest
    unless all are."""
    if not l0_by_coefficient:
        raise ValueError("l0_by_coefficient must hold at least one coefficient")
    if k <= 0:
        raise ValueError(f"k must be positive; got {k}")

    def distance(item):
        coef, l0 = item
        return (abs(np.log(l0 / k)) if l0 > 0 else np.inf, -coef)

    return min(l0_by_coefficient.items(), key=distance)[0]


@dataclass
class Trained:
    """Every SAE of the study: ``saes[arch]`` one per seed (config order), the training speed per
    (architecture, seed) and the standard SAE's L1 search."""

    saes: dict[str, list]
    speed: pd.DataFrame
    l1_search: pd.DataFrame
    l1_coefficient: float | None


def train_all(profile: Profile, acts, eval_x: torch.Tensor, store, progress: bool = True, runner=None) -> Trained:
    """Train (or load) every architecture × seed; the standard SAE's L1 coefficient is chosen on
    the first seed (:func:`nearest_l0` of held-out L0 to k) before its other seeds are trained.
    Both grids (the L1 search, then every SAE) go to the sweep `runner` (in process by default)."""
    from ..sweep import SAEJob
    from ..sweep import train_all as run_grid

    cfg = profile.study06
    d_sae = cfg.expansion_factor * acts.d
    saes, speed, l1_rows, l1 = {}, [], [], None
    if STANDARD in cfg.architectures:
        search = [
            SAEJob(acts, spec(cfg, STANDARD, d_sae, cfg.seeds[0]), sae_config(profile, coef), cfg.batch_size)
            for coef in cfg.l1_coefficients
        ]
        for coef, (sae, _) in zip(cfg.l1_coefficients, run_grid(search, store, runner, "study 6: L1 search")):
            rep = quality.sae_reconstruction_metrics(sae, eval_x)
            l1_rows.append({"l1_coefficient": coef, "l0": rep.l0, "explained_variance": rep.explained_variance})
        l1 = nearest_l0({r["l1_coefficient"]: r["l0"] for r in l1_rows}, cfg.k)
    grid = [(a, s) for a in cfg.architectures for s in cfg.seeds]
    jobs = [
        SAEJob(acts, spec(cfg, a, d_sae, s), sae_config(profile, l1 if a == STANDARD else None), cfg.batch_size) for a, s in grid
    ]
    for (arch, seed), (sae, art) in zip(grid, run_grid(jobs, store, runner, "study 6 SAEs")):
        saes.setdefault(arch, []).append(sae)
        info = json.loads((art.path / "training.json").read_text())
        speed.append({"architecture": arch, "seed": seed, "tokens_per_second": info["tokens_per_second"]})
    l1_search = pd.DataFrame(l1_rows, columns=["l1_coefficient", "l0", "explained_variance"])
    return Trained(saes, pd.DataFrame(speed), l1_search, l1)


def encoder(sae, read_k: int | None):
    """The encoder of a table row: the SAE's own, or HierarchicalTopK's top-``read_k`` prefix."""
    if read_k is None:
        return sae.encode
    return lambda x: sae.encode(x, k=read_k)


@dataclass(frozen=True)
class ProbeData:
    """What SAEBench's metrics need beyond the SAE, built once per layer: the sparse-probing texts
    (runs of one category) and the absorption examples with their LM probes."""

    starts: np.ndarray
    ends: np.ndarray
    labels: np.ndarray
    words: saebench.WordExamples
    letter_probes: saebench.LetterProbes
    residual_probing: pd.DataFrame
    """Sparse probing on the LM's own (mean-pooled) activations: the reference SAEBench reports."""


def probe_data(cfg: Study06Config, eval_set, tokenizer, seed: int = 0) -> ProbeData:
    """Texts for sparse probing (corpus categories as labels) and the vocabulary words' held-out
    occurrences with one first-letter probe per letter on the LM's activations."""
    x = eval_set.tensor()
    starts, ends, labels = saebench.text_runs(eval_set.categories, eval_set.n_ctx, cfg.probe_min_tokens)
    pooled = saebench.pool_runs(lambda b: b, x, starts, ends) if len(starts) else np.zeros((0, x.shape[1]))
    residual = saebench.sparse_probing(pooled, labels, cfg.probe_ks, cfg.probe_max_texts, cfg.probe_test_fraction, seed)
    words = saebench.word_examples(eval_set.tokens, saebench.alpha_words(tokenizer), cfg.absorption_max_occurrences, seed)
    probes = saebench.letter_probes(
        x[torch.as_tensor(words.rows)].numpy(), words, cfg.absorption_min_probe_f1, cfg.absorption_min_words
    )
    return ProbeData(starts, ends, labels, words, probes, residual)


def quality_and_stability(sae, read_k: int | None, eval_x: torch.Tensor, fraction, min_firings: int) -> tuple[dict, np.ndarray]:
    """``({explained_variance, l0, dead_fraction, stable}, live)`` of one SAE read at ``read_k``
    on held-out ``eval_x``: ``fraction`` is each latent's share of other seeds matched at τ
    (`seed_stability.stability_scores`); a latent firing fewer than ``min_firings`` times is dead;
    ``stable`` is the share of live latents matched in every other seed."""
    rep = quality.reconstruction_metrics(encoder(sae, read_k), sae.decode, eval_x.split(4096), sae.cfg.d_sae)
    cls = seed_stability.stability_class(fraction, rep.density * len(eval_x), min_firings)
    live = cls != "dead"
    return {
        "explained_variance": rep.explained_variance,
        "l0": rep.l0,
        "dead_fraction": float((~live).mean()),
        "stable": float((cls[live] == "stable").mean()) if live.any() else np.nan,
    }, live


def evaluate(
    trained: Trained, cfg: Study06Config, eval_x: torch.Tensor, splicer, probes: ProbeData, progress: bool = True
) -> pd.DataFrame:
    """One row per (variant, seed): quality (EV, L0, dead share, loss recovered), stability
    (``stable``: share of live latents matched in every other seed; ``mean_best``), within-seed
    ``duplicate_share`` (cosine ≥ ``duplicate_cosine`` to another latent of its dictionary),
    ``tokens_per_second`` (as measured when the SAE was trained: a cached SAE keeps the speed and
    machine load of its first run), sparse-probing accuracy per k (``probe_acc_k``, mean over categories)
    and absorption (``absorption``: mean absorption fraction over letters;
    ``full_absorption``)."""
    rows = []
    todo = [(v, s) for v in variants(cfg) for s in range(len(cfg.seeds))]
    scores = {a: seed_stability.stability_scores([m.W_dec for m in ms], cfg.tau) for a, ms in trained.saes.items()}
    dups = {a: [seed_stability.duplicate_share(m.W_dec, cfg.duplicate_cosine) for m in ms] for a, ms in trained.saes.items()}
    speed = trained.speed.set_index(["architecture", "seed"]).tokens_per_second
    x_words = eval_x[torch.as_tensor(probes.words.rows)]
    for (label, arch, read_k), s in tqdm(todo, desc="study 6 metrics", disable=not progress):
        sae, seed = trained.saes[arch][s], cfg.seeds[s]
        enc = encoder(sae, read_k)
        held_out, live = quality_and_stability(sae, read_k, eval_x, scores[arch].fraction[s], cfg.min_firings)
        ce = splicer.report(lambda a, enc=enc, sae=sae: sae.decode(enc(a)))
        row = {
            "variant": label,
            "architecture": arch,
            "read_k": read_k if read_k is not None else cfg.k,
            "seed": seed,
            **held_out,
            "loss_recovered": ce.loss_recovered,
            "mean_best": float(scores[arch].mean_best[s].numpy()[live].mean()) if live.any() else np.nan,
            "duplicate_share": dups[arch][s],
            "tokens_per_second": float(speed.loc[(arch, seed)]),
        }
        pooled = saebench.pool_runs(enc, eval_x, probes.starts, probes.ends)
        probing = saebench.sparse_probing(pooled, probes.labels, cfg.probe_ks, cfg.probe_max_texts, cfg.probe_test_fraction, 0)
        for k, acc in probing.groupby("k").accuracy.mean().items():
            row[f"probe_acc_{k}"] = acc
        absorb = saebench.absorption(
            enc, sae.W_dec, x_words, _local(probes.words), probes.letter_probes, cfg.absorption_max_k, cfg.absorption_f1_jump
        )
        row["absorption"] = float(absorb.mean_absorption_fraction.mean()) if len(absorb) else np.nan
        row["full_absorption"] = float(absorb.full_absorption_rate.mean()) if len(absorb) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _local(words: saebench.WordExamples) -> saebench.WordExamples:
    """The same examples indexing the gathered word rows (0..n-1) instead of the held-out set."""
    return dataclasses.replace(words, rows=np.arange(len(words.rows)))


def null_table(d_sae: int, eval_x: torch.Tensor, n_seeds: int, tau: float, seed: int = 0) -> dict[str, float]:
    """Study 1's null at this dictionary size: the stability (``fraction_stable``, ``pair_share``)
    of covariance-drawn dictionaries with no learned structure (every architecture shares F)."""
    cov = torch.cov(eval_x[:32768].double().T)
    decs = seed_stability.null_decoders("covariance", n_seeds, d_sae, cov, torch.Generator().manual_seed(seed))
    return seed_stability.null_stability(decs, tau)


def collapsed(per_seed: pd.DataFrame, duplicate_share: float) -> dict[str, str]:
    """Variants that collapsed, with why: mean within-seed duplicate share or dead share above
    ``duplicate_share`` (a collapsed dictionary matches across seeds for the wrong reason)."""
    out = {}
    for variant, g in per_seed.groupby("variant", sort=False):
        dup, dead = g.duplicate_share.mean(), g.dead_fraction.mean()
        if dup > duplicate_share:
            out[variant] = f"within-seed duplicates {dup:.2f} > {duplicate_share:g}"
        elif dead > duplicate_share:
            out[variant] = f"dead share {dead:.2f} > {duplicate_share:g}"
    return out


#: Equal EV and L0: the per-seed mean differences a comparison tolerates (the rule's premise).
EV_TOLERANCE = 0.02
L0_TOLERANCE = 0.25
"""|log(L0 candidate / L0 TopK)| at most log(1.25)."""


def l0_matched(l0: float, target: float, tolerance: float = L0_TOLERANCE) -> bool:
    """Whether ``l0`` is within a factor 1 + ``tolerance`` of ``target`` (either side)."""
    return bool(abs(np.log(l0 / target)) <= np.log1p(tolerance))


def off_target_l0(per_seed: pd.DataFrame, tolerance: float = L0_TOLERANCE) -> dict[str, str]:
    """Variants whose mean L0 misses the k they are read at (``read_k``) by more than a factor
    1 + ``tolerance`` (the stability rule's premise, :func:`l0_matched`): the table compares
    architectures at matched L0, so such a row is untested. It happens to the standard SAE when its
    L1 search cannot reach k in a short run (Adam's step bounds how far its L0 falls)."""
    out = {}
    for variant, g in per_seed.groupby("variant", sort=False):
        l0, k = g.l0.mean(), float(g.read_k.iloc[0])
        if not l0_matched(l0, k, tolerance):
            out[variant] = f"L0 {l0:.0f} vs k = {k:g}"
    return out


def untested_rows(per_seed: pd.DataFrame, duplicate_share: float) -> dict[str, str]:
    """Every row the table hatches and the stability rule leaves untested, with why: L0 off
    target (:func:`off_target_l0`) or collapsed (:func:`collapsed`, whose reason wins)."""
    return {**off_target_l0(per_seed), **collapsed(per_seed, duplicate_share)}


METRICS = (
    "explained_variance",
    "loss_recovered",
    "l0",
    "dead_fraction",
    "tokens_per_second",
    "stable",
    "duplicate_share",
    "absorption",
    "full_absorption",
)


def summary_table(per_seed: pd.DataFrame, null: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per variant (rows in first-seen order) and metric: mean, 95 % t-interval half-width over
    seeds and n, as columns ``<metric>``, ``<metric>_ci``; plus ``stable_null`` (the null's
    fraction stable) when given."""
    metrics = [m for m in METRICS if m in per_seed] + sorted(c for c in per_seed if c.startswith("probe_acc_"))
    rows = []
    for variant, g in per_seed.groupby("variant", sort=False):
        row = {"variant": variant, "n": len(g)}
        for m in metrics:
            v = g[m].to_numpy(dtype=float)
            if np.isfinite(v).any():
                mean, (lo, hi), _ = t_interval(v)
                row[m], row[f"{m}_ci"] = mean, (hi - lo) / 2
            else:
                row[m], row[f"{m}_ci"] = np.nan, np.nan
        if null is not None:
            row["stable_null"] = null["fraction_stable"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def stability_verdicts(
    per_seed: pd.DataFrame,
    candidates: Sequence[str],
    reference: str = REFERENCE,
    collapsed_variants: Mapping[str, str] | None = None,
    model: str = "",
) -> list[Verdict]:
    """Is each candidate's structure (HierarchicalTopK's nested prefix, KronSAE's heads) more
    reproducible across seeds than TopK at equal EV and L0?

    Rule (fixed before reading the numbers): per seed, Δ = live fraction stable of the candidate
    − TopK's (paired by seed: the same data order); 95 % t interval of Δ over seeds;
    :func:`decide` above 0; then Holm over the candidates on the two-sided p-values — an
    interval-side outcome whose Holm-adjusted p ≥ 0.05 becomes inconclusive. Premises: the
    candidate's mean EV within ``EV_TOLERANCE`` of TopK's and its mean L0 within a factor
    1 + ``L0_TOLERANCE``; otherwise inconclusive (not at equal EV and L0). A collapsed candidate
    or reference, a missing one, or fewer than 2 paired seeds: untested."""
    collapsed_variants = dict(collapsed_variants or {})
    ref = per_seed[per_seed.variant == reference].set_index("seed")
    found, pvals = [], []
    for cand in candidates:
        claim = f"{cand} is more reproducible across seeds than {reference} at equal EV and L0"
        paper = "not measured by either paper (open question, issue 20)"
        rule = (
            f"paired over seeds: Δ = fraction stable (live, τ) of {cand} − {reference}; 95 % t interval above 0 "
            f"(Holm over {len(candidates)} candidates, p < 0.05); premise |ΔEV| ≤ {EV_TOLERANCE}, L0 within ×{1 + L0_TOLERANCE}"
        )
        cur = per_seed[per_seed.variant == cand].set_index("seed")
        why = collapsed_variants.get(cand) or collapsed_variants.get(reference)
        seeds = sorted(set(cur.index) & set(ref.index))
        if cur.empty or ref.empty or why or len(seeds) < 2:
            reason = why or ("not run" if cur.empty or ref.empty else "fewer than 2 paired seeds")
            found.append(Verdict(claim, paper, f"{model}{reason}", "untested", rule))
            pvals.append(None)
            continue
        delta = cur.loc[seeds, "stable"].to_numpy(float) - ref.loc[seeds, "stable"].to_numpy(float)
        mean, interval, n = t_interval(delta)
        d_ev = float(cur.loc[seeds, "explained_variance"].mean() - ref.loc[seeds, "explained_variance"].mean())
        l0_ratio = float(cur.loc[seeds, "l0"].mean() / ref.loc[seeds, "l0"].mean())
        ours = (
            f"{model}Δ fraction stable {mean:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}] (n={n}); "
            f"{cand} {spread(cur.loc[seeds, 'stable'])} vs {reference} {spread(ref.loc[seeds, 'stable'])}; "
            f"ΔEV {d_ev:+.3f}, L0 ratio {l0_ratio:.2f}"
        )
        outcome = decide(interval, 0.0, "above")
        if abs(d_ev) > EV_TOLERANCE or not l0_matched(l0_ratio, 1.0):
            outcome, ours = "inconclusive", ours + " — not at equal EV and L0"
        found.append(Verdict(claim, paper, ours, outcome, rule, statistic=mean, interval=interval, n=n))
        pvals.append(t_pvalue(delta, 0.0, "two-sided"))
    tested = [p for p in pvals if p is not None]
    if tested:
        adjusted = iter(holm(tested))
        for i, p in enumerate(pvals):
            if p is None:
                continue
            adj = float(next(adjusted))
            v = found[i]
            if v.outcome in ("agrees", "disagrees") and adj >= 0.05:
                found[i] = dataclasses.replace(v, outcome="inconclusive", ours=f"{v.ours}; Holm-adjusted p = {adj:.3f}")
            else:
                found[i] = dataclasses.replace(v, ours=f"{v.ours}; Holm-adjusted p = {adj:.3f}")
    return found


def headline_summary(figures_dirs: Mapping[str, Path | str], studies: Sequence[tuple[str, str]] = STUDIES) -> pd.DataFrame:
    """Every study's headline (its first verdict) on each model, next to the published number and
    with its outcome, read from ``<dir>/findings_<study>.json`` (not copied by hand). Columns:
    study, claim, paper, then ``<model>`` (our number) and ``<model> outcome`` per model; a model
    without the study's findings says "not run"."""
    rows = []
    for study, title in studies:
        records = {}
        for label, folder in figures_dirs.items():
            path = Path(folder) / f"findings_{study}.json"
            if path.exists():
                records[label] = json.loads(path.read_text())["verdicts"]
        if not records:
            continue
        head = next(iter(records.values()))[0]
        row = {"study": title, "claim": head["claim"], "paper": head["paper"]}
        for label in figures_dirs:
            match = [v for v in records.get(label, []) if v["claim"] == head["claim"]]
            row[label] = match[0]["ours"] if match else "not run"
            row[f"{label} outcome"] = match[0]["outcome"] if match else "untested"
        rows.append(row)
    return pd.DataFrame(rows)
