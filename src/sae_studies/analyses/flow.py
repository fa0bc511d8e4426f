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

Deactivation (:class:`LayerDeactivation`): at the tokens where a residual feature ``f`` of
layer ``L`` is active, the contribution of one predecessor feature ``p`` (activation ``a_p``,
contribution direction ``u_p = decode(e_p) − decode(0)``) is rescaled in its own position,
``h ← h + (r − 1)·a_p·u_p`` (``r = 0`` removes it), the block is re-run and ``f`` is re-encoded.
Activation change of ``f`` = mean over those tokens of the relative drop ``(a_f − a_f′) / a_f``
(1 = switched off, 0 = unchanged, negative = it grew); success = share of those tokens where
``a_f′ = 0``.
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
from ..devices import to_cpu, to_device
from .cosine import DEFAULT_CHUNK_SIZE, topk_cosine, unit_rows

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


# --------------------------------------------------------------------------------------------
# deactivation
# --------------------------------------------------------------------------------------------


def _contributions(sae) -> Tensor:
    from .features import feature_contributions

    return feature_contributions(sae)


def _standard_block(cfg) -> bool:
    """Pre-norm block with the MLP reading resid_mid (GPT-2, Llama, ...): the MLP can be re-run
    per token after an attention edit instead of re-running the whole block."""
    from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES

    return not (cfg.parallel_attn_mlp or cfg.attn_only or cfg.original_architecture in POST_NORM_ARCHITECTURES)


class LayerDeactivation:
    """The block of one layer on fixed contexts, with the SAEs of its four positions, for the
    deactivation test of predecessor matches (definitions in the module docstring).

    ``saes`` maps ``"target"`` (residual after the layer), ``"resid"`` (residual before it),
    ``"mlp"`` and ``"attn"`` to SAELens SAEs. The first ``n_prefix`` positions of every context
    (a BOS token the SAEs were not trained on) are never edited or measured.

    Everything is kept on the LM's device (``self.device``); the SAEs may live elsewhere: their
    inputs move to them and their codes come back."""

    def __init__(
        self, model, layer: int, saes: Mapping[str, object], contexts: np.ndarray, batch_size: int = 32, n_prefix: int = 0
    ):
        check_int("layer", layer, 0, model.cfg.n_layers - 1, f" (the model has {model.cfg.n_layers} layers)")
        for key in ("target", *SOURCES):
            if key not in saes:
                raise ValueError(f"saes needs the keys target, resid, mlp, attn; got {sorted(saes)}")
        self.model, self.layer, self.saes, self.n_prefix = model, layer, dict(saes), int(n_prefix)
        self.device = torch.device(model.cfg.device)
        self.block = model.blocks[layer]
        self.standard = _standard_block(model.cfg)
        names = {
            "resid": position_hook(("resid", layer - 1)),
            "mid": f"blocks.{layer}.hook_resid_mid",
            "attn": f"blocks.{layer}.hook_attn_out",
            "mlp": f"blocks.{layer}.hook_mlp_out",
            "post": f"blocks.{layer}.hook_resid_post",
        }
        if not self.standard:
            names.pop("mid")
        cache = {key: [] for key in names}
        with torch.no_grad():
            for i in range(0, len(contexts), batch_size):
                tokens = torch.as_tensor(contexts[i : i + batch_size], dtype=torch.long, device=model.cfg.device)
                _, c = model.run_with_cache(tokens, names_filter=list(names.values()), stop_at_layer=layer + 1)
                for key, name in names.items():
                    cache[key].append(c[name])
        self.acts = {key: torch.cat(v) for key, v in cache.items()}  # [W, T, d]
        self.codes = {}
        with torch.no_grad():
            for key, act_key in (("target", "post"), ("resid", "resid"), ("mlp", "mlp"), ("attn", "attn")):
                z = self._encode(key, self.acts[act_key].flatten(0, 1))
                self.codes[key] = z.reshape(*self.acts[act_key].shape[:2], -1)
        self.u = {kind: _contributions(self.saes[kind]).to(self.device) for kind in SOURCES}

    def _encode(self, key: str, x: Tensor) -> Tensor:
        """Codes of ``saes[key]`` for activations ``x``, computed on the SAE's device, returned on
        the LM's."""
        sae = self.saes[key]
        return sae.encode(to_device(x, sae)).to(self.device)

    @property
    def n_windows(self) -> int:
        return int(self.acts["post"].shape[0])

    def firing(self, feature: int) -> Tensor:
        """[W, T] boolean: where residual feature ``feature`` of this layer is active (never on
        the prefix positions)."""
        on = self.codes["target"][..., feature] > 0
        on[:, : self.n_prefix] = False
        return on

    def active_predecessors(self, feature: int, windows: Sequence[int]) -> list[tuple[str, int]]:
        """Every (kind, feature) of the three sources active on at least one token of ``windows``
        where ``feature`` is active: the only predecessors whose edit can change it there."""
        w = torch.as_tensor(list(windows), dtype=torch.long, device=self.device)
        mask = self.firing(feature)[w]
        out = []
        for kind in SOURCES:
            on = (self.codes[kind][w][mask] > 0).any(0)
            out += [(kind, int(j)) for j in torch.nonzero(on).flatten().tolist()]
        return out

    @torch.no_grad()
    def effects(
        self, feature: int, candidates: Sequence[tuple[str, int]], windows: Sequence[int], r: float = 0.0, chunk: int = 64
    ) -> pd.DataFrame:
        """Change and success of ``feature`` when each candidate predecessor is rescaled by ``r``
        at the tokens of ``windows`` where ``feature`` is active (one row per candidate)."""
        windows = torch.as_tensor(list(windows), dtype=torch.long, device=self.device)
        mask = self.firing(feature)[windows]  # [w, T]
        if not mask.any():
            raise ValueError(f"feature {feature} of layer {self.layer} is not active in windows {windows.tolist()}")
        t_max = int(torch.nonzero(mask.any(0)).max()) + 1
        mask = mask[:, :t_max]
        a0 = self.codes["target"][windows, :t_max][mask][:, feature]  # [n]
        rows = []
        for i in range(0, len(candidates), chunk):
            part = list(candidates[i : i + chunk])
            a1 = self._intervene(feature, part, windows, mask, t_max, r)  # [c, n]
            for (kind, j), a in zip(part, a1):
                rows.append(
                    {
                        "kind": kind,
                        "predecessor": j,
                        "change": float(((a0 - a) / a0).mean()),
                        "success": float((a == 0).double().mean()),
                        "n_tokens": int(mask.sum()),
                    }
                )
        return pd.DataFrame(rows, columns=["kind", "predecessor", "change", "success", "n_tokens"])

    def _delta(self, kind: str, js: Sequence[int], windows: Tensor, mask: Tensor, t_max: int, r: float) -> Tensor:
        """[c, w, T, d]: (r − 1)·a_j·u_j at the masked tokens, zero elsewhere, one row per j."""
        a = self.codes[kind][windows, :t_max][..., list(js)].permute(2, 0, 1) * mask  # [c, w, T]
        return (r - 1.0) * a[..., None] * self.u[kind][list(js)][:, None, None, :]

    def _intervene(self, feature, part, windows, mask, t_max, r) -> Tensor:
        """[c, n]: the feature's activation at the n masked tokens under each candidate's edit."""
        new = torch.empty(len(part), int(mask.sum()), self.acts["post"].shape[-1], device=self.device)
        for kind in SOURCES:
            pos = [i for i, (k, _) in enumerate(part) if k == kind]
            if not pos:
                continue
            delta = self._delta(kind, [part[i][1] for i in pos], windows, mask, t_max, r)
            if kind == "mlp":  # the MLP output is added to the residual stream: nothing to re-run
                new[pos] = self.acts["post"][windows, :t_max][mask] + delta[:, mask]
            elif kind == "attn" and self.standard:  # only the per-token MLP follows the attention output
                mid = self.acts["mid"][windows, :t_max][mask] + delta[:, mask]
                new[pos] = mid + self._mlp(mid)
            else:
                new[pos] = self._block(kind, delta, windows, t_max)[:, mask]
        z = self._encode("target", new.flatten(0, 1))[:, feature]
        return z.reshape(len(part), -1)

    def _mlp(self, mid: Tensor) -> Tensor:
        blk = self.block
        out = blk.mlp(blk.ln2(mid))
        if self.model.cfg.use_normalization_before_and_after:
            out = blk.ln2_post(out)
        return out

    def _block(self, kind: str, delta: Tensor, windows: Tensor, t_max: int) -> Tensor:
        """[c, w, T, d]: the whole block re-run with each edit ``delta[c]`` at its position
        (the residual input, or any block's attention output), all candidates in one batch."""
        c, w = delta.shape[:2]
        pre = self.acts["resid"][windows, :t_max].repeat(c, 1, 1)
        flat = delta.flatten(0, 1)
        if kind == "resid":
            return self.block(pre + flat).reshape(delta.shape)
        hook = f"blocks.{self.layer}.hook_{kind}_out"
        with self.model.hooks(fwd_hooks=[(hook, lambda x, hook: x + flat)]):
            return self.block(pre).reshape(delta.shape)


#: Deactivation methods compared: the best cosine match, a random one of the five best cosine
#: matches (pooled over the three sources), and the best single predecessor by exhaustive search.
METHODS = ("top-1 cosine", "random top-5", "exhaustive")


def pooled_top(matches: FlowMatches, layer: int, feature: int, n: int) -> list[tuple[str, int, float]]:
    """The ``n`` best (kind, predecessor, cosine) matches of a residual feature over its three sources."""
    if n > matches.k:
        raise ValueError(f"pooled_top needs matches with k ≥ {n}; these keep top-{matches.k}")
    pool = [
        (kind, int(j), float(v))
        for kind in SOURCES
        for v, j in zip(matches.values[(kind, layer)][feature].tolist(), matches.indices[(kind, layer)][feature].tolist())
    ]
    return sorted(pool, key=lambda t: -t[2])[:n]


def deactivation_table(
    ld: LayerDeactivation,
    matches: FlowMatches,
    features: Sequence[int],
    n_windows: int,
    rng: np.random.Generator,
    r: float = 0.0,
    top_n: int = 5,
) -> pd.DataFrame:
    """For each residual feature of ``ld.layer``: change and success of the three METHODS.

    Each feature is measured on up to ``n_windows`` contexts drawn (``rng``) among those where it
    fires. Exhaustive search tries every predecessor active on a measured token (an inactive one
    has ``a_p = 0`` there and no effect) plus the two cosine picks, and keeps the largest change.
    One row per (feature, method) with the chosen ``kind``, ``predecessor`` and its ``cosine``."""
    layer = ld.layer
    unit_target = to_cpu(unit_rows(ld.saes["target"].W_dec.detach(), torch.float32))
    unit_src = {kind: to_cpu(unit_rows(ld.saes[kind].W_dec.detach(), torch.float32)) for kind in SOURCES}
    rows = []
    for f in features:
        fires = to_cpu(torch.nonzero(ld.firing(int(f)).any(1)).flatten()).numpy()
        if len(fires) == 0:
            continue
        windows = np.sort(rng.choice(fires, size=min(n_windows, len(fires)), replace=False))
        pool = pooled_top(matches, layer, int(f), top_n)
        picks = {"top-1 cosine": pool[0][:2], "random top-5": pool[int(rng.integers(len(pool)))][:2]}
        cands = list(dict.fromkeys([picks["top-1 cosine"], picks["random top-5"], *ld.active_predecessors(int(f), windows)]))
        eff = ld.effects(int(f), cands, windows, r).set_index(["kind", "predecessor"])
        best = eff.sort_values(["change", "success"], ascending=False).index[0]
        picks["exhaustive"] = best
        for method in METHODS:
            kind, j = picks[method]
            e = eff.loc[(kind, j)]
            cos = float(unit_target[int(f)] @ unit_src[kind][j])
            rows.append(
                {
                    "layer": layer,
                    "feature": int(f),
                    "method": method,
                    "kind": kind,
                    "predecessor": int(j),
                    "cosine": cos,
                    "change": float(e["change"]),
                    "success": float(e["success"]),
                    "n_tokens": int(e["n_tokens"]),
                    "n_candidates": len(cands),
                }
            )
    return pd.DataFrame(rows)
