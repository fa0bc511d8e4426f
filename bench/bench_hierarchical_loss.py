"""Benchmark: the memory-flat HierarchicalTopK loss against TopK and the direct prefix tensor.

At B=4096, d=768, F=16384 and K in {32, 64, 128}, forward + backward of the loss head alone,
given the K selected latents per row (values sorted descending, indices, W_dec, b_dec, x):

* ``topk``   — plain TopK MSE on the same sparse path (``sparse_decode`` + MSE),
* ``hier``   — ``prefix_mse_loss`` (HierarchicalTopK, uniform over all K levels), memory-flat,
* ``direct`` — plain autograd on the ``B x K x d`` prefix tensor (the reference).

Time: median of 3 runs after a warm-up. Peak memory: ``ru_maxrss`` growth of a fresh subprocess
per (K, method), measured from after the inputs are allocated (so it is the loss's working set
including the ``[F, d]`` decoder gradient). A second table times a whole training step
(``SAETrainer.step``: encoder, selection, loss, AuxK bookkeeping, Adam) of ``hierarchical_topk``
against ``sparse_topk`` at the same K. Plain script, no assertions on wall time.

    .venv/bin/python bench/bench_hierarchical_loss.py [--all-direct]

The direct reference at K=128 (a 1.6 GB prefix tensor; about a minute per run on 2 cores) is
skipped unless ``--all-direct`` is given, to keep the default run to a few minutes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

B, D, F = 4096, 768, 16384
KS = (32, 64, 128)


def _inputs(K: int):
    import torch

    g = torch.Generator().manual_seed(0)
    W = torch.randn(F, D, generator=g) / D**0.5
    b = torch.randn(D, generator=g) * 0.1
    x = torch.randn(B, D, generator=g)
    # distinct random latents per row, generated in row chunks (no transient [B, F] tensor,
    # which would set the ru_maxrss high-water mark before the measurement starts)
    idx = torch.cat([torch.rand(256, F, generator=g).topk(K, dim=-1).indices for _ in range(B // 256)])
    v = torch.rand(B, K, generator=g).sort(-1, descending=True).values
    return v, idx, W, b, x


def loss_worker(K: int, method: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from sae_studies.saes.sparse_decode import (
        SparsePattern,
        prefix_level_weights,
        prefix_mse_loss,
        sparse_decode,
    )

    v0, idx, W0, b0, x = _inputs(K)
    w = prefix_level_weights(K)

    def run():
        v = v0.clone().requires_grad_()
        W = W0.clone().requires_grad_()
        b = b0.clone().requires_grad_()
        pat = SparsePattern.from_topk(idx, F)
        if method == "topk":
            loss = (sparse_decode(v, pat, W, b) - x).pow(2).sum(-1).mean()
        elif method == "hier":
            loss = prefix_mse_loss(v, pat, W, b, x, w)
        else:
            E = W[idx]
            r = (v.unsqueeze(-1) * E).cumsum(1) + b - x.unsqueeze(1)
            loss = (r.pow(2).sum(-1) * w).sum(-1).mean()
        loss.backward()
        return float(loss)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        run()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t)
    except (RuntimeError, MemoryError) as e:  # pragma: no cover - depends on the machine
        return {"error": f"{type(e).__name__}: {str(e)[:80]}"}
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"s": sorted(ts)[1], "peak_mb": (rss1 - rss0) / 1024}


def step_worker(K: int, arch: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from sae_lens.config import SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    import sae_studies.saes  # noqa: F401

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(B, D, generator=g) for _ in range(3)]
    cls, cfg_cls = get_sae_training_class(arch)
    torch.manual_seed(0)
    from sae_studies.saes.sparse_topk import use_fast_bookkeeping

    sae = use_fast_bookkeeping(cls(cfg_cls(d_in=D, d_sae=F, k=K)))  # as train.build_training_sae
    cfg = SAETrainerConfig(total_training_samples=B * 3, train_batch_size_samples=B, lr=1e-3, lr_end=1e-3)
    tr = SAETrainer(cfg, sae, data_provider=iter(xs))
    tr.step(xs[0])
    ts = []
    for x in xs[1:]:
        t = time.perf_counter()
        tr.step(x)
        ts.append(time.perf_counter() - t)
    return {"s": sum(ts) / len(ts)}


def _sub(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if out.returncode != 0:
        return {"error": f"subprocess exit {out.returncode} (killed: out of memory?)"}
    return json.loads(out.stdout.strip().splitlines()[-1])


#: K values whose direct (B x K x d) reference is skipped by default: it dominates the run time.
SKIP_DIRECT = (128,)


def main(all_direct: bool = False) -> None:
    t0 = time.time()
    load0 = os.getloadavg()[0]
    print(
        f"loss head forward+backward, B={B}, d={D}, F={F}, 2 threads; time = median of 3; "
        "peak = ru_maxrss growth in a fresh subprocess (includes the [F,d] decoder gradient)"
    )
    hdr = (
        f"{'K':>4} | {'topk ms':>8} {'hier ms':>8} {'direct ms':>9} | {'hier/topk':>9} "
        f"{'direct/topk':>11} | {'topk MB':>8} {'hier MB':>8} {'direct MB':>9} | "
        f"{'hier/topk':>9} {'direct/topk':>11}"
    )
    print(hdr)
    print("-" * len(hdr))
    for K in KS:
        skip_direct = K in SKIP_DIRECT and not all_direct
        r = {
            m: (
                {"error": "skipped (slow; run with --all-direct)"} if m == "direct" and skip_direct else _sub("--loss", str(K), m)
            )
            for m in ("topk", "hier", "direct")
        }

        def fmt(m: str, key: str, scale: float, width: int, r: dict = r) -> str:
            return f"{'n/a':>{width}}" if "error" in r[m] else f"{r[m][key] * scale:>{width}.0f}"

        def ratio(m: str, key: str, width: int, r: dict = r) -> str:
            if "error" in r[m] or "error" in r["topk"] or r["topk"][key] <= 0:
                return f"{'n/a':>{width}}"
            return f"{r[m][key] / r['topk'][key]:>{width - 1}.2f}x"

        print(
            f"{K:>4} | {fmt('topk', 's', 1e3, 8)} {fmt('hier', 's', 1e3, 8)} "
            f"{fmt('direct', 's', 1e3, 9)} | {ratio('hier', 's', 9)} {ratio('direct', 's', 11)} | "
            f"{fmt('topk', 'peak_mb', 1, 8)} {fmt('hier', 'peak_mb', 1, 8)} "
            f"{fmt('direct', 'peak_mb', 1, 9)} | {ratio('hier', 'peak_mb', 9)} "
            f"{ratio('direct', 'peak_mb', 11)}"
        )
        for m in r:
            if "error" in r[m]:
                print(f"     {m} at K={K} did not run: {r[m]['error']}")
    print("targets: hier/topk time <= 1.5x, hier/topk peak memory <= 1.1x")
    print()
    print(f"whole training step (SAETrainer.step, mean of 2 after a warm-up), B={B}, d={D}, F={F}")
    hdr2 = f"{'K':>4} | {'sparse_topk ms':>14} {'hierarchical_topk ms':>20} {'ratio':>7}"
    print(hdr2)
    print("-" * len(hdr2))
    for K in KS:
        a = _sub("--step", str(K), "sparse_topk")
        h = _sub("--step", str(K), "hierarchical_topk")
        if "error" in a or "error" in h:
            print(f"{K:>4} | failed: {a.get('error', '')} {h.get('error', '')}")
            continue
        print(f"{K:>4} | {a['s'] * 1e3:>14.0f} {h['s'] * 1e3:>20.0f} {h['s'] / a['s']:>6.2f}x")
    print(
        f"(total {time.time() - t0:.0f} s; "
        f"1-min load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end on "
        f"{os.cpu_count()} cores: other processes share the CPU when it exceeds ~2)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--loss":
        print(json.dumps(loss_worker(int(sys.argv[2]), sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--step":
        print(json.dumps(step_worker(int(sys.argv[2]), sys.argv[3])))
    else:
        main(all_direct="--all-direct" in sys.argv[1:])
