"""Cross-layer feature flow: data-free matching of SAE features across layers, flow graphs, and
the deactivation test of a match (Laptev et al. 2025, arXiv 2502.03032).

Positions. A window of consecutive layers ``L0..L1`` has SAEs on the residual stream after
each block (``("resid", L)``), the MLP output (``("mlp", L)``) and the attention output
(``("attn", L)``), plus the residual stream that enters ``L0``: ``("resid", L0 − 1)``. For
``L0 = 0`` that is the embedding (token + positional, ``blocks.0.hook_resid_pre``), written
``("resid", -1)``; for ``L0 > 0`` it is ``blocks.{L0-1}.hook_resid_post``.

Matching (data-free). A feature is its unit decoder row. For feature ``f`` of ``("resid", L)``
its match in a source position ``P`` is ``argmax_j <f̂, ĝ_j>`` over ``P``'s features and
``s(P)`` that cosine, for ``P`` in {``resid`` L − 1, ``mlp`` L, ``attn`` L}. The general operator
keeps the top-``k`` (:class:`FlowMatches`). Searched with the chunked
:func:`~sae_studies.analyses.cosine.topk_cosine` (never a full F × F matrix).

Groups (:func:`classify`), with per-layer thresholds ``t``: translated (``s(R) ≥ t_R`` and both
modules below theirs), processed (``s(R) ≥ t_R`` and a module at or above), newborn
(``s(R) < t_R`` and a module at or above), unexplained (all below).

The deactivation test of a match lives in :mod:`.flow_deactivation`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..checks import check_choice, check_cosine_threshold, check_int, check_matrix, check_positive_int
from .cosine import DEFAULT_CHUNK_SIZE, topk_cosine

#: Source positions of a residual feature of layer L: the residual stream before L, the MLP and
#: the attention output of L.
SOURCES = ("resid", "mlp", "attn")
GROUPS = ("translated", "processed", "newborn", "unexplained")
Position = tuple[str, int]


# --------------------------------------------------------------------------------------------
# positions and checks
# --------------------------------------------------------------------------------------------


def check_window(layers: Sequence[int], n_layers: int) -> list[int]:
    """A non-empty run of consecutive layer indices inside ``0..n_layers-1``."""
    layers = [check_int("layer", x, 0, n_layers - 1, f" (the model has {n_layers} layers: 0..{n_layers - 1})") for x in layers]
    if not layers or layers != list(range(layers[0], layers[0] + len(layers))):
        raise ValueError(f"layers must be consecutive and increasing, e.g. [1, 2, 3]; got {layers}")
    return layers


def window_positions(layers: Sequence[int]) -> list[Position]:
    """Every SAE position the window needs: residual L0 − 1 … L1, then MLP and attention of each layer."""
    layers = list(layers)
    resid = [("resid", layer) for layer in range(layers[0] - 1, layers[-1] + 1)]
    return resid + [(kind, layer) for layer in layers for kind in ("mlp", "attn")]


def position_hook(position: Position) -> str:
    """TransformerLens hook of a position; ``("resid", -1)`` is the embedding (resid_pre of block 0)."""
    kind, layer = position
    check_choice("position kind", kind, SOURCES)
    if kind == "resid" and layer == -1:
        return "blocks.0.hook_resid_pre"
    check_int("position layer", layer, -1 if kind == "resid" else 0)
    return f"blocks.{layer}." + {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}[kind]


def source_position(kind: str, layer: int) -> Position:
    """Where the ``kind`` predecessor of a residual feature of ``layer`` lives."""
    return ("resid", layer - 1) if kind == "resid" else (kind, layer)


def check_decoders(decoders: Mapping[Position, Tensor], layers: Sequence[int]) -> dict[Position, Tensor]:
    """Every position of the window present, each an [F, d] matrix, all with the same d."""
    need = window_positions(layers)
    missing = [p for p in need if p not in decoders]
    if missing:
        raise ValueError(f"decoders lack the positions {missing}; a window {list(layers)} needs {need}")
    out = {p: check_matrix(f"decoders[{p}]", decoders[p]) for p in need}
    widths = {p: int(w.shape[1]) for p, w in out.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"SAEs of a flow window must share the input size d; got {widths}")
    return out


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowMatches:
    """Top-``k`` matches of every residual feature of every layer of a window.

    ``values[(kind, L)]`` is ``[F, k]`` (cosines, largest first) and ``indices[(kind, L)]`` the
    matching rows of the source dictionary of ``kind`` for target layer ``L``
    (``source_position(kind, L)``)."""

    layers: tuple[int, ...]
    k: int
    values: dict[Position, Tensor]
    indices: dict[Position, Tensor]

    def best(self, kind: str, layer: int) -> Tensor:
        """``s(kind)`` of every residual feature of ``layer``: ``[F]``."""
        return self.values[(kind, layer)][:, 0]

    def n_features(self, layer: int) -> int:
        return int(self.values[("resid", layer)].shape[0])

    def table(self) -> pd.DataFrame:
        """One row per (layer, feature): ``s_resid, s_mlp, s_attn`` and the matched rows ``i_*``."""
        frames = []
        for layer in self.layers:
            cols = {"layer": layer, "feature": np.arange(self.n_features(layer))}
            for kind in SOURCES:
                cols[f"s_{kind}"] = self.best(kind, layer).double().numpy()
                cols[f"i_{kind}"] = self.indices[(kind, layer)][:, 0].numpy()
            frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)


def match_window(
    targets: Mapping[int, Tensor],
    sources: Mapping[Position, Tensor],
    layers: Sequence[int],
    k: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> FlowMatches:
    """Top-``k`` cosine matches of the residual features ``targets[L]`` in their three sources.

    ``sources`` is keyed by position (``("resid", L-1)``, ``("mlp", L)``, ``("attn", L)``); pass the
    same decoders as ``targets`` for the real matching, or null dictionaries for a baseline (they
    may live on another device: each search runs on the target's device). Results are CPU tensors."""
    layers = [int(x) for x in layers]
    k = check_positive_int("k", k)
    values, indices = {}, {}
    for layer in layers:
        if layer not in targets:
            raise ValueError(f"no residual dictionary for layer {layer}; have {sorted(targets)}")
        t = check_matrix(f"targets[{layer}]", targets[layer])
        for kind in SOURCES:
            pos = source_position(kind, layer)
            if pos not in sources:
                raise ValueError(f"no dictionary at source position {pos} (needed by layer {layer})")
            src = check_matrix(f"sources[{pos}]", sources[pos])
            if src.shape[1] != t.shape[1]:
                raise ValueError(
                    f"SAEs of different input sizes: resid layer {layer} has d={t.shape[1]}, {pos} has d={src.shape[1]}"
                )
            kk = min(k, src.shape[0])
            values[(kind, layer)], indices[(kind, layer)] = topk_cosine(t, src, kk, chunk_size)
    return FlowMatches(tuple(layers), k, values, indices)


def match_decoders(decoders: Mapping[Position, Tensor], layers: Sequence[int], k: int = 1) -> FlowMatches:
    """:func:`match_window` of a window's own decoders (the real matching)."""
    decs = check_decoders(decoders, layers)
    return match_window({layer: decs[("resid", layer)] for layer in layers}, decs, layers, k)


def null_thresholds(null: FlowMatches, quantile: float) -> dict[Position, float]:
    """Per (kind, layer): the ``quantile`` of the best cosine reached against null dictionaries —
    above it a match is better than a dictionary with no learned structure gives."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1); got {quantile!r}")
    return {key: float(torch.quantile(v[:, 0].double(), quantile)) for key, v in null.values.items()}


def classify(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> pd.DataFrame:
    """Group of each feature from its ``s(resid), s(mlp), s(attn)`` and one threshold per kind.

    Returns ``group`` (one of GROUPS) and ``module`` ("mlp" / "attn": the module further above its
    threshold, None for translated and unexplained features)."""
    for kind in SOURCES:
        if kind not in scores or kind not in thresholds:
            raise ValueError(f"scores and thresholds need the kinds {SOURCES}; got {sorted(scores)} / {sorted(thresholds)}")
        check_cosine_threshold(f"thresholds[{kind!r}]", thresholds[kind])
    s = {kind: np.asarray(scores[kind], dtype=float) for kind in SOURCES}
    high = {kind: s[kind] >= thresholds[kind] for kind in SOURCES}
    module = high["mlp"] | high["attn"]
    group = np.where(high["resid"], np.where(module, "processed", "translated"), np.where(module, "newborn", "unexplained"))
    margin_m, margin_a = s["mlp"] - thresholds["mlp"], s["attn"] - thresholds["attn"]
    which = np.where(margin_m >= margin_a, "mlp", "attn").astype(object)
    which[~module] = None
    return pd.DataFrame({"group": group, "module": which})


# --------------------------------------------------------------------------------------------
# flow graphs
# --------------------------------------------------------------------------------------------


def node_id(kind: str, layer: int, feature: int) -> str:
    return f"{kind}/{layer}/{feature}"


def _add_node(g: nx.DiGraph, kind: str, layer: int, feature: int, labels) -> str:
    nid = node_id(kind, layer, feature)
    if nid not in g:
        label = labels(kind, layer, feature) if labels is not None else ""
        g.add_node(nid, kind=kind, layer=int(layer), feature=int(feature), label=str(label))
    return nid


def flow_graph(
    matches: FlowMatches,
    layer: int,
    feature: int,
    resid_threshold: float = 0.5,
    module_threshold: float = 0.15,
    k: int | None = None,
    labels=None,
    max_nodes: int = 200,
) -> nx.DiGraph:
    """The flow graph of one residual feature: its residual ancestors and descendants across the
    window, each residual node with its MLP / attention parents.

    A residual link ``(resid, L−1, p) → (resid, L, g)`` exists when ``p`` is among the top-``k``
    residual matches of ``g`` with cosine ≥ ``resid_threshold``; a module link
    ``(mlp|attn, L, m) → (resid, L, g)`` when ``m`` is among ``g``'s top-``k`` module matches with
    cosine ≥ ``module_threshold`` (published defaults 0.5 and 0.15). Backwards the search follows
    parents from the seed, forwards every feature whose own match is a node already reached.
    Edges carry ``score`` (the cosine) and ``rank`` (0 = best match). ``labels(kind, layer,
    feature)`` names nodes (their ``label`` attribute).
    """
    if layer not in matches.layers:
        raise ValueError(f"layer {layer} is not in the matched window {list(matches.layers)}")
    check_int(
        "feature", feature, 0, matches.n_features(layer) - 1, f" (resid layer {layer} has {matches.n_features(layer)} features)"
    )
    t_r = check_cosine_threshold("resid_threshold", resid_threshold)
    t_m = check_cosine_threshold("module_threshold", module_threshold)
    k = matches.k if k is None else check_int("k", k, 1, matches.k, f" (matches keep top-{matches.k})")
    g = nx.DiGraph()
    seed = _add_node(g, "resid", layer, feature, labels)
    g.nodes[seed]["seed"] = True
    first = matches.layers[0]

    def add_parents(lay: int, feat: int) -> list[int]:
        child = node_id("resid", lay, feat)
        resid_parents = []
        for kind in SOURCES:
            vals = matches.values[(kind, lay)][feat, :k]
            idx = matches.indices[(kind, lay)][feat, :k]
            thr = t_r if kind == "resid" else t_m
            for rank, (v, j) in enumerate(zip(vals.tolist(), idx.tolist())):
                if v < thr:
                    continue
                src_kind, src_layer = source_position(kind, lay)
                parent = _add_node(g, src_kind, src_layer, j, labels)
                g.add_edge(parent, child, score=float(v), rank=rank, link=kind)
                if kind == "resid":
                    resid_parents.append(j)
        return resid_parents

    frontier = [(layer, feature)]  # backwards: parents of the seed, their parents, ...
    while frontier and g.number_of_nodes() < max_nodes:
        lay, feat = frontier.pop()
        parents = add_parents(lay, feat)
        if lay - 1 >= first:
            frontier += [(lay - 1, p) for p in parents]
    reached = {feature}
    for lay in range(layer + 1, matches.layers[-1] + 1):  # forwards: children of what was reached
        vals = matches.values[("resid", lay)][:, :k]
        idx = matches.indices[("resid", lay)][:, :k]
        hit = (vals >= t_r) & torch.isin(idx, torch.tensor(sorted(reached), device=idx.device))
        children = torch.nonzero(hit.any(1)).flatten().tolist()
        if not children or g.number_of_nodes() >= max_nodes:
            break
        for c in children:
            _add_node(g, "resid", lay, c, labels)
            add_parents(lay, c)
        reached = set(children)
    return g


def residual_chain(g: nx.DiGraph) -> dict[int, int]:
    """One residual feature per layer through the seed: from the seed, the best-scoring residual
    parent backwards and the best-scoring residual child forwards (``{layer: feature}``)."""
    seeds = [n for n, a in g.nodes(data=True) if a.get("seed")]
    if len(seeds) != 1:
        raise ValueError(f"the graph must have exactly one seed node; got {seeds}")
    chain = {g.nodes[seeds[0]]["layer"]: g.nodes[seeds[0]]["feature"]}
    for backwards in (True, False):
        node = seeds[0]
        while True:
            nxt = [n for n in (g.predecessors(node) if backwards else g.successors(node)) if g.nodes[n]["kind"] == "resid"]
            if not nxt:
                break
            node = max(nxt, key=lambda n: g.edges[(n, node) if backwards else (node, n)]["score"])
            chain[g.nodes[node]["layer"]] = g.nodes[node]["feature"]
    return dict(sorted(chain.items()))


def save_graph(g: nx.DiGraph, stem: Path) -> tuple[Path, Path]:
    """Write ``<stem>.graphml`` and ``<stem>.json`` (networkx node-link data); return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    clean = nx.DiGraph()
    for n, a in g.nodes(data=True):
        clean.add_node(n, **{k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in a.items()})
    clean.add_edges_from((u, v, dict(a)) for u, v, a in g.edges(data=True))
    graphml, js = stem.with_suffix(".graphml"), stem.with_suffix(".json")
    nx.write_graphml(clean, graphml)
    js.write_text(json.dumps(nx.node_link_data(clean, edges="edges"), indent=1))
    return graphml, js


def load_graph_json(path: Path) -> nx.DiGraph:
    return nx.node_link_graph(json.loads(Path(path).read_text()), edges="edges")
