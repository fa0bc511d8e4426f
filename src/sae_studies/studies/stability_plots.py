"""Study 1's figures: one function per figure, each returning the matplotlib figure (the notebook
saves it and says what to read off it). Colours are fixed per stability class and per layer, so
a class has the same colour in every panel of every figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

#: One colour per stability class, in every figure.
CLASS_COLORS = {"stable": "C0", "partial": "C2", "unstable": "C1", "dead": "0.6"}
#: Marker of each null kind.
NULL_MARKERS = {"covariance": "v", "clipped": "^", "isotropic_span": "s", "init": "x"}


def _layer_color(layers: Sequence[int], layer: int) -> str:
    return f"C{4 + list(layers).index(layer)}"


def fraction_stable(per_seed: pd.DataFrame, nulls: pd.DataFrame, d: int, tau: float, n_seeds: int, chosen: str) -> plt.Figure:
    """Fraction stable (live latents, mean ± sd over seeds) against dictionary size: one row per
    layer, one column per architecture, each panel with **its own layer's** nulls (hollow grey
    markers; the chosen null filled black, on top); dashed: the all-latent share."""
    archs, layers = list(dict.fromkeys(per_seed.architecture)), sorted(per_seed.layer.unique())
    fig, axes = plt.subplots(len(layers), len(archs), figsize=(3.5 * len(archs), 2.9 * len(layers)), squeeze=False, sharex=True)
    for i, layer in enumerate(layers):
        for j, arch in enumerate(archs):
            ax = axes[i, j]
            s = per_seed[(per_seed.architecture == arch) & (per_seed.layer == layer)].groupby("expansion")
            m, sd, al = s.stable.mean(), s.stable.std(), s.stable_all.mean()
            ax.errorbar(m.index * d, m, yerr=sd, marker="o", color="C0", capsize=3, label="trained, live latents")
            ax.plot(al.index * d, al, ls="--", color="C0", alpha=0.6, label="trained, all latents")
            for kind, marker in NULL_MARKERS.items():
                nl = nulls[(nulls.architecture == arch) & (nulls.layer == layer) & (nulls.null == kind)].sort_values("expansion")
                if len(nl):
                    # several nulls sit at 0: the chosen one is drawn filled and on top, the others hollow
                    is_chosen = kind == chosen
                    ax.plot(
                        nl.expansion * d,
                        nl.fraction_stable,
                        marker=marker,
                        ls=":",
                        ms=7 if is_chosen else 8,
                        mfc="k" if is_chosen else "none",
                        zorder=4 if is_chosen else 2,
                        color="k" if is_chosen else "0.6",
                        label=f"null: {kind}" + (" (chosen)" if is_chosen else ""),
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(per_seed.expansion.unique() * d), [str(x) for x in sorted(per_seed.expansion.unique() * d)])
            ax.minorticks_off()
            ax.set_ylim(-0.02, max(ax.get_ylim()[1], 0.05))
            ax.set_title(f"{arch}, layer {layer}", fontsize=9)
            if i == len(layers) - 1:
                ax.set_xlabel("dictionary size (latents)")
            if j == 0:
                ax.set_ylabel(f"fraction stable\n({n_seeds - 1} other seeds, τ = {tau})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def stability_histograms(
    feats: pd.DataFrame, null_samples: dict[tuple[int, int], np.ndarray], tau: float, n_seeds: int, bins: int = 40
) -> plt.Figure:
    """One panel per trained (architecture, size): the mean best cosine of live latents per layer
    (step histograms) beside **that layer's** chosen-null distribution (filled, same colour) and
    its 99th percentile (dotted); τ dashed grey. The x range follows the data and the nulls; no
    panel is drawn for a cell that was not trained."""
    live = feats[feats["class"] != "dead"]
    layers = sorted(live.layer.unique())
    cells = list(live.groupby(["architecture", "expansion"], sort=False).groups)
    n_feat = feats.groupby(["layer", "architecture", "expansion", "seed"]).size()
    ncols = min(3, len(cells))
    nrows = -(-len(cells) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 2.8 * nrows), squeeze=False)
    values = [live.mean_best.to_numpy()] + [v for v in null_samples.values()]
    lo = float(min(np.quantile(v, 0.001) for v in values if len(v)))
    edges = np.linspace(max(lo - 0.02, -1.0), 1.0, bins + 1)
    for ax, (arch, ef) in zip(axes.flat, cells):
        sub = live[(live.architecture == arch) & (live.expansion == ef)]
        for layer in layers:
            color, v = _layer_color(layers, layer), sub[sub.layer == layer].mean_best
            if not len(v):
                continue
            ax.hist(v, bins=edges, histtype="step", density=True, lw=1.6, color=color, label=f"layer {layer}")
            key = (layer, int(n_feat.loc[(layer, arch, ef)].iloc[0]))
            if key in null_samples:
                ns = null_samples[key]
                ax.hist(ns, bins=edges, density=True, color=color, alpha=0.2, label=f"layer {layer} null")
                ax.axvline(np.quantile(ns, 0.99), color=color, ls=":", lw=1.6, label=f"layer {layer} null 99th pct")
        ax.axvline(tau, color="0.3", ls="--", lw=1, label=f"τ = {tau}")
        ax.set_title(f"{arch}, {ef}×", fontsize=9)
        ax.set_xlabel(f"mean best cosine to the {n_seeds - 1} other seed(s)")
        ax.set_ylabel("density")
    for ax in list(axes.flat)[len(cells) :]:
        ax.remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Per-feature stability of live latents against each layer's chosen null", fontsize=10)
    fig.tight_layout(rect=(0, 0.07 + 0.03 * (len(layers) > 2), 1, 1))
    return fig


def functional_asymmetry(ablations: pd.DataFrame) -> plt.Figure:
    """Claim 2: per (architecture, layer), the stable class's total FVU / CE increase when
    ablated (large markers, one per seed) against size-matched random sets of live latents
    (small dark dots) and their 95th percentile per seed (short bars)."""
    groups = list(ablations.groupby(["architecture", "layer"]).groups)
    quantities = [q for q in ("fvu", "ce") if ablations[f"d_{q}"].notna().any()]
    width = max(5.5, 0.9 * len(groups) + 1.5)
    fig, axes = plt.subplots(1, len(quantities), figsize=(width * len(quantities), 4.2), squeeze=False)
    for ax, q in zip(axes[0], quantities):
        for x, (arch, layer) in enumerate(groups):
            g = ablations[(ablations.architecture == arch) & (ablations.layer == layer)]
            seeds = sorted(g.seed.unique())
            for k, seed in enumerate(seeds):
                xs = x + (k - (len(seeds) - 1) / 2) * 0.12
                gs = g[g.seed == seed]
                rnd = gs[gs.set == "random"][f"d_{q}"]
                ax.scatter(
                    np.full(len(rnd), xs), rnd, s=9, color="0.35", alpha=0.8, lw=0, label="random sets" if x == k == 0 else None
                )
                ax.hlines(
                    rnd.quantile(0.95), xs - 0.05, xs + 0.05, color="k", lw=1.5, label="their 95th pct" if x == k == 0 else None
                )
                ax.scatter(
                    [xs], gs[gs.set == "class"][f"d_{q}"], s=50, marker="D", color=CLASS_COLORS["stable"], zorder=3,
                    label="stable class" if x == k == 0 else None,
                )  # fmt: skip
        ax.set_xticks(range(len(groups)), [f"{a.replace('_batchtopk', '')}\nlayer {lay}" for a, lay in groups], fontsize=8)
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right", rotation_mode="anchor")
        ax.set_ylabel(f"{'FVU' if q == 'fvu' else 'CE (nats / token)'} increase\nwhen the set is ablated")
        ax.set_title(
            f"{'FVU' if q == 'fvu' else 'CE'}: stable class vs size-matched random live sets\n(one column per seed)", fontsize=9
        )
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _symlog_axis(ax, lin: float, values: np.ndarray, max_per_side: int = 3) -> None:
    """Symmetric-log y axis whose labelled ticks are 0 and at most ``max_per_side`` powers of ten
    on each side that holds data (decades thinned evenly), so labels do not collide."""
    ax.set_yscale("symlog", linthresh=lin)
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo = int(np.floor(np.log10(lin)))
    hi = int(np.ceil(np.log10(max(float(np.abs(v).max()) if v.size else lin, lin))))
    step = max(1, int(np.ceil((hi - lo + 1) / max_per_side)))
    decades = [10.0**e for e in range(hi, lo, -step)]  # none at the linear threshold itself: it sits next to 0
    ticks = [0.0] + [d for d in decades if v.size and (v > 0).any()] + [-d for d in decades if v.size and (v < 0).any()]
    ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: "0" if y == 0 else f"{y:.0e}"))


def marginal_effects(live_m: pd.DataFrame, live_c: pd.DataFrame, tau: float, arch: str, seed: int) -> plt.Figure:
    """Single-feature ablation effects against stability (mean best cosine): FVU for every live
    latent, CE and CE per firing for the sampled ones; symmetric-log y axes (effects can be
    negative) with thinned tick labels; class colours as everywhere."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.9))
    for ax, data, col, label in [
        (axes[0], live_m, "d_fvu", "FVU increase when ablated"),
        (axes[1], live_c, "delta_ce", "CE increase (nats / token)"),
        (axes[2], live_c, "delta_ce_per_firing", "CE increase per firing (nats)"),
    ]:
        sns.scatterplot(
            data,
            x="mean_best",
            y=col,
            hue="class",
            palette=CLASS_COLORS,
            s=12,
            alpha=0.7,
            linewidth=0,
            ax=ax,
            legend=ax is axes[2],
        )
        lin = max(float(np.nanquantile(np.abs(data[col]), 0.05)), 1e-9)
        _symlog_axis(ax, lin, data[col].to_numpy())
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(f"{label}\n(symlog, linear below {lin:.0e})")
        ax.set_xlabel("stability (mean best cosine)")
        ax.axvline(tau, ls="--", color="grey", lw=1)
    axes[0].set_title(f"{arch}: every live latent, seed {seed}")
    axes[1].set_title(f"{len(live_c)} sampled live latents")
    axes[2].set_title("same latents, per firing")
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


#: Order of the boxes of the subspace figure (those present are drawn).
_SUBSPACE_ORDER = [
    "unstable · across seeds",
    "covariance · reference",
    "unstable · random subset",
    "unstable · data PCA",
    "stable · across seeds",
    "stable · random subset",
    "stable · data PCA",
    "random · reference",
]


def subspace_angles(ov: pd.DataFrame, curves: pd.DataFrame) -> plt.Figure:
    """Claim 4: cross-seed projection overlap of the class subspaces against the controls of the
    same dimension (the covariance-spectrum control is what the rule reads), and the principal
    angles of the class subspaces; stable and unstable keep their class colours in both panels."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.9))
    lab = ov.assign(what=ov.group + " · " + ov.control)
    order = [w for w in _SUBSPACE_ORDER if w in set(lab.what)] + sorted(set(lab.what) - set(_SUBSPACE_ORDER))
    pal = {w: CLASS_COLORS.get(w.split(" · ")[0], "0.75" if "covariance" in w else "0.55") for w in order}
    sns.boxplot(
        lab, y="what", x="overlap", order=order, hue="what", palette=pal, saturation=1, ax=axes[0], showfliers=False, legend=False
    )
    axes[0].set_ylabel("")
    axes[0].set_xlabel("projection overlap ‖P_A P_B‖²_F / k")
    axes[0].set_title("cross-seed overlap against controls of the same dimension")
    if len(curves):
        groups = [g for g in ("unstable", "stable") if g in set(curves.group)]
        sns.lineplot(
            curves,
            x="index",
            y="cosine",
            hue="group",
            hue_order=groups,
            palette=CLASS_COLORS,
            style="layer",
            errorbar="sd",
            ax=axes[1],
        )
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    axes[1].set_xlabel("principal angle index (largest cosine first)")
    axes[1].set_ylabel("cos θ between the two seeds")
    axes[1].set_title("principal angles of the class subspaces (± sd over seed pairs)")
    fig.tight_layout()
    return fig
