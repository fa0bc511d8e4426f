"""Study 3's figure functions: what they draw (no line through two points; one panel per k)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sae_studies.studies import hierarchical_plots as hp  # noqa: E402


def _summary(ks):
    rows = [
        {"model": m, "k": k, "l0": float(k), "ev": 0.5 + 0.01 * k, "ev_sd": 0.01, "lr": 0.8, "lr_sd": 0.01}
        for m in ("topk", hp.HIERARCHICAL)
        for k in ks
    ]
    return pd.DataFrame(rows)


def _gap_summary(ks):
    cols = pd.MultiIndex.from_product([["L0", "ΔEV", "Δ loss recovered"], ["mean", "std"]])
    return pd.DataFrame([[k, 0.0, -0.01, 0.002, 0.0, 0.001] for k in ks], index=pd.Index(ks, name="k"), columns=cols)


def _connected(ax):
    """Data lines drawn with a line style (reference lines such as the zero line span x = [0, 1] in axes units)."""
    return [
        line
        for line in ax.get_lines()
        if len(line.get_xdata()) > 1 and list(line.get_xdata()) != [0, 1] and line.get_linestyle() not in ("None", "", " ")
    ]


def test_pareto_draws_no_line_through_two_points():
    two = hp.pareto(_summary([16, 64]), _gap_summary([16, 64]), "t")
    assert all(not _connected(ax) for ax in two.axes[:3])
    three = hp.pareto(_summary([8, 16, 32]), _gap_summary([8, 16, 32]), "t")
    assert _connected(three.axes[0])
    plt.close("all")


def test_budget_sweep_one_column_per_k_with_error_bars_from_seeds():
    rows = [
        {"tokens": t, "k": k, "seed": s, "EV hierarchical": 0.8, "EV best separate": 0.81, "ΔEV": -0.01 + 0.001 * s}
        for t in (2**18, 2**19)
        for k in (8, 32, 64)
        for s in (0, 1)
    ]
    fig = hp.budget_sweep(pd.DataFrame(rows), 2**18, "t")
    assert len(fig.axes) == 2 * (3 + 1)
    assert any(c.has_yerr for c in fig.axes[4].containers)  # bottom row, k = 8: ± sd over seeds
    plt.close("all")
