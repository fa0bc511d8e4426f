"""The deactivation test of a cross-layer feature match (Laptev et al. 2025, arXiv 2502.03032):
does removing the matched predecessor switch the feature off? Positions and matches are
:mod:`.flow`'s.

Deactivation (:class:`LayerDeactivation`): at the tokens where a residual feature ``f`` of
layer ``L`` is active, the contribution of one predecessor feature ``p`` (activation ``a_p``,
contribution direction ``u_p = decode(e_p) − decode(0)``) is rescaled in its own position,
``h ← h + (r − 1)·a_p·u_p`` (``r = 0`` removes it), the block is re-run and ``f`` is re-encoded.
Activation change of ``f`` = mean over those tokens of the relative drop ``(a_f − a_f′) / a_f``
(1 = switched off, 0 = unchanged, negative = it grew); success = share of those tokens where
``a_f′ = 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..checks import check_int
from ..devices import to_cpu, to_device
from .cosine import unit_rows
from .features import feature_contributions
from .flow import SOURCES, FlowMatches, position_hook


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
        self.u = {kind: feature_contributions(self.saes[kind]).to(self.device) for kind in SOURCES}

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
