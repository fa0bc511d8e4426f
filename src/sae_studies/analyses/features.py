"""Per-feature statistics of an SAE: contributions, ablations, top activations, surface form.

Definitions:
- contribution direction u_i = decode(e_i) − decode(0): what latent i adds to the reconstruction
  per unit of activation (SAELens decoders are affine in the latents; checked at run time);
- ablating a set A of latents from the reconstruction: x̂_A = x̂ − Σ_{i∈A} z_i u_i (no re-encoding);
- marginal FVU of latent i: FVU(x̂_{i}) − FVU(x̂), exactly
  (Σ_t 2 z_ti ⟨e_t, u_i⟩ + z_ti² ‖u_i‖²) / (n · total variance), e = x − x̂;
- CE increase of an ablation: CE with x̂_A spliced in − CE with x̂ spliced in (nats/token);
- token entropy of a latent: entropy (bits) of the current token over its top activations;
  single-token share: share of those top activations on its most common current token;
- category AUROC: for each corpus category, the best single latent's AUROC at telling that
  category's tokens from the rest (0.5 is chance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import entropy

from ..checks import check_masks
from ..devices import device_of, to_cpu, to_device, to_numpy
from .quality import Splicer, VarianceAccumulator


@torch.no_grad()
def feature_contributions(sae) -> torch.Tensor:
    """[F, d] contribution directions u_i = decode(e_i) − decode(0) of a SAELens SAE, on the SAE's
    device (steering and deactivation hooks use them there)."""
    f = sae.cfg.d_sae
    dtype = sae.W_dec.dtype
    zero = sae.decode(torch.zeros(1, f, dtype=dtype, device=sae.W_dec.device))
    u = sae.decode(torch.eye(f, dtype=dtype, device=sae.W_dec.device)) - zero
    probe = torch.zeros(1, f, dtype=dtype, device=sae.W_dec.device)
    probe[0, : min(f, 3)] = torch.tensor([2.0, -0.5, 1.5][: min(f, 3)], dtype=dtype)
    expected = zero + probe @ u
    if not torch.allclose(sae.decode(probe), expected, rtol=1e-4, atol=1e-4 * float(u.abs().max())):
        raise ValueError(f"{type(sae).__name__}.decode is not affine in the latents; ablations need an affine decoder")
    return u


@torch.no_grad()
def ablation_explained_variance(
    sae, x: torch.Tensor, ablate: dict[str, torch.Tensor], batch_size: int = 4096
) -> dict[str, float]:
    """Explained variance of the reconstruction with each named set of latents ablated.

    `ablate` maps a name to a boolean mask [F] of latents removed from x̂ (no re-encoding); the
    entry `"none"` (nothing ablated) is always added. EV about the mean, float64 (see module doc).
    """
    f = sae.cfg.d_sae
    dev = device_of(sae)
    masks = check_masks("ablate", {"none": torch.zeros(f, dtype=torch.bool), **ablate}, f)
    masks = {name: to_device(m, dev) for name, m in masks.items()}
    accs = {name: VarianceAccumulator() for name in masks}
    for xb in x.split(batch_size):
        xb = to_device(xb, dev)
        z = sae.encode(xb)
        for name, m in masks.items():
            accs[name].update(xb, sae.decode(z * (~m).to(z.dtype)))
    return {name: acc.explained_variance for name, acc in accs.items()}


@torch.no_grad()
def marginal_fvu(sae, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """[F] exact increase in FVU when latent i alone is ablated from the reconstruction."""
    u = feature_contributions(sae).double()
    u_sq = u.pow(2).sum(-1)
    acc = VarianceAccumulator()
    dsse = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=u.device)
    for xb in x.split(batch_size):
        xb = to_device(xb, u)
        z = sae.encode(xb)
        x_hat = sae.decode(z)
        acc.update(xb, x_hat)
        z64, e = z.double(), (xb - x_hat).double()
        dsse += 2 * (z64 * (e @ u.T)).sum(0) + z64.pow(2).sum(0) * u_sq
    return to_numpy(dsse / acc.n / acc.total_variance)


@torch.no_grad()
def ablation_ce(splicer: Splicer, sae, ablate: dict[str, torch.Tensor]) -> dict[str, float]:
    """CE (nats/token) with the SAE reconstruction spliced in ("sae"), with each named latent set
    ablated from it (boolean masks [F]), and clean ("clean")."""
    f = sae.cfg.d_sae
    dev = device_of(sae)
    keeps = {name: to_device((~m).float(), dev) for name, m in check_masks("ablate", ablate, f).items()}

    def reps(a):  # the LM's activation moves to the SAE; the splicer moves the results back
        z = sae.encode(to_device(a, dev))
        return {"sae": sae.decode(z), **{name: sae.decode(z * k.to(z.dtype)) for name, k in keeps.items()}}

    return splicer.ce(reps, desc=f"ablation CE at {splicer.hook}")


@torch.no_grad()
def marginal_ce(splicer: Splicer, sae, features: np.ndarray) -> pd.DataFrame:
    """Single-latent ablation effects on the LM: one row per latent in `features` with
    `delta_ce` (CE with latent i ablated from x̂ − CE with x̂, nats per predicted token, over all
    tokens of `contexts`), `firings` (tokens where it is non-zero) and `delta_ce_per_firing`
    (the same increase summed over tokens, divided by its firings; NaN if it never fires)."""
    features = np.asarray(features, dtype=np.int64)
    u = feature_contributions(sae)
    feats_t = torch.as_tensor(features, device=u.device)
    fires = np.zeros(len(features))

    class _Lazy(dict):
        """Replacement tensors made one at a time (a dict of them all would hold F × [tokens, d])."""

        def __init__(self, x_hat, zf):
            super().__init__()
            self.x_hat, self.zf = x_hat, zf

        def items(self):
            yield "sae", self.x_hat
            for j, f in enumerate(features):
                yield int(f), self.x_hat - self.zf[:, j : j + 1] * u[f]

    def reps(a):
        z = sae.encode(to_device(a, u))
        x_hat = sae.decode(z)
        zf = z[:, feats_t]
        fires[:] += to_numpy((zf != 0).sum(0))
        return _Lazy(x_hat, zf)

    ce = splicer.ce(reps, desc=f"single-latent CE at {splicer.hook}")
    n_pred = splicer.n_predicted
    delta = np.array([ce[int(f)] - ce["sae"] for f in features])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_fire = np.where(fires > 0, delta * n_pred / fires, np.nan)
    return pd.DataFrame({"feature": features, "delta_ce": delta, "firings": fires, "delta_ce_per_firing": per_fire})


@dataclass
class TopActivations:
    """Per-latent firing frequency and its `n` largest activations over a token set."""

    density: np.ndarray
    """[F] share of tokens on which the latent is non-zero."""
    values: torch.Tensor
    """[F, n] largest activations, descending (0 where the latent fired on fewer than n tokens)."""
    rows: torch.Tensor
    """[F, n] int64 token rows of those activations (-1 where value is 0)."""
    n_tokens: int


@torch.no_grad()
def top_activations(source, x: torch.Tensor, n: int, batch_size: int = 4096) -> TopActivations:
    """Stream `x` [tokens, d] through an encoder and keep each latent's top-n activating rows.

    `source` is a SAELens SAE (its `encode`) or any function from activations to codes (a top-k
    cut, a HierarchicalTopK at some k, or the identity on precomputed codes). Batches of `x` move
    to `source`'s device (`devices.device_of`; a plain function: where `x` is), the running top-n
    is kept there, and the result is on the CPU."""
    if n < 1:
        raise ValueError(f"n (top activations per latent) must be ≥ 1; got {n}")
    if len(x) == 0:
        raise ValueError("no activations to rank (x has 0 rows)")
    encode = source.encode if hasattr(source, "encode") else source
    dev = device_of(source)
    vals = rows = fires = None
    offset = 0
    for xb in x.split(batch_size):
        z = encode(to_device(xb, dev) if dev is not None else xb).float()
        if vals is None:
            f = z.shape[1]
            vals, rows = torch.zeros(f, 0, device=z.device), torch.zeros(f, 0, dtype=torch.long, device=z.device)
            fires = torch.zeros(f, dtype=torch.float64, device=z.device)
        fires += (z != 0).sum(0).double()
        kk = min(n, z.shape[0])
        v, r = z.topk(kk, dim=0)  # [kk, F]
        cand_v = torch.cat([vals, v.T], 1)
        cand_r = torch.cat([rows, r.T + offset], 1)
        top_v, pos = cand_v.topk(min(n, cand_v.shape[1]), dim=1)
        vals, rows = top_v, cand_r.gather(1, pos)
        offset += xb.shape[0]
    rows = torch.where(vals > 0, rows, torch.full_like(rows, -1))
    vals = vals.clamp_min(0)
    return TopActivations(density=to_numpy(fires / offset), values=to_cpu(vals), rows=to_cpu(rows), n_tokens=offset)


def _entropy_bits(counts: np.ndarray) -> float:
    return float(entropy(counts, base=2)) + 0.0  # + 0.0 turns the −0.0 of a single token into 0.0


def ngram_at(tokens: np.ndarray, row: int, n: int, n_ctx: int) -> tuple[int, ...] | None:
    """The n tokens ending at `row` (the current token last), None if they cross a context start."""
    if row % n_ctx < n - 1:
        return None
    return tuple(int(t) for t in tokens[row - n + 1 : row + 1])


def surface_statistics(top: TopActivations, tokens: np.ndarray, n_ctx: int, min_firings: int = 8) -> pd.DataFrame:
    """Per latent: `density`, `n_top` (top activations used), `token_entropy` (bits, current token
    over the top activations), `single_token_share` (share on the most common token), `top_token`
    and `bigram_share` (share on the most common (previous, current) pair). Latents with fewer than
    `min_firings` top activations get NaN statistics: a handful of firings says nothing."""
    out = []
    for i in range(top.rows.shape[0]):
        r = top.rows[i][top.rows[i] >= 0].numpy()
        row = {"feature": i, "density": float(top.density[i]), "n_top": len(r)}
        if len(r) >= min_firings:
            toks = tokens[r]
            uniq, counts = np.unique(toks, return_counts=True)
            bigrams = [ngram_at(tokens, x, 2, n_ctx) for x in r]
            bigrams = [b for b in bigrams if b is not None]
            _, bc = np.unique(np.array(bigrams), axis=0, return_counts=True) if bigrams else (None, np.array([0]))
            row.update(
                token_entropy=_entropy_bits(counts),
                single_token_share=counts.max() / len(r),
                top_token=int(uniq[counts.argmax()]),
                bigram_share=bc.max() / len(r),
            )
        else:
            row.update(token_entropy=np.nan, single_token_share=np.nan, top_token=-1, bigram_share=np.nan)
        out.append(row)
    return pd.DataFrame(out)


def explain_feature(
    rows: np.ndarray, tokens: np.ndarray, n_ctx: int, token_str: Callable[[int], str], n_show: int = 3, max_n: int = 3
) -> dict:
    """An offline explanation from a latent's top activating rows: the most common current tokens
    and the most common n-grams ending at the current token (n = 2..max_n), each with its share of
    the top activations. `text` is a one-line summary, e.g. `'"Murphy" 62% | "'s Law" 40%'`."""
    rows = np.asarray(rows)
    rows = rows[rows >= 0]
    if len(rows) == 0:
        return {"n": 0, "tokens": [], "ngrams": [], "text": "(never fires)"}
    uniq, counts = np.unique(tokens[rows], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:n_show]
    top_tokens = [(token_str(int(uniq[j])), counts[j] / len(rows)) for j in order]
    grams = []
    for n in range(2, max_n + 1):
        gs = [ngram_at(tokens, r, n, n_ctx) for r in rows]
        gs = [g for g in gs if g is not None]
        if not gs:
            continue
        u, c = np.unique(np.array(gs), axis=0, return_counts=True)
        j = int(c.argmax())
        grams.append(("".join(token_str(int(t)) for t in u[j]), c[j] / len(rows)))
    text = " · ".join(f"{s!r} {p:.0%}" for s, p in top_tokens)
    if grams:
        best = max(grams, key=lambda g: g[1])
        text += f" | {best[0]!r} {best[1]:.0%}"
    return {"n": len(rows), "tokens": top_tokens, "ngrams": grams, "text": text}


def category_auroc(codes: torch.Tensor, categories: np.ndarray) -> dict[int, float]:
    """Best single-latent AUROC per category (rows with category < 0, separators, are skipped).

    AUROC of latent j for category c = P(a_j on a token of c > a_j on another token), with ties
    counted half, computed from average ranks (Mann-Whitney U) for all latents at once
    (:func:`rank_sums`: only the nonzero codes are sorted).
    """
    keep = categories >= 0
    cats, a = categories[keep], to_numpy(codes)
    masks = {int(c): cats == c for c in np.unique(cats)}
    masks = {c: m for c, m in masks.items() if 0 < m.sum() < len(cats)}  # both classes present
    sums = rank_sums(a if keep.all() else a[keep], list(masks.values()))
    out = {}
    for (c, pos), s in zip(masks.items(), sums):
        n_pos = int(pos.sum())
        n_neg = len(cats) - n_pos
        out[c] = float(((s - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).max())
    return out


def rank_sums(a: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """``[len(groups), F]``: per row mask of ``groups`` and column j of ``a`` ``[n, F]``, the sum
    over the masked rows of the rank of ``a[i, j]`` within column j (average ranks, 1-based, as
    ``scipy.stats.rankdata(a, axis=0)``).

    SAE codes are mostly zeros, so only the nonzero entries are sorted (by column, then value);
    the zeros of a column tie at one rank, which is counted without sorting them."""
    n, n_cols = a.shape
    r, c = np.nonzero(a)
    v = a[r, c].astype(np.float64)
    by_value = np.argsort(v)
    # then by column, stably (a radix sort for ≤ 2^15 columns): np.lexsort((v, c)), twice as fast
    order = by_value[np.argsort(c[by_value].astype(np.int16 if n_cols < 2**15 else np.int64), kind="stable")]
    r, c, v = r[order], c[order], v[order]
    nnz = np.bincount(c, minlength=n_cols)
    n_zero = n - nnz
    # average rank of each nonzero among its column's nonzeros: ties are runs of equal (column, value)
    at = np.arange(len(v)) - np.concatenate([[0], np.cumsum(nnz)[:-1]])[c]
    starts = np.ones(len(v), dtype=bool)
    starts[1:] = (c[1:] != c[:-1]) | (v[1:] != v[:-1])
    run = np.cumsum(starts) - 1
    rank = at[starts][run] + (np.bincount(run)[run] + 1) / 2
    rank += np.where(v > 0, n_zero[c], 0)  # positive codes rank above the column's zeros
    zero_rank = np.bincount(c[v < 0], minlength=n_cols) + (n_zero + 1) / 2
    out = np.empty((len(groups), n_cols))
    for i, rows in enumerate(groups):
        in_rows = rows[r]
        cols = c[in_rows]
        nonzero_sum = np.bincount(cols, weights=rank[in_rows], minlength=n_cols)
        out[i] = nonzero_sum + (int(rows.sum()) - np.bincount(cols, minlength=n_cols)) * zero_rank
    return out
