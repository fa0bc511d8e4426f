"""The ladder figure every study draws: its read quantities against training tokens, one line per
group (architecture), mean over seeds with ± sd error bars, a dashed null where there is one and
a dotted line at the budget the study's verdicts read."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

__all__ = ["plot_ladder", "plot_lr_sweep"]


def plot_ladder(
    table: pd.DataFrame,
    quantities: Mapping[str, str],
    *,
    by: str = "architecture",
    nulls: Mapping[str, str] | None = None,
    null_label: str = "clipped-covariance",
    read_at: int | None = None,
    read_label: str = "verdicts read here",
    title: str = "",
    group_label: str = "{}",
    reference: Mapping[str, float] | None = None,
    ncols: int | None = None,
    x_label: str = "training tokens per SAE",
    symlog: Mapping[str, float] | None = None,
) -> plt.Figure:
    """One panel per column of ``quantities`` (column → axis label) of a ladder table with
    ``tokens``, ``seed`` and ``by`` columns. ``nulls`` maps a quantity to a column holding its
    null level (drawn dashed, named ``null_label`` in the legend); ``read_at`` marks the tokens the
    verdicts read (dotted, named ``read_label``). ``group_label`` formats each group's legend entry (e.g. "k = {}");
    ``reference`` maps a quantity to a level drawn as a thin grey line (e.g. 0 for a gap).
    ``ncols`` wraps the panels into rows of that many (default: one row). ``symlog`` maps a quantity
    to the half-width of a linear band around 0 on a symmetric-log y axis, used where the quantity
    leaves that band by more than a decade: a gap that starts large and then settles near 0 (a fast
    start one architecture loses later) stays readable at both ends."""
    missing = ({"tokens", "seed", by} | set(quantities) | set((nulls or {}).values())) - set(table.columns)
    if missing:
        raise ValueError(f"the ladder table lacks columns {sorted(missing)}; it has {sorted(table.columns)}")
    ncols = min(ncols or len(quantities), len(quantities))
    nrows = -(-len(quantities) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows + 0.3), squeeze=False)
    for ax in axes.flat[len(quantities) :]:
        ax.set_visible(False)
    for ax, (col, label) in zip(axes.flat, quantities.items()):
        if symlog and col in symlog and table[col].abs().max() > 10 * symlog[col]:
            # before drawing, so the limits fit the scale; only where the data leave the band by a decade
            ax.set_yscale("symlog", linthresh=symlog[col])
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        for i, (group, g) in enumerate(table.groupby(by, sort=False)):
            s = g.groupby("tokens")[col]
            ax.errorbar(
                s.mean().index,
                s.mean(),
                yerr=s.std(ddof=1),
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=group_label.format(group),
            )
        if reference and col in reference:
            ax.axhline(reference[col], color="grey", lw=0.8)
        if nulls and col in nulls:
            ax.axhline(table[nulls[col]].iloc[0], ls="--", color="k", lw=1, label=f"{null_label} null")
        if read_at is not None:
            ax.axvline(read_at, ls=":", color="grey", label=read_label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
    legend = {}  # every panel's entries once (a null drawn in one panel only is still named)
    for ax in axes.flat[: len(quantities)]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 / nrows, 1, 1))
    return fig


LR_GAP_LINEAR = 0.01
"""Below this EV gap the rate figure's axis is linear; a sweep with a far larger gap (a collapsed
rate) draws the rest on a log scale, so the small gaps near the best stay readable."""


def plot_lr_sweep(sweep: pd.DataFrame, *, by: str = "architecture", study_lr: float | None = None, title: str = "") -> plt.Figure:
    """A learning-rate sweep (columns ``lr``, ``explained_variance``, ``chosen``, ``by``): held-out
    EV against the rate, one line per group, its best rate starred and the rate the study trains
    at dotted. EV is drawn as the gap to each group's best (0 at the star), so groups whose EV
    differs by more than the rate moves it stay readable on one axis; symmetric-log beyond
    :data:`LR_GAP_LINEAR` when some rate collapsed."""
    missing = {"lr", "explained_variance", "chosen", by} - set(sweep.columns)
    if missing:
        raise ValueError(f"the sweep table lacks columns {sorted(missing)}; it has {sorted(sweep.columns)}")
    fig, ax = plt.subplots(figsize=(7.6, 3.4))
    gap = sweep.explained_variance - sweep.groupby(by).explained_variance.transform("max")
    if gap.abs().max() > 10 * LR_GAP_LINEAR:  # a collapse would flatten every other gap: linear near 0, log beyond
        ax.set_yscale("symlog", linthresh=LR_GAP_LINEAR)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for i, (group, g) in enumerate(sweep.assign(gap=gap).groupby(by, sort=False)):
        g = g.sort_values("lr")
        best = g[g.chosen].iloc[0]
        ax.plot(g.lr, g.gap, marker="o", color=f"C{i}", label=f"{group} (best EV {best.explained_variance:.3f})")
        ax.plot([best.lr], [0.0], marker="*", ms=14, color=f"C{i}", ls="none")
    if study_lr is not None:
        ax.axvline(study_lr, ls=":", color="grey", label=f"the study's rate {study_lr:g}")
    ax.set_xscale("log", base=2)
    rates = sorted(set(sweep.lr))
    ax.set_xticks(rates, [f"{r:g}" for r in rates])  # the swept rates, not powers of 2
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("learning rate (constant phase)")
    ax.set_ylabel("held-out EV − the group's best EV")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the axes, clear of the data
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
