"""Benchmark: KronSAE's factorised encoder against TopK's dense one, both on the sparse path.

At d = 768, B = 4,096, k = 64, F in {16,384, 32,768, 65,536} and (m, n) in {(2,4), (4,4), (4,8)}:

* encoder forward + backward time — one call of ``studies.kron.EncoderPass``: the training
  step's dense no-grad pre-activations (``[B, F]`` for TopK, ``[B, h(m+n)]`` for KronSAE),
  selection (TopK's top-k; KronSAE's head maxima and two-stage top-k, never the ``[B, F]``
  post-latents), and the gradient of a linear loss on the k selected values into the encoder
  (TopK: the k latents' columns; KronSAE: the ≤ 2k distinct parents). Median of ``--repeats``
  calls after a warm-up, the architectures timed round-robin in one process so that a change
  of load hits all of them;
* peak memory — ``studies.kron.peak_memory``: the largest running sum of torch's CPU tensor
  allocation / free events (torch.profiler, ``profile_memory=True``) during one call that
  starts without the pre-activation buffer and gradients (so both count; weights do not);
* the analytic encoder FLOP ratio (m+n)/(mn) (REFERENCES §7: encoder FLOPs d·h(m+n) + k·d
  against d·F + k·d) next to the measured time ratio;
* one whole ``SAETrainer.step`` (encoder, decoder, AuxK bookkeeping, Adam) of each, mean of two
  after a warm-up (``--no-step`` skips it).

Plain script, no assertions on wall time; the machine is shared, so ratios measured in the same
run are the result. ``--quick`` runs one small size (d = 768, F = 16,384, B = 1,024).

    .venv/bin/python bench/bench_kron.py [--quick] [--threads N] [--repeats R] [--no-step]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch

D, B, K = 768, 4096, 64
SIZES = (16384, 32768, 65536)
MNS = ((2, 4), (4, 4), (4, 8))


def encoder_rows(d: int, F: int, batch: int, k: int, mns, repeats: int) -> list[dict]:
    from sae_studies.studies import kron as ks

    passes = {None: ks.EncoderPass("topk", d, F, k, None, batch)}
    passes.update({mn: ks.EncoderPass("kron", d, F, k, mn, batch) for mn in mns if F % (mn[0] * mn[1]) == 0})
    seconds = ks.time_round_robin(passes, repeats)
    rows = []
    for mn, fn in passes.items():
        rows.append(
            {"mn": mn, "s": seconds[mn], "peak": ks.peak_memory(fn), "gflop": ks.encoder_flops(d, F, k, mn) * batch / 1e9}
        )
        fn.reset()
    del passes
    gc.collect()
    return rows


def step_seconds(arch: str, d: int, F: int, batch: int, k: int, mn) -> float:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    from sae_studies.saes import registry

    recipe = registry.get(arch)
    spec = recipe.spec(F, k, 0, **({} if mn is None else {"m": mn[0], "n": mn[1]}))
    cls, cfg_cls = get_sae_training_class(recipe.training_class)
    torch.manual_seed(0)
    from sae_studies.saes.sparse_topk import use_fast_bookkeeping

    sae = use_fast_bookkeeping(
        cls(cfg_cls(d_in=d, d_sae=F, k=k, aux_loss_coefficient=1 / 32, **dict(spec.extra)))
    )  # as train.build_training_sae
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, d, generator=g) for _ in range(3)]
    cfg = SAETrainerConfig(total_training_samples=batch * 3, train_batch_size_samples=batch, lr=1e-3, lr_end=1e-3)
    trainer = SAETrainer(cfg, sae, data_provider=iter(xs))
    trainer.step(xs[0])
    ts = []
    for x in xs[1:]:
        t = time.perf_counter()
        trainer.step(x)
        ts.append(time.perf_counter() - t)
    del trainer, sae
    gc.collect()
    return sum(ts) / len(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small size (F = 16,384, B = 1,024)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-step", action="store_true", help="skip the whole SAETrainer step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    sizes, batch, mns = ((16384,), 1024, ((2, 4), (4, 8))) if args.quick else (SIZES, B, MNS)
    repeats = 2 if args.quick and args.repeats == 3 else args.repeats
    t0, load0 = time.time(), os.getloadavg()[0]

    print(
        f"encoder forward+backward on the sparse path, d={D}, B={batch}, k={K}, {args.threads} thread(s); "
        f"time = median of {repeats} round-robin calls; peak = torch CPU tensor allocations during one call "
        "(pre-activation buffer and gradients included, weights excluded)"
    )
    hdr = (
        f"{'F':>6} {'arch':>11} | {'GFLOP':>7} {'ms':>8} {'peak MiB':>9} | {'analytic':>8} {'time':>6} "
        f"{'time/analytic':>13} {'speed-up':>8} | {'memory':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    summary = []
    for F in sizes:
        rows = encoder_rows(D, F, batch, K, mns, repeats)
        base = rows[0]
        for r in rows:
            name = "TopK" if r["mn"] is None else f"Kron{r['mn']}".replace(" ", "")
            line = f"{F:>6} {name:>11} | {r['gflop']:>7.1f} {r['s'] * 1e3:>8.1f} {r['peak'] / 2**20:>9.0f} | "
            if r["mn"] is None:
                print(line + f"{'':>8} {'':>6} {'':>13} {'':>8} | {'':>6}")
                continue
            m, n = r["mn"]
            analytic, ratio, mem = (m + n) / (m * n), r["s"] / base["s"], r["peak"] / base["peak"]
            summary.append((F, r["mn"], analytic, ratio, mem))
            print(line + f"{analytic:>8.3f} {ratio:>5.2f}x {ratio / analytic:>12.2f}x {1 / ratio:>7.2f}x | {mem:>5.2f}x")
    largest = max(sizes)
    ok = [ratio / analytic <= 1.4 and mem < 1 for F, _, analytic, ratio, mem in summary if F == largest]
    print(
        f"aims at F={largest}: time ratio within 1.4x of (m+n)/(mn) and peak memory below TopK's — "
        f"met for {sum(ok)} of {len(ok)} (m,n)"
    )

    if not args.no_step:
        print()
        print(f"whole SAETrainer.step (mean of 2 after a warm-up), d={D}, B={batch}, k={K}")
        hdr2 = f"{'F':>6} | {'sparse_topk ms':>14} " + " ".join(f"{'kron' + str(mn).replace(' ', ''):>14}" for mn in mns)
        print(hdr2)
        print("-" * len(hdr2))
        for F in sizes:
            topk = step_seconds("topk", D, F, batch, K, None)
            krons = [step_seconds("kron", D, F, batch, K, mn) for mn in mns]
            print(f"{F:>6} | {topk * 1e3:>14.0f} " + " ".join(f"{s * 1e3:>8.0f} ({s / topk:.2f}x)" for s in krons))
    print(
        f"(total {time.time() - t0:.0f} s; 1-min load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        f"on {os.cpu_count()} cores: other processes share the CPU when it exceeds ~{args.threads})"
    )


if __name__ == "__main__":
    main()
