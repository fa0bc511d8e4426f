"""Foundation benchmarks, one run, ratios against baselines measured in the same run.

1. Harvest throughput: tokens/s of `activations.harvest` storing every hook (residual, MLP out and
   attention out of every layer) against tokens/s of a plain forward pass of the same model on
   the same windows. Target: ratio ≥ 0.8 (harvest stops after the last block, so it skips the
   unembedding that the plain forward pays for).
2. SAE training at the default size: tokens/s of the TopK path through SAETrainer (fast sparse
   path and SAELens' dense path), and the peak resident memory of each, measured in a fresh
   subprocess: the kernel's peak-RSS mark is reset (/proc/self/clear_refs) before the SAE is
   built, and the peak (VmHWM) minus the resident size at that moment is reported.

The model is the default profile's architecture with random weights: throughput does not depend
on what the weights learned, and the bench needs no trained model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformer_lens import HookedTransformer

from sae_studies import activations, config, lm, tokens
from sae_studies.store import Store

N_WINDOWS = 1024  # 131k tokens: enough that per-artifact fixed costs (manifests) are amortised
REPEATS = 3


def random_default_model() -> tuple[HookedTransformer, config.Profile]:
    profile = config.load_profile("default")
    model = HookedTransformer(lm.model_config(profile.lm, d_vocab=profile.corpus.vocab_size))
    model.eval()
    return model, profile


def bench_harvest() -> None:
    model, profile = random_default_model()
    n_ctx = profile.lm.n_ctx
    rng = np.random.default_rng(0)
    windows = rng.integers(0, profile.corpus.vocab_size, size=(N_WINDOWS, n_ctx), dtype=np.int32)
    stream = tokens.TokenStream(windows.reshape(-1), np.zeros(windows.size, dtype=np.int8))
    loaded = lm.LoadedModel(model, None, {"train": stream}, key="bench-random", tokens_key="bench")
    hooks = [activations.hook_name(layer, kind) for layer in range(profile.lm.n_layers) for kind in activations.HOOK_KINDS]
    n_tokens = windows.size

    def plain() -> None:
        with torch.no_grad():
            for i in range(0, N_WINDOWS, 32):
                model(torch.as_tensor(windows[i : i + 32], dtype=torch.long))

    def harvest() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            activations.harvest(loaded, hooks, n_tokens, Store(tmp), batch_size=32)

    plain()  # warm-up
    times = {"plain forward": [], f"harvest, {len(hooks)} hooks stored": []}
    for _ in range(REPEATS):  # interleaved, so load on the machine hits both alike
        for name, fn in zip(times, (plain, harvest)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rates = {name: n_tokens / min(ts) for name, ts in times.items()}
    base = rates["plain forward"]
    print(
        f"harvest: default architecture (d_model {profile.lm.d_model}, {profile.lm.n_layers} layers, n_ctx {n_ctx}), "
        f"{n_tokens:,} tokens, best of {REPEATS}"
    )
    print(f"{'path':<32}{'tokens/s':>12}{'ratio':>8}")
    for name, rate in rates.items():
        print(f"{name:<32}{rate:>12,.0f}{rate / base:>8.2f}")
    print("target: harvest / plain ≥ 0.8\n")


def train_once(fast: bool, d: int, d_sae: int, k: int, n_tokens: int) -> dict:
    """Runs in a fresh process: train one TopK SAE through SAETrainer, report rate and memory."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from sae_studies import train

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    dictionary = torch.nn.functional.normalize(torch.randn(4 * d_sae, d, generator=gen), dim=-1)

    def batches():
        while True:  # sparse ground-truth mixture: k_true active directions per row
            idx = torch.randint(0, len(dictionary), (4096, 16), generator=gen)
            yield (torch.rand(4096, 16, generator=gen)[..., None] * dictionary[idx]).sum(1)

    sae_cfg = dataclasses.replace(config.SAEConfig(), fast=fast)
    steps = n_tokens // 4096
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    before = _status_kib("VmRSS")
    sae = train.build_training_sae(train.SAESpec("topk", d_sae, k), d, sae_cfg, steps)
    cfg = SAETrainerConfig(
        total_training_samples=steps * 4096,
        train_batch_size_samples=4096,
        lr=4e-4,
        lr_end=4e-5,
        n_batches_for_norm_estimate=5,
        feature_sampling_window=steps,
    )
    trainer = SAETrainer(cfg, sae, data_provider=batches())
    trainer.step(next(trainer.data_provider))  # warm-up step, not timed
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(next(trainer.data_provider))
    seconds = time.perf_counter() - start
    return {"tokens_per_s": steps * 4096 / seconds, "peak_mib": (_status_kib("VmHWM") - before) / 1024}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def bench_training() -> None:
    profile = config.load_profile("default")
    d = profile.lm.d_model
    d_sae, k = profile.sae.expansion_factor * d, profile.sae.k
    rows = {}
    for fast in (False, True):
        out = subprocess.run(
            [sys.executable, __file__, "--train-once", json.dumps([fast, d, d_sae, k, 40 * 4096])],
            capture_output=True,
            text=True,
            check=True,
        )
        rows["fast sparse path" if fast else "SAELens dense path"] = json.loads(out.stdout.strip().splitlines()[-1])
    base = rows["SAELens dense path"]["tokens_per_s"]
    print(f"TopK SAE training through SAETrainer at the default size (d {d}, F {d_sae}, k {k}, batch 4096)")
    print(f"{'path':<22}{'tokens/s':>12}{'ratio':>8}{'peak MiB':>10}")
    for name, r in rows.items():
        print(f"{name:<22}{r['tokens_per_s']:>12,.0f}{r['tokens_per_s'] / base:>8.2f}{r['peak_mib']:>10.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-once")
    args = parser.parse_args()
    if args.train_once:
        print(json.dumps(train_once(*json.loads(args.train_once))))
    else:
        torch.set_num_threads(2)
        bench_harvest()
        bench_training()
