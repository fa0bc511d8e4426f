"""Benchmark: TopK selection over a [B, F] pre-activation matrix, against ``torch.topk``.

After the bfloat16 encoder matmul, selection is the largest piece of the sparse TopK step
(issue 23). This measures, in one run and against ``torch.topk(k, sorted=False)`` on float32
as the baseline, the alternatives that need no custom kernel:

* ``torch.topk`` on the bfloat16 matrix the bfloat16 encoder already writes;
* chunked selection: top-k of each column chunk, then top-k of the candidates (exact);
* a ``kthvalue`` threshold per row, then a mask (exact up to ties; the mask is [B, F]).

Each alternative is checked to select the same latents as ``torch.topk`` (up to ties: the
selected values must match as multisets). Ties: ``torch.topk`` keeps an unspecified one of equal
values; chunked selection keeps whichever its chunk kept; the threshold mask keeps every tied
value (it can select more than k). Plain script, one thread by default; prints ratios.

    .venv/bin/python bench/bench_topk_select.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

SIZES = [(4096, 4608, 32), (4096, 16384, 64)]  # (B, F, k): SmolLM2 8x, d 768 at 16,384 latents


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def chunked_topk(z: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k per row: each chunk's top-k, then the top-k of those candidates."""
    B, F = z.shape
    v, i = z.view(B * (F // chunk), chunk).topk(min(k, chunk), dim=-1, sorted=False)
    v = v.view(B, -1)
    i = (i.view(B, F // chunk, -1) + torch.arange(0, F, chunk).view(1, -1, 1)).view(B, -1)
    vv, j = v.topk(k, dim=-1, sorted=False)
    return vv, i.gather(1, j)


def threshold_mask(z: torch.Tensor, k: int) -> torch.Tensor:
    """Every entry at or above its row's k-th largest value (kthvalue in float32)."""
    thr = z.float().kthvalue(z.shape[1] - k + 1, dim=-1, keepdim=True).values
    return z >= thr


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.float().sort(dim=-1).values, b.float().sort(dim=-1).values)


def bench_size(B: int, F: int, k: int, repeats: int) -> list[tuple[str, float, float, bool]]:
    """Each selection's median time at one size, its ratio to torch.topk float32, and whether it selects the same values."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, F, generator=g)
    xb = x.bfloat16()
    ref = x.topk(k, dim=-1, sorted=False).values
    ref_b = xb.topk(k, dim=-1, sorted=False).values
    rows = [("torch.topk float32", lambda: x.topk(k, dim=-1, sorted=False), True)]
    rows.append(("torch.topk bfloat16", lambda: xb.topk(k, dim=-1, sorted=False), True))
    for chunk in (512, 1024, 2048):
        if F % chunk == 0:
            ok = same_values(chunked_topk(xb, k, chunk)[0], ref_b)
            rows.append((f"chunked {chunk} bfloat16", lambda c=chunk: chunked_topk(xb, k, c), ok))
    ok = bool((threshold_mask(x, k).sum(-1) == k).all()) and same_values(x[threshold_mask(x, k)].view(B, k), ref)
    rows.append(("kthvalue threshold + mask", lambda: threshold_mask(x, k), ok))
    out, base = [], None
    for name, fn, ok in rows:
        ms = median_ms(fn, repeats)
        base = base or ms
        out.append((name, ms, ms / base, ok))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; load average {os.getloadavg()[0]:.2f} at start; times are medians of {args.repeats}")
    print(f"{'B':>5} {'F':>6} {'k':>3} | {'method':<26} {'ms':>8} {'vs topk f32':>11} | same selection")
    for B, F, k in SIZES:
        for name, ms, ratio, ok in bench_size(B, F, k, args.repeats):
            print(f"{B:>5} {F:>6} {k:>3} | {name:<26} {ms:>8.1f} {ratio:>10.2f}x | {ok}")
    print(f"load average {os.getloadavg()[0]:.2f} at end, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
