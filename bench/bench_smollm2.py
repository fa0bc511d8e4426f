"""Benchmarks on the real SmolLM2-135M-Instruct (loaded offline, `lm.name: smollm2`), one run,
ratios against baselines measured in the same run; no assertions on wall time.

1. Harvest throughput at layers 3 and 6: tokens/s of `activations.harvest` storing the residual
   stream, MLP out and attention out of that layer (one forward pass stopping after the layer)
   against a plain `model(tokens, stop_at_layer=L+1)` over the same windows. Target ≥ 0.8.
2. TopK SAE training on real SmolLM2 activations (blocks.6.hook_resid_post, d = 576) at
   F = 4,608 and 9,216, k = 32: the repository's fast sparse path against SAELens' own TopK
   path, through the worker of bench/bench_topk_training.py (same batches, seed and
   hyper-parameters for both; a fresh subprocess per path for the peak-memory reading), with
   its synthetic data swapped for the harvested activations.

The model comes from the repository's artifact cache (data/, converted on first use); harvested
activations go to a temporary store. One torch thread by default (--threads): on the shared
2-core machine a second thread costs more than it gives.

    .venv/bin/python bench/bench_smollm2.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_topk_training as topk_bench  # noqa: E402  (helpers shared with the synthetic TopK bench)

from sae_studies import activations, config, lm  # noqa: E402
from sae_studies.config import CorpusConfig, LMConfig  # noqa: E402
from sae_studies.store import Store  # noqa: E402

LAYERS = (3, 6)
SAE_LAYER = 6
BATCH_WINDOWS = 32  # windows of 128 tokens per forward pass, as harvest's default
REPEATS = 3
# (d, F, k, training steps per path; --quick: a quarter, at least 3)
SIZES = [(576, 4608, 32, 12), (576, 9216, 32, 8)]


def load_smollm2() -> lm.LoadedModel:
    store = Store(config.load_profile("default").data_dir)
    start = time.perf_counter()
    loaded = lm.load_model(LMConfig(name="smollm2", n_ctx=128), CorpusConfig(), store)
    print(f"SmolLM2 loaded in {time.perf_counter() - start:.1f} s (from {store.root})\n")
    return loaded


def bench_harvest(loaded: lm.LoadedModel, n_windows: int, quick: bool = False) -> None:
    model = loaded.model
    n_tokens = n_windows * loaded.n_ctx
    windows = loaded.contexts("train", n_tokens)  # what harvest runs: the BOS (id 0), then the window
    print(
        f"harvest vs plain forward: SmolLM2 ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}), "
        f"{n_tokens:,} stream tokens in batches of {BATCH_WINDOWS} contexts of {windows.shape[1]} positions "
        f"(BOS + {loaded.n_ctx}), best of {REPEATS}, {torch.get_num_threads()} thread(s)"
    )
    print(f"{'layer':>5}  {'plain tok/s':>12}  {'harvest tok/s':>13}  {'ratio':>6}   hooks stored")
    for layer in LAYERS:
        hooks = [activations.hook_name(layer, kind) for kind in ("resid", "mlp", "attn")]

        def plain(layer: int = layer) -> None:
            with torch.no_grad():
                for i in range(0, n_windows, BATCH_WINDOWS):
                    model(torch.as_tensor(windows[i : i + BATCH_WINDOWS], dtype=torch.long), stop_at_layer=layer + 1)

        def harvest(hooks: list[str] = hooks) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                activations.harvest(loaded, hooks, n_tokens, Store(tmp), batch_size=BATCH_WINDOWS)

        plain()  # warm-up
        times: dict[str, list[float]] = {"plain": [], "harvest": []}
        for _ in range(REPEATS):  # interleaved, so load on the machine hits both alike
            for name, fn in (("plain", plain), ("harvest", harvest)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        rate = {name: n_tokens / min(ts) for name, ts in times.items()}
        print(
            f"{layer:>5}  {rate['plain']:>12,.0f}  {rate['harvest']:>13,.0f}  {rate['harvest'] / rate['plain']:>6.2f}   "
            f"{', '.join(h.split('.', 2)[2] for h in hooks)}"
        )
    print(
        "target: harvest / plain ≥ 0.8" + ("  (--quick: too few tokens to amortise a harvest's fixed costs)\n" if quick else "\n")
    )


def harvest_for_training(loaded: lm.LoadedModel, n_rows: int, out: Path) -> Path:
    """n_rows of blocks.{SAE_LAYER}.hook_resid_post (float32 .npy) for the SAE workers."""
    with tempfile.TemporaryDirectory() as tmp:
        acts = activations.harvest(loaded, [activations.hook_name(SAE_LAYER)], n_rows, Store(tmp))
        x = next(iter(acts.values())).tensor().numpy()
        path = out / "acts.npy"
        np.save(path, x)
    return path


def worker(d: int, F: int, k: int, steps: int, arch: str, acts_path: str, threads: int) -> dict:
    """bench_topk_training.worker on real activations: its data maker and thread count swapped."""
    acts = torch.from_numpy(np.load(acts_path))
    if acts.shape[1] != d:
        raise ValueError(f"activations have d = {acts.shape[1]}, expected {d}")

    def real_batches(d_: int, F_: int, k_: int, n_batches: int, seed: int = 0) -> list[torch.Tensor]:
        b = topk_bench.BATCH
        if n_batches * b > len(acts):
            raise ValueError(f"need {n_batches * b} rows, harvested {len(acts)}")
        return [acts[i * b : (i + 1) * b].contiguous() for i in range(n_batches)]

    topk_bench.make_data = real_batches
    set_threads = torch.set_num_threads
    torch.set_num_threads = lambda _n: set_threads(threads)  # the shared worker asks for 2
    try:
        return topk_bench.worker(d, F, k, steps, arch)
    finally:
        torch.set_num_threads = set_threads


def bench_training(loaded: lm.LoadedModel, quick: bool, threads: int) -> None:
    sizes = [(d, F, k, max(3, s // 4) if quick else s) for d, F, k, s in SIZES]
    n_rows = (max(s for *_, s in sizes) + topk_bench.HELD_OUT) * topk_bench.BATCH
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        acts_path = harvest_for_training(loaded, n_rows, Path(tmp))
        print(
            f"TopK SAE training on SmolLM2 blocks.{SAE_LAYER}.hook_resid_post: {n_rows:,} rows harvested in "
            f"{time.perf_counter() - start:.0f} s"
        )
        rows = []
        for d, F, k, steps in sizes:
            res = {}
            for arch in ("topk", "sparse_topk"):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps([d, F, k, steps, arch, str(acts_path), threads])],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "TQDM_DISABLE": "1"},
                )
                res[arch] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((d, F, k, steps, res["topk"], res["sparse_topk"]))
    print(
        f"SAELens TopK (slow) vs sparse_topk (fast): batch {topk_bench.BATCH}, Adam lr 1e-3, {threads} thread(s), "
        f"same batches and seed; tokens/s excludes the first step; peak MB = ru_maxrss growth during fit() "
        f"(fresh subprocess); EV = 1 - E||x-x_hat||^2/(E||x||^2-||Ex||^2), float64, {topk_bench.HELD_OUT} "
        f"held-out batches"
    )
    hdr = (
        f"{'d':>4} {'F':>6} {'k':>3} {'steps':>5} | {'slow tok/s':>10} {'fast tok/s':>10} {'speed-up':>8} | "
        f"{'enc ms':>7} {'step/enc':>8} | {'slow MB':>8} {'fast MB':>8} | {'EV slow':>8} {'EV fast':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for d, F, k, steps, slow, fast in rows:
        print(
            f"{d:>4} {F:>6} {k:>3} {steps:>5} | {slow['tokens_per_s']:>10.0f} {fast['tokens_per_s']:>10.0f} "
            f"{fast['tokens_per_s'] / slow['tokens_per_s']:>7.2f}x | {fast['enc_s'] * 1e3:>7.1f} "
            f"{fast['step_s'] / fast['enc_s']:>7.2f}x | {slow['peak_train_mb']:>8.0f} {fast['peak_train_mb']:>8.0f} | "
            f"{slow['ev']:>8.4f} {fast['ev']:>8.4f}"
        )
    print("(short runs: EV compares the two paths after the same tokens, not a trained SAE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small token counts (an end-to-end check)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return
    torch.set_num_threads(args.threads)
    t0, load0 = time.time(), os.getloadavg()[0]
    loaded = load_smollm2()
    bench_harvest(loaded, n_windows=BATCH_WINDOWS // 2 if args.quick else 16 * BATCH_WINDOWS, quick=args.quick)
    bench_training(loaded, args.quick, args.threads)
    print(
        f"total {time.time() - t0:.0f} s; 1-min load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        f"on {os.cpu_count()} cores (other processes share the CPU when it exceeds the thread count)"
    )


if __name__ == "__main__":
    main()
