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
