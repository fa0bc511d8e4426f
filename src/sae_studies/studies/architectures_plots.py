"""Figures of study 6 (notebook 06): one function per figure, each returning the figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analyses.intervals import t_interval

#: (column, label, higher is better) of the heat-map table, in reading order.
HEATMAP_METRICS = (
    ("explained_variance", "EV", True),
    ("loss_recovered", "loss\nrecovered", True),
    ("l0", "L0", None),
    ("dead_fraction", "dead\nshare", False),
    ("tokens_per_second", "train\ntokens/s", True),
    ("stable", "fraction\nstable", True),
    ("duplicate_share", "within-seed\nduplicates", False),
    ("probe_acc_1", "sparse\nprobe k=1", True),
    ("probe_acc_5", "sparse\nprobe k=5", True),
    ("absorption", "absorption", False),
)


def _fmt(value: float, ci: float, column: str) -> str:
    if not np.isfinite(value):
        return "n/a"
    if column == "tokens_per_second":
        return f"{value / 1000:.1f}k\n±{ci / 1000:.1f}k" if np.isfinite(ci) else f"{value / 1000:.1f}k"
    if column == "l0":
        return f"{value:.1f}\n±{ci:.1f}" if np.isfinite(ci) else f"{value:.1f}"
    return f"{value:.3f}\n±{ci:.3f}" if np.isfinite(ci) else f"{value:.3f}"


def untested_tag(untested: Mapping[str, str] | Sequence[str], variant: str) -> str:
    """How a figure names an untested row: "mostly dead" where ``architectures.collapsed`` gave a
    dead share as the reason (a HierarchicalTopK prefix well below K leaves most latents unused by
    design), "L0 off target" where ``architectures.off_target_l0`` did, else "collapsed"
    (within-seed duplicates, or no reason given)."""
    why = untested.get(variant, "") if isinstance(untested, Mapping) else ""
    if why.startswith("L0"):
        return "L0 off target"
    return "mostly dead" if why.startswith("dead share") else "collapsed"


def architecture_heatmap(summary: pd.DataFrame, untested: Mapping[str, str] | Sequence[str] = (), title: str = "") -> plt.Figure:
    """Architectures (rows) × metrics (columns): each cell the mean over seeds ± the 95 % t
    half-width; colour = the column's rank scaled 0..1 with green = better (L0: grey, it is matched,
    not scored). Rows in ``untested`` (``architectures.collapsed``: variant → why) are hatched and
    marked with :func:`untested_tag`."""
    cols = [(c, lab, good) for c, lab, good in HEATMAP_METRICS if c in summary]
    n_rows, n_cols = len(summary), len(cols)
    colour = np.full((n_rows, n_cols), np.nan)
    for j, (c, _, good) in enumerate(cols):
        v = summary[c].to_numpy(dtype=float)
        if good is None or np.isfinite(v).sum() < 2:
            continue
        lo, hi = np.nanmin(v), np.nanmax(v)
        scaled = (v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5)
        colour[:, j] = scaled if good else 1 - scaled
    fig, ax = plt.subplots(figsize=(1.25 * n_cols + 2.5, 0.6 * n_rows + 1.6))
    # a softened scale (vmin / vmax beyond 0..1) keeps the printed numbers readable on every cell
    ax.imshow(np.ma.masked_invalid(colour), cmap="RdYlGn", vmin=-0.4, vmax=1.4, aspect="auto")
    ax.imshow(np.where(np.isnan(colour), 0.12, np.nan), cmap="Greys", vmin=0, vmax=1, aspect="auto")
    for i, variant in enumerate(summary.index):
        # an untested row is hatched; its numbers sit on a pale box so the hatching does not cross them
        box = dict(facecolor="white", alpha=0.8, lw=0, pad=1.5) if variant in untested else None
        for j, (c, _, _) in enumerate(cols):
            text = _fmt(summary.iloc[i][c], summary.iloc[i].get(f"{c}_ci", np.nan), c)
            ax.text(j, i, text, ha="center", va="center", fontsize=7, bbox=box)
        if variant in untested:
            ax.add_patch(plt.Rectangle((-0.5, i - 0.5), n_cols, 1, fill=False, hatch="//", edgecolor="0.45", lw=0))
    ax.set_xticks(range(n_cols), [lab for _, lab, _ in cols], fontsize=8)
    ax.set_yticks(
        range(n_rows), [f"{v} ({untested_tag(untested, v)})" if v in untested else v for v in summary.index], fontsize=8
    )
    ax.xaxis.tick_top()
    ax.grid(False)
    n = int(summary["n"].min()) if "n" in summary else None
    ax.set_title(title or f"Every architecture at matched L0 and F (mean ± 95 % t half-width over {n} seeds)", pad=40)
    fig.tight_layout()
    return fig


def stability_bars(
    summary: pd.DataFrame, null: float | None = None, untested: Mapping[str, str] | Sequence[str] = ()
) -> plt.Figure:
    """Fraction stable (live latents matched at cosine ≥ τ in every other seed) per architecture
    with 95 % t intervals over seeds, beside EV; the dashed line is the covariance null."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(summary) + 1.8), sharey=True)
    y = np.arange(len(summary))
    colors = ["0.7" if v in untested else "C0" for v in summary.index]
    a1.barh(y, summary.stable, xerr=summary.get("stable_ci"), color=colors, capsize=3)
    if null is not None:
        a1.axvline(null, ls="--", color="k", lw=1, label=f"covariance null {null:.3f}")
        a1.legend(loc="lower right", fontsize=8)
    a1.set_yticks(y, summary.index)
    a1.invert_yaxis()
    a1.set_xlabel("fraction stable (live latents, every other seed, cosine ≥ τ)")
    a2.barh(y, summary.explained_variance, xerr=summary.get("explained_variance_ci"), color=colors, capsize=3)
    a2.set_xlabel("explained variance (held out)")
    lo = float(np.nanmin(summary.explained_variance - summary.get("explained_variance_ci", 0)))
    a2.set_xlim(max(0.0, lo - 0.05), 1.0)
    fig.suptitle("Seed stability by architecture, at matched L0 and dictionary size (grey: collapsed or mostly dead, untested)")
    fig.tight_layout()
    return fig


def steering_handles(
    summary: pd.DataFrame, pairs: pd.DataFrame, themes: Sequence[str], margin: float, scales: Sequence[float] = ()
) -> plt.Figure:
    """06_steering_handles: per theme one panel, the combined score (theme × coherence, mean over
    prompts × samples × strengths) of each handle — stable feature, unstable feature, unstable
    subspace — one line per SAE seed (the pairs the rule compares) with its 95 % interval over
    generations; dotted: the unsteered baseline. Last panel: the paired differences d1 = stable −
    unstable and d2 = stable − subspace over every (theme, seed), with their 95 % t intervals,
    0 and the non-inferiority margin of d2 (dashed)."""
    from .architectures_steering import HANDLES

    themes = [t for t in themes if t in set(summary.theme)]
    fig, axes = plt.subplots(1, len(themes) + 1, figsize=(3.0 * (len(themes) + 1) + 0.6, 3.9), squeeze=False)
    axes = axes[0]
    seeds = sorted(s for s in summary.sae_seed.dropna().unique())
    x = np.arange(len(HANDLES))
    for ax, theme in zip(axes, themes):
        part = summary[summary.theme == theme]
        base = part[part.handle == "none"]
        if len(base):
            ax.axhline(float(base.combined.mean()), color="grey", ls=":", lw=1.2, label="unsteered")
        for i, seed in enumerate(seeds):
            cur = part[part.sae_seed == seed].set_index("handle").reindex(list(HANDLES))
            if cur.combined.isna().all():
                continue
            dx = (i - (len(seeds) - 1) / 2) * 0.08
            ax.errorbar(
                x + dx, cur.combined, yerr=cur.combined_ci, marker="o", capsize=3, color=f"C{i}", label=f"SAE seed {int(seed)}"
            )
        ax.set_xticks(x, ["stable\nfeature", "unstable\nfeature", "unstable\nsubspace"], fontsize=8)
        ax.set_xlim(-0.4, len(HANDLES) - 0.6)
        # a theme the rule leaves out (unsteered score above study 5's ceiling) is drawn, marked
        ax.set_title(theme if theme in set(pairs.get("theme", ())) else f"{theme}\n(not judged)")
    axes[0].set_ylabel("combined score = theme × coherence")
    ax = axes[-1]
    for j, col in enumerate(("d1", "d2")):
        d = pairs[col].to_numpy(float) if col in pairs else np.array([])
        d = d[np.isfinite(d)]
        ax.plot(np.full(len(d), j) + np.linspace(-0.12, 0.12, len(d)), d, "o", color="0.6", ms=4)
        if len(d) >= 2:
            mean, (lo, hi), _ = t_interval(d)
            ax.errorbar([j + 0.25], [mean], yerr=[[mean - lo], [hi - mean]], fmt="s", color="k", capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.hlines(margin, 0.6, 1.5, color="C2", ls="--", lw=1.5)
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, -0.2 * margin), max(hi, 1.4 * margin))
    ax.set_xticks([0, 1], ["d1 = stable −\nunstable", "d2 = stable −\nsubspace"], fontsize=8)
    ax.set_xlim(-0.5, 1.6)
    ax.set_ylabel("paired difference in combined score")
    ax.set_title(f"all {len(pairs)} (theme, seed) pairs\nblack: 95 % t interval\ndashed: d2's margin +{margin:g}", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.45, -0.01))
    at = f" at s = {', '.join(f'{s:g}' for s in scales)} × median residual norm" if len(scales) else ""
    fig.suptitle(f"Steering handles{at}\nmean over prompts × samples × strengths; 95 % intervals over generations", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
