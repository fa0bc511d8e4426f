"""Study 3's figures, one function per figure; notebook 03 calls them and says what to read off
each. Each returns the matplotlib Figure (the notebook saves it)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .hierarchical import CUT, HIERARCHICAL

STYLE = {
    "topk": ("C0", "o"),
    "batchtopk": ("C1", "s"),
    "matryoshka_batchtopk": ("C2", "^"),
    "multi_topk": ("C4", "v"),
    HIERARCHICAL: ("C3", "*"),
    CUT: ("C7", "x"),
}


def _style(model: str) -> tuple[str, str]:
    return STYLE.get(model, ("C8", "d"))


def _tokens_label(t: float) -> str:
    return f"{t / 2**20:g}M" if t >= 2**20 else f"{t / 1024:g}k"


def pareto(summary: pd.DataFrame, gap_summary: pd.DataFrame, title: str) -> plt.Figure:
    """03_pareto: EV and loss recovered against measured L0 per model (mean ± sd over seeds), and
    the gap to the front per k. A model measured at two or fewer k is drawn as points without a
    connecting line: a line between two points would imply values (and a crossover) at L0s
    never measured. ``summary`` from :func:`hierarchical.pareto_summary`; ``gap_summary`` indexed
    by k with (column, "mean"/"std") pairs for "L0", "ΔEV" and "Δ loss recovered"."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    for model, g in summary.groupby("model"):
        color, marker = _style(model)
        ls = "none" if len(g) <= 2 else ("--" if model == CUT else "-")
        for ax, col in zip(axes[:2], ["ev", "lr"]):
            ax.errorbar(
                g.l0,
                g[col],
                yerr=g[f"{col}_sd"],
                marker=marker,
                ls=ls,
                color=color,
                label=model,
                ms=9 if marker == "*" else 5,
                capsize=2,
            )
    for ax, col, label in zip(axes[:2], ["ev", "lr"], ["explained variance (about the mean)", "loss recovered"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L0 (active latents per token, measured)")
        ax.set_ylabel(label)
        shown = summary[summary.model != CUT][col]  # the cut model may fall far below: it must not set the scale
        pad = 0.08 * (shown.max() - shown.min()) or 0.01
        ax.set_ylim(shown.min() - pad, shown.max() + pad)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    g, l0 = gap_summary, gap_summary[("L0", "mean")]
    ls = "none" if len(g) <= 2 else "-"
    for col, marker, color, ms in [("ΔEV", "*", "C3", 9), ("Δ loss recovered", "o", "C5", 6)]:
        axes[2].errorbar(
            l0, g[(col, "mean")], yerr=g[(col, "std")], marker=marker, color=color, ms=ms, capsize=3, ls=ls, label=col
        )
    axes[2].axhline(0, color="grey", lw=1)
    axes[2].set_xscale("log", base=2)
    axes[2].set_xlabel("L0 of HierarchicalTopK (measured)")
    axes[2].set_ylabel("hierarchical − best separate at equal L0")
    axes[2].legend(fontsize=8)
    axes[2].set_title("the gap to the front (± sd over seeds)")
    fig.suptitle(title + "\n(error bars: sd over seeds; no line where a model has only two k: nothing was measured between)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _mean_sd(g: pd.DataFrame, col: str) -> pd.DataFrame:
    return g.groupby("tokens")[col].agg(["mean", "std"]).reset_index()


def budget_sweep(sweep: pd.DataFrame, study_tokens: int, title: str) -> plt.Figure:
    """03_budget_sweep, small multiples: one column per k. Top row: held-out EV of TopK trained
    at k and of HierarchicalTopK encoded at k against training tokens; bottom row: their gap at
    equal L0 (shared y axis, zero line). The last column draws EV against k at each budget
    (hierarchical solid, TopK dashed), where a hierarchical EV that falls as k grows shows.
    Error bars are the sd over seeds where the sweep has several (a ``seed`` column)."""
    ks = sorted(sweep.k.unique())
    budgets = sorted(sweep.tokens.unique())
    seeded = "seed" in sweep and sweep.seed.nunique() > 1
    fig, axes = plt.subplots(2, len(ks) + 1, figsize=(3.1 * (len(ks) + 1), 6.2), squeeze=False)
    for j, k in enumerate(ks):
        g = sweep[sweep.k == k]
        top, bottom = axes[0, j], axes[1, j]
        for col, (color, marker), label in [
            ("EV best separate", _style("topk"), "TopK trained at k"),
            ("EV hierarchical", _style(HIERARCHICAL), "hierarchical at k"),
        ]:
            s = _mean_sd(g, col)
            top.errorbar(
                s.tokens, s["mean"], yerr=s["std"] if seeded else None, marker=marker, color=color, capsize=2, label=label
            )
        d = _mean_sd(g, "ΔEV")
        bottom.errorbar(d.tokens, d["mean"], yerr=d["std"] if seeded else None, marker="*", color="C3", ms=8, capsize=2)
        bottom.axhline(0, color="grey", lw=1)
        top.set_title(f"k = {k}")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [_tokens_label(t) for t in budgets], fontsize=7)
            ax.axvline(study_tokens, ls=":", color="grey")
        bottom.set_xlabel("training tokens per SAE")
    axes[0, 0].set_ylabel("held-out EV")
    axes[1, 0].set_ylabel("ΔEV hierarchical − TopK\nat equal L0")
    axes[0, 0].legend(fontsize=7)
    lo = min(ax.get_ylim()[0] for ax in axes[1, :-1])
    hi = max(ax.get_ylim()[1] for ax in axes[1, :-1])
    for ax in axes[1, :-1]:
        ax.set_ylim(lo, hi)
    last = axes[0, -1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    for color, t in zip(colors, budgets):
        g = sweep[sweep.tokens == t].groupby("k")[["EV hierarchical", "EV best separate"]].mean()
        last.plot(g.index, g["EV hierarchical"], "*-", color=color, label=_tokens_label(t))
        last.plot(g.index, g["EV best separate"], "o--", color=color, ms=3, lw=0.8)
    last.set_xscale("log", base=2)
    last.set_xticks(ks, [str(k) for k in ks])
    last.set_xlabel("k")
    last.set_title("EV against k per budget\n(solid: hierarchical, dashed: TopK)", fontsize=8)
    last.legend(fontsize=6, title="tokens", title_fontsize=6)
    axes[1, -1].axis("off")
    n_seeds = sweep.seed.nunique() if "seed" in sweep else 1
    fig.suptitle(
        f"{title}\n(one SAE per point and seed, {n_seeds} seed(s){', ± sd over seeds' if seeded else ', no error bars: one seed'}; "
        "dotted: the notebook's training length)"
    )
    fig.tight_layout()
    return fig


def interpretability_proxies(prox: pd.DataFrame, n_top: int) -> plt.Figure:
    """03_interpretability_proxies: category AUROC and top-token entropy per model against k
    (mean ± sd over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    pa = prox.groupby(["model", "k"]).agg(["mean", "std"]).reset_index()
    for model, g in pa.groupby("model"):
        color, marker = _style(model)
        for ax, col in zip(axes, ["category_auroc", "top_token_entropy"]):
            ax.errorbar(g.k, g[(col, "mean")], yerr=g[(col, "std")], marker=marker, color=color, label=model, capsize=2)
    axes[0].set_ylabel("category AUROC ↑\n(best latent, mean over categories)")
    axes[1].set_ylabel(f"top-{n_top} token entropy ↓\n(bits, mean over live latents)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (latents kept per token)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Interpretability proxies at each k (↑ / ↓: which way is better; ± sd over seeds)")
    fig.tight_layout()
    return fig
