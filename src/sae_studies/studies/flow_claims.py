"""Study 5's verdict rules (fixed before looking at the numbers): each turns the tables of
:mod:`sae_studies.studies.flow` into a :class:`~sae_studies.studies.verdicts.Verdict`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .flow import PAPER_DEACTIVATION
from .verdicts import Verdict, per_group_outcome, spread

# --------------------------------------------------------------------------------------------
# verdict rules (fixed before looking at the numbers)
# --------------------------------------------------------------------------------------------


def verdict_persistence(
    real_median: Mapping[int, Sequence[float]], null_high: Mapping[int, Sequence[float]], model: str
) -> Verdict:
    """Residual features have residual predecessors above chance: per layer, the median s(R) of
    live features (mean over SAE seeds) must exceed the null dictionary's ``null_quantile`` of
    s(R) (mean over seeds). Values are one number or one per seed."""
    real = {layer: np.atleast_1d(np.asarray(v, float)) for layer, v in real_median.items()}
    null = {layer: np.atleast_1d(np.asarray(v, float)) for layer, v in null_high.items()}
    ok = {f"layer {layer}": real[layer].mean() > null[layer].mean() for layer in real}
    outcome, detail = per_group_outcome(ok)
    ours = "; ".join(f"L{layer}: median s(R) {spread(real[layer], '.2f')} vs null {spread(null[layer], '.2f')}" for layer in real)
    return Verdict(
        claim="Residual features persist across layers: each has a previous-layer residual match far above chance",
        paper="s(R) distributions high in Gemma-2-2B / GPT-2 (figures; no single number)",
        ours=f"{ours} ({model}; {detail})",
        outcome=outcome,
        rule="agrees if the median s(R) of live features beats the null's high quantile at every layer; partly at some",
    )


def verdict_deactivation_level(change: Sequence[float], success: Sequence[float], tol: float = 0.15) -> Verdict:
    """Top-1 cosine deactivation reproduces the published level: mean change 0.75 and success
    65 %, each within ``tol`` (absolute); both → agrees, one → partly."""
    pc, ps = PAPER_DEACTIVATION["top-1 cosine"]
    hits = [abs(np.mean(change) - pc) <= tol, abs(np.mean(success) - ps) <= tol]
    outcome = "agrees" if all(hits) else "partly" if any(hits) else "disagrees"
    return Verdict(
        claim="Removing the top-1 cosine predecessor switches a residual feature off",
        paper=f"mean activation change {pc}, success {ps:.0%} (Gemma-2-2B)",
        ours=f"change {spread(change, '.2f')}, success {spread(success, '.2f')} over SAE seeds",
        outcome=outcome,
        rule=f"agrees if both are within ±{tol} of the paper's; partly if one is",
    )


def verdict_top1_vs_exhaustive(top1: Sequence[float], exhaustive: Sequence[float], min_ratio: float = 0.8) -> Verdict:
    """Data-free top-1 matching finds most of what exhaustive search finds: ratio of mean changes
    (top-1 / exhaustive) at least ``min_ratio`` (paper 0.75 / 0.83 = 0.90)."""
    ratio = np.asarray(top1, float) / np.asarray(exhaustive, float)
    pc, ec = PAPER_DEACTIVATION["top-1 cosine"][0], PAPER_DEACTIVATION["exhaustive"][0]
    return Verdict(
        claim="Top-1 cosine matching finds nearly the best single predecessor (exhaustive search)",
        paper=f"change {pc} vs {ec}: ratio {pc / ec:.2f}",
        ours=f"ratio {spread(ratio, '.2f')} over SAE seeds (top-1 {spread(top1, '.2f')}, exhaustive {spread(exhaustive, '.2f')})",
        outcome="agrees" if np.mean(ratio) >= min_ratio else "disagrees",
        rule=f"agrees if the mean ratio is at least {min_ratio}",
    )


def verdict_top1_vs_random(diff: Sequence[float]) -> Verdict:
    """Cosine rank matters: per feature, change(top-1) − change(random among top 5); agrees if the
    mean difference is positive by more than 2 standard errors."""
    d = np.asarray(diff, float)
    d = d[np.isfinite(d)]
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
    return Verdict(
        claim="A random choice among the top-5 matches deactivates much less than the top-1 match",
        paper="random among top-5 much worse than top-1 (Gemma-2-2B)",
        ours=f"paired difference in change {d.mean():.3f} ± {se:.3f} (se, n={len(d)} features)",
        outcome="agrees" if d.mean() > 2 * se else "disagrees",
        rule="agrees if the mean paired difference exceeds 2 standard errors",
    )


def judged_themes(best: pd.DataFrame, ceiling: float | None) -> pd.DataFrame:
    """The themes a steering verdict judges: those whose unsteered theme score is at most
    ``ceiling`` (None: all). A theme the unsteered model already writes (the corpus's generic
    register) cannot be raised, so it is reported but not judged."""
    return best if ceiling is None else best[best["base_theme"] <= ceiling]


def verdict_steering(best: pd.DataFrame, claim: str, paper: str, ceiling: float | None = 0.5) -> Verdict:
    """Per judged theme (:func:`judged_themes`): the best steered combined score beats the
    unsteered baseline by 2 standard errors (``best`` from :func:`best_vs_baseline`)."""
    judged = judged_themes(best, ceiling)
    ok = {r.theme: r.combined - r.base > 2 * np.hypot(r.combined_se, r.base_se) for r in judged.itertuples()}
    outcome, detail = per_group_outcome(ok)
    ours = "; ".join(
        f"{r.theme} {r.combined:.2f}±{r.combined_se:.2f} vs {r.base:.2f}±{r.base_se:.2f} (unsteered theme score "
        f"{r.base_theme:.2f})"
        for r in best.itertuples()
    )
    skipped = sorted(set(best["theme"]) - set(judged["theme"]))
    note = f"; not judged (unsteered theme score > {ceiling}): {', '.join(skipped)}" if skipped else ""
    return Verdict(
        claim=claim,
        paper=paper,
        ours=f"{ours} ({detail}{note})",
        outcome=outcome,
        rule="per theme: best steered combined score − baseline > 2 se; agrees for every judged theme, partly for some"
        + (f"; themes whose unsteered theme score exceeds {ceiling} are not judged" if ceiling is not None else ""),
    )


def verdict_multilayer(single: float, multi: float) -> Verdict:
    """Multi-layer (constant schedule) steering is useful over a wider range of s than
    single-layer: useful range (share of the s grid beating the baseline) larger → agrees, equal
    and non-zero → partly."""
    outcome = "agrees" if multi > single else "partly" if multi == single and multi > 0 else "disagrees"
    return Verdict(
        claim="Multi-layer steering along the flow graph is less sensitive to the strength s than single-layer",
        paper="cumulative multi-layer steering less sensitive to hyperparameters (LLM-judged, Gemma-2-2B)",
        ours=f"useful share of the s grid (mean over themes): multi {multi:.2f} vs single {single:.2f}",
        outcome=outcome,
        rule="agrees if multi's useful range is larger; partly if equal and non-zero",
    )
