"""Study 1's figures: each layer's nulls beside its own curve, class colours kept across panels,
symlog tick labels that do not collide, histograms with each layer's null and a data-led x range."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sae_studies.studies import stability_plots as plots  # noqa: E402


def _per_seed_and_nulls():
    rows, nulls = [], []
    for layer, level in ((1, 0.1), (3, 0.3)):
        for ef in (4, 8):
            for seed in range(3):
                rows.append(
                    {"architecture": "topk", "layer": layer, "expansion": ef, "seed": seed, "stable": level, "stable_all": level}
                )
            for kind in plots.NULL_MARKERS:
                nulls.append(
                    {"architecture": "topk", "layer": layer, "expansion": ef, "null": kind, "fraction_stable": level / 10}
                )
    return pd.DataFrame(rows), pd.DataFrame(nulls)


def test_fraction_stable_draws_each_layers_own_nulls():
    per_seed, nulls = _per_seed_and_nulls()
    fig = plots.fraction_stable(per_seed, nulls, 16, 0.7, 3, "clipped")
    for i, level in enumerate((0.1, 0.3)):
        chosen = [ln for ln in fig.axes[i].get_lines() if ln.get_label() == "null: clipped (chosen)"]
        assert len(chosen) == 1 and np.allclose(chosen[0].get_ydata(), level / 10)


def test_subspace_angles_keep_class_colours():
    ov = pd.DataFrame(
        [{"group": g, "control": "across seeds", "draw": 0, "overlap": v} for g, v in (("unstable", 0.8), ("stable", 0.9))]
        + [{"group": "covariance", "control": "reference", "draw": i, "overlap": 0.3 + 0.01 * i} for i in range(5)]
    )
    curves = pd.DataFrame(
        [{"layer": 1, "group": g, "index": k, "cosine": 1 - 0.1 * k} for g in ("stable", "unstable") for k in range(1, 4)]
    )
    fig = plots.subspace_angles(ov, curves)
    lines = {
        ln.get_label(): mcolors.to_rgb(ln.get_color())
        for ln in fig.axes[1].get_lines()
        if ln.get_label() in ("stable", "unstable")
    }
    for group in ("stable", "unstable"):
        assert lines[group] == pytest.approx(mcolors.to_rgb(plots.CLASS_COLORS[group]))
    ticks = {round(float(v)): t.get_text() for v, t in zip(fig.axes[0].get_yticks(), fig.axes[0].get_yticklabels())}
    colors = {}
    for patch in fig.axes[0].patches:
        y = patch.get_path().vertices[:, 1].mean() if hasattr(patch, "get_path") else None
        if y is not None and round(y) in ticks and abs(y - round(y)) < 0.45:
            colors[ticks[round(y)]] = mcolors.to_rgb(patch.get_facecolor())
    assert colors["unstable · across seeds"] == pytest.approx(mcolors.to_rgb(plots.CLASS_COLORS["unstable"]))
    assert colors["stable · across seeds"] == pytest.approx(mcolors.to_rgb(plots.CLASS_COLORS["stable"]))


def test_marginal_effects_tick_labels_do_not_collide():
    rng = np.random.default_rng(0)
    n = 300
    mb = rng.uniform(0.2, 1.0, n)
    cls = np.where(mb > 0.7, "stable", "unstable")
    m = pd.DataFrame({"mean_best": mb, "d_fvu": rng.normal(0, 1e-3, n) * 10 ** rng.uniform(-4, 0, n), "class": cls})
    c = pd.DataFrame({"mean_best": mb, "delta_ce": rng.normal(0, 1e-4, n) * 10 ** rng.uniform(-4, 0, n), "class": cls}).assign(
        delta_ce_per_firing=lambda t: t.delta_ce * 10
    )
    fig = plots.marginal_effects(m, c, 0.7, "topk", 0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:3]:
        ylo, yhi = ax.get_ylim()
        boxes = [
            t.get_window_extent(renderer)
            for t, v in zip(ax.get_yticklabels(), ax.get_yticks())
            if ylo <= v <= yhi and t.get_text()
        ]
        boxes.sort(key=lambda b: b.y0)
        assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ax.get_yticklabels()]


def test_stability_histograms_draw_each_layers_null_and_fit_the_data():
    rng = np.random.default_rng(0)
    frames = []
    for layer in (1, 3):
        for seed in range(2):
            frames.append(
                pd.DataFrame(
                    {"architecture": "topk", "layer": layer, "expansion": 8, "seed": seed, "feature": range(64),
                     "mean_best": rng.uniform(0.3, 1.0, 64), "class": "unstable"}
                )
            )  # fmt: skip
    feats = pd.concat(frames, ignore_index=True)
    nulls = {(1, 64): rng.normal(0.35, 0.02, 128), (3, 64): rng.normal(0.45, 0.02, 128)}
    fig = plots.stability_histograms(feats, nulls, 0.7, 2)
    ax = fig.axes[0]
    p99 = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if "null 99th" in ln.get_label())
    assert p99 == pytest.approx(sorted(np.quantile(v, 0.99) for v in nulls.values()))
    assert ax.get_xlim()[0] > 0.2  # the range follows the data, no blank half


def test_stability_histograms_draw_no_panel_for_untrained_cells():
    rng = np.random.default_rng(1)
    frames = [
        pd.DataFrame(
            {"architecture": arch, "layer": 1, "expansion": ef, "seed": seed, "feature": range(32),
             "mean_best": rng.uniform(0.3, 1.0, 32), "class": "unstable"}
        )
        for arch, ef in (("topk", 4), ("topk", 8), ("standard", 8))
        for seed in range(2)
    ]  # fmt: skip
    fig = plots.stability_histograms(pd.concat(frames, ignore_index=True), {(1, 32): rng.normal(0.4, 0.02, 64)}, 0.7, 2)
    assert len(fig.axes) == 3  # three trained cells, no "not trained" panel for standard 4x
