"""Study 5's figures: flow graphs (pruned of dead latents, drawn layer by layer) and steering per
theme. Notebook 05 calls one function per figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def prune_dead(g, alive: Mapping[tuple[str, int], np.ndarray]):
    """A copy of flow graph ``g`` without nodes whose latent is dead (``alive[(kind, layer)]`` is
    a boolean mask over features; positions without a mask are kept), and without nodes that
    this cuts off from the seed (no undirected path left). The seed node is always kept: a
    parent that never fires carries nothing into the seed, so drawing it as one misleads."""
    import networkx as nx

    h = g.copy()
    dead = [
        n
        for n, a in g.nodes(data=True)
        if not a.get("seed") and (a["kind"], a["layer"]) in alive and not bool(alive[(a["kind"], a["layer"])][a["feature"]])
    ]
    h.remove_nodes_from(dead)
    seed = [n for n, a in h.nodes(data=True) if a.get("seed")]
    if seed:
        keep = nx.node_connected_component(h.to_undirected(), seed[0])
        h.remove_nodes_from([n for n in list(h) if n not in keep])
    return h


KIND_ROW = {"resid": 0, "mlp": 1, "attn": 2}
KIND_COLOR = {"resid": "#4c72b0", "mlp": "#dd8452", "attn": "#55a868"}


def graph_rows(g) -> float:
    """Vertical extent of :func:`draw_flow_graph`'s layout (to size a figure's panels)."""
    depth = {}
    for _, a in g.nodes(data=True):
        depth[(a["kind"], a["layer"])] = depth.get((a["kind"], a["layer"]), 0) + 1
    return sum(1.2 * max([c for (k, _), c in depth.items() if k == kind] or [1]) + 0.6 for kind in KIND_ROW)


def draw_flow_graph(g, ax, title: str = "", max_label: int = 22) -> None:
    """Layers left to right, positions as rows (residual, MLP, attention), edge width by cosine,
    nodes labelled with their position, feature and automatic explanation (cut to ``max_label``
    characters; the full explanations are in the notebook's table and the exported graph)."""
    import networkx as nx

    pos, stack = {}, {}
    for n, a in sorted(g.nodes(data=True), key=lambda t: (t[1]["layer"], t[1]["kind"], t[1]["feature"])):
        key = (a["kind"], a["layer"])
        stack[key] = stack.get(key, 0) + 1
        pos[n] = (a["layer"] - (0.0 if a["kind"] == "resid" else 0.45), stack[key] - 1)
    depth = {kind: max([c for (k, _), c in stack.items() if k == kind] or [1]) for kind in KIND_ROW}
    top, row_y = 0.0, {}
    for kind in KIND_ROW:  # each row is as tall as its deepest stack of nodes
        row_y[kind] = top
        top -= 1.2 * depth[kind] + 0.6
    pos = {n: (x + 0.12 * i, row_y[g.nodes[n]["kind"]] - 1.2 * i) for n, (x, i) in pos.items()}
    widths = [0.6 + 5 * max(0.0, d["score"]) for _, _, d in g.edges(data=True)]
    nx.draw_networkx_edges(
        g,
        pos,
        ax=ax,
        width=widths,
        edge_color="#888888",
        arrows=True,
        arrowsize=8,
        connectionstyle="arc3,rad=0.05",
        node_size=220,
    )
    for kind, color in KIND_COLOR.items():
        nodes = [n for n, a in g.nodes(data=True) if a["kind"] == kind]
        seed = [n for n in nodes if g.nodes[n].get("seed")]
        nx.draw_networkx_nodes(
            g,
            pos,
            nodelist=nodes,
            node_color=color,
            node_size=220,
            ax=ax,
            edgecolors=["black" if n in seed else "white" for n in nodes],
            linewidths=2,
        )
    for n, a in g.nodes(data=True):
        text = a.get("label", "")
        text = text if len(text) <= max_label else text[: max_label - 1] + "…"
        ax.annotate(
            f"{a['kind'][0].upper()}{a['layer']}:{a['feature']}\n{text}",
            pos[n],
            xytext=(0, 10),
            textcoords="offset points",
            ha="center",
            fontsize=7.5,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    for u, v, d in g.edges(data=True):  # cosine written 40 % of the way from the source
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.text(
            x0 + 0.4 * (x1 - x0),
            y0 + 0.4 * (y1 - y0),
            f"{d['score']:.2f}",
            fontsize=6.5,
            color="#555555",
            ha="center",
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    layers = sorted({a["layer"] for _, a in g.nodes(data=True)})
    ax.set_xticks(layers, [("emb" if layer == -1 else f"L{layer}") for layer in layers])
    ax.set_yticks([row_y[k] for k in KIND_ROW], [k for k in KIND_ROW])
    ax.tick_params(left=False, bottom=False, labelleft=True, labelbottom=True)
    ax.set_xlim(min(layers) - 0.8, max(layers) + 0.5)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.6, 0.9)
    ax.set_title(title, fontsize=9)
    ax.grid(False)


def flow_graphs(graphs: Mapping, titles: Mapping) -> plt.Figure:
    """05_flow_graphs: one panel per flow graph (``graphs[key]``, titled ``titles[key]``), each as
    tall as its layout."""
    rows = [graph_rows(g) for g in graphs.values()]
    fig, axes = plt.subplots(
        len(graphs), 1, figsize=(13, 0.75 * sum(rows) + 0.6 * len(graphs)), squeeze=False, gridspec_kw={"height_ratios": rows}
    )
    for ax, (key, g) in zip(axes[:, 0], graphs.items()):
        draw_flow_graph(g, ax, title=titles[key])
    fig.tight_layout()
    return fig


def steering_per_theme(
    theme_curves: pd.DataFrame, themes: Sequence[str], scales: Sequence[float], schedules: Sequence[str]
) -> plt.Figure:
    """05_steering: one panel per theme (themes start from very different unsteered scores, so an
    average over themes hides each one's curve): theme score (top) and combined score (bottom)
    against s for single-layer and each multi-layer schedule, 95 % intervals over generations;
    s = 0 is the theme's unsteered baseline, a dotted line across the panel."""
    lines = [("single", "constant")] + [("multi", sch) for sch in schedules]
    dodge = 0.012 * max(scales)
    fig, axes = plt.subplots(2, len(themes), figsize=(3.3 * len(themes), 6.0), sharex=True, squeeze=False)
    for j, theme in enumerate(themes):
        tc = theme_curves[theme_curves["theme"] == theme]
        base = tc[tc["span"] == "none"]
        for i, (col, name) in enumerate([("theme_score", "theme score"), ("combined", "combined = theme × coherence")]):
            ax = axes[i, j]
            if len(base):
                ax.axhline(float(base[col].iloc[0]), color="grey", ls=":", lw=1)
            for li, (span, sch) in enumerate(lines):
                part = pd.concat([base, tc[(tc["span"] == span) & (tc["schedule"] == sch)]]).astype({"s": float})
                ax.errorbar(
                    part["s"] + (li - 1.5) * dodge,
                    part[col].astype(float),
                    yerr=1.96 * part[f"{col}_se"].astype(float),
                    marker="os^v"[li % 4],
                    capsize=2,
                    ls="-" if span == "single" else "--",
                    label=f"{span}-layer" + ("" if span == "single" else f", {sch}"),
                )
            if j == 0:
                ax.set_ylabel(name)
            if i == 0:
                ax.set_title(f"{theme} (unsteered {float(base['theme_score'].iloc[0]):.2f})" if len(base) else theme)
            else:
                ax.set_xlabel("s (× median residual norm)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(lines), fontsize=8, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Steering toward each theme: 95 % intervals over generations (s = 0 and dotted: the unsteered baseline)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
