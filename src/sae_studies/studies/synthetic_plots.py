"""Study 2's longer figures, one function per figure; notebook 02 calls them and says what to read
off each. Each returns the matplotlib Figure (the notebook saves it)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def subspace_angles(results: dict, archs: list[str]) -> plt.Figure:
    """02_subspace_angles: per architecture, the cosines of the principal angles between each
    group's true subspace and its latents' span ("to the truth"), between two seeds' spans
    ("across seeds") and between random subspaces (mean ± sd)."""
    curves = []
    for a, r in results.items():
        for what, arr in (("to the truth", r.to_truth), ("across seeds", r.cross_seed), ("random subspaces", r.random)):
            flat = arr.reshape(-1, arr.shape[-1])
            idx = np.tile(np.arange(1, flat.shape[1] + 1), len(flat))
            curves.append(pd.DataFrame({"architecture": a, "comparison": what, "index": idx, "cosine": flat.ravel()}))
    curves = pd.concat(curves, ignore_index=True)
    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.6), sharey=True, squeeze=False)
    for ax, arch in zip(axes[0], archs):
        sns.lineplot(
            curves[curves.architecture == arch],
            x="index",
            y="cosine",
            hue="comparison",
            marker="o",
            errorbar="sd",
            hue_order=["to the truth", "across seeds", "random subspaces"],
            palette=["C2", "C1", "grey"],
            ax=ax,
        )
        ax.set_title(arch)
        ax.set_xlabel("principal angle index (largest cosine first)")
        ax.set_ylim(-0.02, 1.05)
        if ax is axes[0, 0]:
            ax.legend(fontsize=7, loc="lower left")
        else:
            ax.get_legend().remove()
    axes[0, 0].set_ylabel("cos θ")
    fig.tight_layout()
    return fig


def dictionary_size(sizes: pd.DataFrame, recovered_cos: float, title: str) -> plt.Figure:
    """02_dictionary_size: direction recovery, group fraction stable and subspace cos² (to the
    truth, across seeds) against F / ground-truth directions, mean ± sd over seeds. The legend
    sits outside the axes, where it cannot cover a point."""
    fig, ax = plt.subplots(figsize=(8.2, 3.8))
    for col, label, color in (
        ("dir_recovered", f"group directions recovered (cos ≥ {recovered_cos})", "C0"),
        ("group_stable", "group latents: fraction stable", "C1"),
        ("subspace_cos2", "group subspace: cos² to the truth", "C2"),
        ("cross_seed_cos2", "group span: cos² across seeds", "C3"),
    ):
        ax.errorbar(sizes.factor, sizes[col], yerr=sizes[f"{col}_sd"], marker="o", capsize=3, color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes.factor, [f"{f:g}×" for f in sizes.factor])
    ax.set_xlabel(f"dictionary size / ground-truth directions ({int(sizes.n_directions.iloc[0])})")
    ax.set_ylabel("share / cos² (mean ± sd over seeds)")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title(title)
    fig.tight_layout()
    return fig


def study1_control(
    live_cls: pd.DataFrame, comp: dict, ov: pd.DataFrame, ov_u: pd.DataFrame, archs: list[str], tau: float
) -> plt.Figure:
    """02_study1_control: study 1's histogram of the first architecture coloured by the true kind
    of each latent; study 1's classes by ground-truth kind; and study 1's claim-4 subspace overlap
    (across seeds, random subsets, reference), with our not-stable sensitivity."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    a0 = live_cls[live_cls.architecture == archs[0]]
    sns.histplot(
        a0,
        x="mean_best",
        hue="kind",
        hue_order=["isolated", "group", "none"],
        bins=np.linspace(0, 1, 41),
        multiple="stack",
        ax=axes[0],
    )
    axes[0].axvline(tau, ls=":", color="grey")
    axes[0].set_xlabel("mean best cosine to the other seeds (study 1's score)")
    axes[0].set_ylabel("live latents (all seeds)")
    axes[0].set_title(f"{archs[0]}: study 1's histogram, coloured by the truth")
    stack = pd.concat([c.assign(architecture=a) for a, c in comp.items()]).reset_index(names="class")
    stack["label"] = stack.architecture + " · " + stack["class"]
    stack.set_index("label")[["isolated", "group", "none"]].plot.barh(
        stacked=True, ax=axes[1], color=["C0", "C1", "C2"], width=0.8
    )
    axes[1].set_xlabel("share of the class's live latents")
    axes[1].set_ylabel("")
    axes[1].tick_params(axis="y", labelsize=7)
    axes[1].invert_yaxis()
    axes[1].set_xlim(0, 1.35)
    axes[1].set_xticks(np.linspace(0, 1, 6))
    axes[1].set_title("study 1's classes by ground-truth kind")
    axes[1].legend(fontsize=7, loc="lower right", framealpha=0.9)
    dim1 = int(ov.dim.max()) if len(ov) else 0
    sub = pd.concat(
        [
            ov.assign(group=ov.group.map(lambda x: f"{x}\n(top-{dim1})")),
            ov_u[ov_u.group == "unstable"].assign(group=f"not stable\n(top-{int(ov_u.dim.max()) if len(ov_u) else 0}, ours)"),
        ]
    )
    sub = sub[sub.control.isin(["across seeds", "random subset", "reference"])]
    sns.barplot(
        sub,
        x="group",
        y="overlap",
        hue="control",
        order=list(dict.fromkeys(sub.group)),
        palette={"across seeds": "C3", "random subset": "0.6", "reference": "C4"},
        errorbar="sd",  # seaborn's default, a bootstrap interval, drew other bars on every run
        ax=axes[2],
    )
    axes[2].set_ylabel("projection overlap of two seeds' subspaces\n(mean ± sd over seed pairs, draws)")
    axes[2].set_xlabel("")
    axes[2].tick_params(axis="x", labelsize=8)
    axes[2].set_title(f"{archs[0]}: study 1's claim-4 analysis")
    # overlaps reach 1: the legend gets a band of its own above them
    axes[2].set_ylim(0, 1.2)
    axes[2].set_yticks(np.linspace(0, 1, 6))
    axes[2].legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    return fig
