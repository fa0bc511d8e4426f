"""Evaluating SAEs across sparsity budgets (study 3): top-k cuts and interpretability proxies.

- `keep_top_k(z, k)`: keep the k largest activations of each row of a latent code. Applied to a
  TopK SAE trained at K, it is "the TopK model cut to k latents"; applied to a HierarchicalTopK
  SAE it equals encoding with k (its encode is a TopK over the same pre-activations).
- `category_auroc(codes, categories)`: for each corpus category, the best single latent's
  AUROC for telling that category's tokens from the rest, averaged over categories. A code whose
  individual latents track themes scores high; 0.5 is chance. Needs no external model.
- the second proxy, top-token entropy, is `metrics.surface_statistics(...).token_entropy`: per
  latent, the entropy (bits) of the current token over its top activations, the same number
  study 1 reports. Low entropy = the latent fires on few distinct tokens (lexical, easy to name);
  it is a proxy, not a measure of meaning.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata

from .metrics import Splicer, sae_report


def keep_top_k(z: torch.Tensor, k: int) -> torch.Tensor:
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if k >= z.shape[-1]:
        return z
    values, indices = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter_(-1, indices, values)


def cut_encoder(sae, k: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`sae.encode` followed by a top-k cut (no cut when k is None)."""
    if k is None:
        return sae.encode
    return lambda x: keep_top_k(sae.encode(x), k)


def evaluate_cut(sae, k: int | None, eval_x: torch.Tensor, splicer: Splicer) -> dict:
    """Reconstruction metrics and loss recovered of `sae` with its code cut to the top k."""
    return sae_report(sae, eval_x, splicer, encode=cut_encoder(sae, k))


@torch.no_grad()
def encode_all(encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    return torch.cat([encode(b) for b in x.split(batch_size)])


def category_auroc(codes: torch.Tensor, categories: np.ndarray) -> dict[int, float]:
    """Best single-latent AUROC per category (rows with category < 0, separators, are skipped).

    AUROC of latent j for category c = P(a_j on a token of c > a_j on another token), with ties
    counted half, computed from average ranks (Mann-Whitney U) for all latents at once.
    """
    keep = categories >= 0
    a = codes[torch.as_tensor(keep)].numpy().astype(np.float64)
    cats = categories[keep]
    ranks = rankdata(a, axis=0)  # average ranks: ties (mostly zeros) count half
    out = {}
    for c in np.unique(cats):
        pos = cats == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        auc = (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        out[int(c)] = float(auc.max())
    return out


def interpolate_at_l0(l0: np.ndarray, values: np.ndarray, at: float) -> float:
    """A model family's metric at L0 = `at`, interpolated linearly in log2(L0) between its trained
    points; NaN outside the measured L0 range (no extrapolation)."""
    order = np.argsort(l0)
    x, y = np.log2(np.asarray(l0, dtype=float)[order]), np.asarray(values, dtype=float)[order]
    if len(x) == 0 or not x[0] <= np.log2(at) <= x[-1]:
        return float("nan")
    return float(np.interp(np.log2(at), x, y))


def gap_at_equal_l0(results, model: str, baselines: list[str], metric: str) -> "pd.DataFrame":
    """For each row of `model`, its metric minus the best baseline's metric interpolated at the
    same measured L0 (positive = `model` is above the baselines' front there)."""
    import pandas as pd

    rows = []
    for _, r in results[results.model == model].sort_values("k").iterrows():
        best, best_name = -np.inf, None
        for b in baselines:
            g = results[results.model == b]
            v = interpolate_at_l0(g.l0.to_numpy(), g[metric].to_numpy(), r.l0)
            if np.isfinite(v) and v > best:
                best, best_name = v, b
        rows.append({"k": int(r.k), "l0": r.l0, model: r[metric], "best baseline at same L0": best if best_name else np.nan,
                     "which": best_name, "Δ": r[metric] - best if best_name else np.nan})
    return pd.DataFrame(rows).set_index("k")
