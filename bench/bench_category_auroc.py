"""Benchmark: category AUROC of every latent from sparse rank sums against dense average ranks.

Study 3's interpretability proxy (``sae_studies.analyses.features.category_auroc``) asks, for
every corpus category, how well the best single latent tells that category's tokens from the
rest. On the default profile it runs 45 times per notebook-03 run on ``[65,536, 1,024]`` codes of
which 1/16 are nonzero (k = 64).

* dense:  ``scipy.stats.rankdata(codes, axis=0)`` over the whole float64 matrix, then each
  category's rank sums (the implementation until 2026-12-07);
* sparse: ``category_auroc`` (``features.rank_sums``: only the nonzero codes are sorted, the
  zeros of a column tie at one rank).

Codes: ReLU of Gaussian pre-activations cut to the top k per row (a TopK SAE's code), with a few
latents shifted up on one category so that the best AUROC is not chance; categories drawn
uniformly from 6. One thread (as the notebooks run); each method timed once after a small
warm-up call; the two results must agree (max |ΔAUROC| printed). No assertions on wall-clock
numbers.

Usage:  python bench/bench_category_auroc.py [--rows 65536] [--latents 1024] [--k 64]
        python bench/bench_category_auroc.py --quick      # small sizes, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
from scipy.stats import rankdata  # noqa: E402

from sae_studies.analyses.features import category_auroc  # noqa: E402
from sae_studies.analyses.quality import keep_top_k  # noqa: E402


def dense_category_auroc(codes: torch.Tensor, categories: np.ndarray) -> dict[int, float]:
    """The reference: average ranks of the whole matrix (what ``category_auroc`` computed before)."""
    keep = categories >= 0
    a = codes.numpy()[keep].astype(np.float64)
    cats = categories[keep]
    ranks = rankdata(a, axis=0)
    out = {}
    for c in np.unique(cats):
        pos = cats == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        auc = (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        out[int(c)] = float(auc.max())
    return out


def make_codes(rows: int, latents: int, k: int, n_categories: int = 6) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    categories = np.random.default_rng(0).integers(0, n_categories, size=rows)
    pre = torch.randn(rows, latents, generator=g)
    for c in range(n_categories):  # latent c fires more on category c
        pre[torch.as_tensor(categories == c), c] += 2.0
    return keep_top_k(torch.relu(pre), k), categories


def timed(fn, *args) -> tuple[float, dict[int, float]]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=65_536)
    ap.add_argument("--latents", type=int, default=1_024)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="8,192 rows x 256 latents, k = 16")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.latents, args.k = 8_192, 256, 16
    torch.set_num_threads(1)
    codes, cats = make_codes(args.rows, args.latents, args.k)
    small, small_cats = codes[:512], cats[:512]
    dense_category_auroc(small, small_cats), category_auroc(small, small_cats)  # warm-up
    t_dense, ref = timed(dense_category_auroc, codes, cats)
    t_sparse, got = timed(category_auroc, codes, cats)
    diff = max(abs(ref[c] - got[c]) for c in ref)
    print(
        f"codes [{args.rows:,}, {args.latents:,}], k = {args.k} ({args.k / args.latents:.1%} nonzero), {len(ref)} categories, 1 thread"
    )
    print(f"dense rankdata : {t_dense:8.3f} s")
    print(f"sparse         : {t_sparse:8.3f} s")
    print(f"ratio dense / sparse: {t_dense / t_sparse:.1f}x   max |dAUROC| = {diff:.2e}")
    if diff > 1e-9:
        sys.exit(f"the two methods disagree by {diff:.3g}")


if __name__ == "__main__":
    main()
