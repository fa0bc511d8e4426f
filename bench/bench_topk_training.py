"""Benchmark: SAELens' own TopK training path against the sparse fast path ("sparse_topk").

One run, same activations, batch size, hyper-parameters and seed for both paths:

* tokens/s through ``SAETrainer.fit`` (time between consecutive batch requests, first step
  excluded as warm-up), ratio fast/slow;
* fast step time / time of the encoder matmul ``addmm(b_enc, x, W_enc)`` alone;
* peak memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of a fresh subprocess per
  (size, path), reported as the peak during training minus the peak before the first step
  (data, model and optimizer already allocated) — the training working set;
* explained variance ``1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)`` (float64) on held-out
  batches after the same number of training tokens on both paths.

Activations are a sparse ground-truth mixture: ``n_true = F`` unit directions with Zipf-like
frequencies, ~k/2 active per token with exponential magnitudes, plus small Gaussian noise.
Plain script; prints a table; no assertions on wall time.

    .venv/bin/python bench/bench_topk_training.py [--quick]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

BATCH = 4096
# (d, F, k, training steps per path)
SIZES = [(192, 3072, 32, 24), (768, 16384, 64, 4)]
HELD_OUT = 4


def make_data(d: int, F: int, k: int, n_batches: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    D = torch.randn(F, d, generator=g)
    D /= D.norm(dim=-1, keepdim=True)
    p = 1.0 / (torch.arange(F, dtype=torch.float64) + 10.0)
    s = max(1, k // 2)
    batches = []
    for _ in range(n_batches):
        idx = torch.multinomial(p, BATCH * s, replacement=True, generator=g).view(BATCH, s)
        mag = torch.empty(BATCH, s).exponential_(1.0, generator=g)
        x = torch.nn.functional.embedding_bag(idx, D, per_sample_weights=mag, mode="sum")
        x += 0.01 * torch.randn(BATCH, d, generator=g)
        batches.append(x.contiguous())
    return batches


def worker(d: int, F: int, k: int, steps: int, arch: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from sae_lens.config import SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    import sae_studies.saes  # noqa: F401  registers sparse_topk

    data = make_data(d, F, k, steps + HELD_OUT)
    train, held = data[:steps], data[steps:]
    cls, cfg_cls = get_sae_training_class(arch)
    torch.manual_seed(0)
    from sae_studies.saes.sparse_topk import use_fast_bookkeeping

    sae = use_fast_bookkeeping(cls(cfg_cls(d_in=d, d_sae=F, k=k, aux_loss_coefficient=1 / 32)))  # as train.build_training_sae
    cfg = SAETrainerConfig(
        total_training_samples=BATCH * steps,
        train_batch_size_samples=BATCH,
        lr=1e-3,
        lr_end=1e-3,
        dead_feature_window=1000,
        feature_sampling_window=2000,
    )
    stamps: list[float] = []

    def provider():
        for x in train:
            stamps.append(time.perf_counter())
            yield x
        stamps.append(time.perf_counter())
        while True:  # never reached: fit stops after `steps` batches
            yield train[0]

    trainer = SAETrainer(cfg, sae, data_provider=provider())
    # encoder matmul alone, on the same shapes (median of 5)
    x0 = train[0]
    with torch.no_grad():
        torch.addmm(sae.b_enc, x0, sae.W_enc)
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            torch.addmm(sae.b_enc, x0, sae.W_enc)
            ts.append(time.perf_counter() - t)
    enc_s = sorted(ts)[2]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    os.environ.setdefault("TQDM_DISABLE", "1")
    trainer.fit()
    stamps.append(time.perf_counter())
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    intervals = [b - a for a, b in zip(stamps[:-1], stamps[1:])][:steps]
    step_s = sum(intervals[1:]) / max(1, len(intervals) - 1)

    sse = tot = 0.0
    n = 0
    s1 = torch.zeros(d, dtype=torch.float64)
    sae.eval()
    with torch.no_grad():
        for x in held:
            xh = sae(x).double()
            xd = x.double()
            sse += float((xd - xh).pow(2).sum())
            tot += float(xd.pow(2).sum())
            s1 += xd.sum(0)
            n += xd.shape[0]
    ev = 1.0 - (sse / n) / (tot / n - float((s1 / n).pow(2).sum()))
    return {
        "arch": arch,
        "step_s": step_s,
        "tokens_per_s": BATCH / step_s,
        "enc_s": enc_s,
        "peak_train_mb": (rss_after - rss_before) / 1024,
        "peak_total_mb": rss_after / 1024,
        "ev": ev,
    }


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [(d, F, k, max(3, s // 4) if quick else s) for d, F, k, s in SIZES]
    rows = []
    t0 = time.time()
    load0 = os.getloadavg()[0]
    for d, F, k, steps in sizes:
        res = {}
        for arch in ("topk", "sparse_topk"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(d), str(F), str(k), str(steps), arch],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "TQDM_DISABLE": "1"},
            )
            res[arch] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((d, F, k, steps, res["topk"], res["sparse_topk"]))

    print(
        f"SAELens TopK (slow) vs sparse_topk (fast): batch {BATCH}, Adam lr 1e-3, 2 threads, "
        f"same data/seed; tokens/s excludes the first step"
    )
    print(
        "peak MB = ru_maxrss growth during fit() in a fresh subprocess (training working set); "
        "EV = 1 - E||x-x_hat||^2/(E||x||^2-||Ex||^2), float64, "
        f"{HELD_OUT} held-out batches"
    )
    hdr = (
        f"{'d':>4} {'F':>6} {'k':>3} {'steps':>5} | {'slow tok/s':>10} {'fast tok/s':>10} "
        f"{'speed-up':>8} | {'enc ms':>7} {'fast step ms':>12} {'step/enc':>8} | "
        f"{'slow MB':>8} {'fast MB':>8} | {'EV slow':>8} {'EV fast':>8} {'|dEV|':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    for d, F, k, steps, slow, fast in rows:
        print(
            f"{d:>4} {F:>6} {k:>3} {steps:>5} | {slow['tokens_per_s']:>10.0f} "
            f"{fast['tokens_per_s']:>10.0f} {fast['tokens_per_s'] / slow['tokens_per_s']:>7.2f}x | "
            f"{fast['enc_s'] * 1e3:>7.1f} {fast['step_s'] * 1e3:>12.1f} "
            f"{fast['step_s'] / fast['enc_s']:>7.2f}x | "
            f"{slow['peak_train_mb']:>8.0f} {fast['peak_train_mb']:>8.0f} | "
            f"{slow['ev']:>8.4f} {fast['ev']:>8.4f} {abs(slow['ev'] - fast['ev']):>7.4f}"
        )
    print(
        f"targets: speed-up >= 2x, step/enc <= 2.5x, |dEV| < 0.01   (total {time.time() - t0:.0f} s; "
        f"1-min load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end on "
        f"{os.cpu_count()} cores: other processes share the CPU when it exceeds ~2)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        d, F, k, steps = (int(a) for a in sys.argv[2:6])
        print(json.dumps(worker(d, F, k, steps, sys.argv[6])))
    else:
        main()
