"""Benchmark: data-wait time against SAE step time, plain feed against the prefetched one.

One run, one memmap of realistic size (default 1M rows × d = 576 float32, 2.3 GB, SmolLM2's
width, in a temporary folder), four feeds of ``sae_studies.feed.data_feed``:

* ``plain``            — today's feed: a uniform shuffle, each batch read in the training loop
  (random rows of the memmap into pageable memory) and copied to the device synchronously;
* ``prefetch``         — the same batches read on a background thread (pinned memory and a
  non-blocking copy when the device is CUDA), ``--depth`` batches ahead;
* ``blocks``           — block-shuffled reads (blocks of 4,096 rows, windows of 16 blocks) in the loop;
* ``blocks+prefetch``  — both.

For each feed: ``--steps`` sparse TopK training steps (SparseTopKTrainingSAE at F = 8 d, k = 32,
batch 4,096, Adam) after one warm-up step, timing ``wait`` (the loop blocked on the next batch,
including its copy to the device) and ``step`` (forward, backward, optimiser step; synchronised on
CUDA); and the feed alone (``--steps`` batches with no work between them: its ceiling). Prints
mean (and median) wait ms per batch, mean step ms, the ratio wait / step and wait against the
plain feed's. A prefetched feed's mean is set by its rare stalls (the reader descheduled on a busy
machine), its median by the queue hand-off. The memmap is written once and read from the page
cache when memory allows (as on a machine whose activations fit in RAM); a cold disk waits more.

    .venv/bin/python bench/bench_data_feed.py [--rows 1048576] [--d 576] [--steps 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sae_studies import feed
from sae_studies.activations import ActivationSet
from sae_studies.store import Artifact

BATCH = 4096
FEEDS = {
    "plain": {},
    "prefetch": {"prefetch": 4},
    "blocks": {"block_rows": 4096, "window_blocks": 16},
    "blocks+prefetch": {"block_rows": 4096, "window_blocks": 16, "prefetch": 4},
}


def write_memmap(folder: Path, rows: int, d: int) -> ActivationSet:
    """A float32 [rows, d] .npy of Gaussian rows with a mean, written in chunks."""
    path = folder / "acts.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, d))
    g = np.random.default_rng(0)
    for s in range(0, rows, 65536):
        e = min(rows, s + 65536)
        out[s:e] = g.standard_normal((e - s, d), dtype=np.float32) + 0.5
    out.flush()
    del out
    return ActivationSet("bench", Artifact("activations", "bench" * 3, folder))


def make_sae(d: int, device: str):
    from sae_lens.registry import get_sae_training_class

    import sae_studies.saes  # noqa: F401  (registers the sparse classes)

    cls, cfg_cls = get_sae_training_class("sparse_topk")
    torch.manual_seed(0)
    from sae_studies.saes.sparse_topk import use_fast_bookkeeping

    sae = use_fast_bookkeeping(cls(cfg_cls(d_in=d, d_sae=8 * d, k=32, device=device)))  # as train.build_training_sae
    return sae, torch.optim.Adam(sae.parameters(), lr=1e-4)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_feed(acts: ActivationSet, name: str, opts: dict, steps: int, device: str, d: int) -> dict:
    from sae_lens.saes.sae import TrainStepInput

    sae, opt = make_sae(d, device)
    data = feed.data_feed(acts, BATCH, seed=0, device=device, **opts)
    waits, step = [], 0.0
    for i in range(steps + 1):
        t0 = time.perf_counter()
        x = next(data).to(device)  # what SAETrainer.step does: a no-op for a prefetched batch
        sync(device)
        t1 = time.perf_counter()
        out = sae.training_forward_pass(TrainStepInput(x.float(), {}, None, i, False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sync(device)
        t2 = time.perf_counter()
        if i:  # the first step warms up allocations and the reader
            waits.append(t1 - t0)
            step += t2 - t1
    if isinstance(data, feed.Prefetcher):
        data.close()
    data = feed.data_feed(acts, BATCH, seed=1, device=device, **opts)
    next(data)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(data).to(device)
    sync(device)
    alone = time.perf_counter() - t0
    if isinstance(data, feed.Prefetcher):
        data.close()
    return {
        "feed": name,
        "wait_ms": 1e3 * float(np.mean(waits)),
        "wait_median_ms": 1e3 * float(np.median(waits)),
        "step_ms": 1e3 * step / steps,
        "feed_alone_ms": 1e3 * alone / steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1 << 20)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}; torch threads {torch.get_num_threads()}; device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        acts = write_memmap(Path(tmp), args.rows, args.d)
        print(
            f"memmap {args.rows} x {args.d} float32 ({args.rows * args.d * 4 / 2**30:.2f} GiB) written in {time.perf_counter() - t0:.1f} s"
        )
        rows = [run_feed(acts, name, opts, args.steps, args.device, args.d) for name, opts in FEEDS.items()]
    base = rows[0]
    print(f"\n{'feed':<17}{'wait ms':>9}{'median':>8}{'step ms':>9}{'wait/step':>11}{'feed alone ms':>15}{'wait vs plain':>15}")
    for r in rows:
        print(
            f"{r['feed']:<17}{r['wait_ms']:>9.1f}{r['wait_median_ms']:>8.2f}{r['step_ms']:>9.1f}{r['wait_ms'] / r['step_ms']:>11.3f}"
            f"{r['feed_alone_ms']:>15.1f}{r['wait_ms'] / base['wait_ms']:>15.2f}"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
