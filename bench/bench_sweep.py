"""Benchmark: one SAE grid in process against a local Ray cluster with 2 workers, and Ray's
overhead per task.

* grid: ``--n-jobs`` TopK SAEs (seeds 0..n-1) on synthetic low-rank activations (d = ``--d``,
  F = 8 d, k = 8), ``--tokens`` training tokens each, batch 1,024; every job one torch thread.
  In process: one after another (``sweep.InProcessRunner``). Ray: a local cluster on loopback
  (``ray.init(num_cpus=2)``, dashboard off) and ``sweep.RayRunner`` with one CPU per task, so two
  jobs run at once. Each side starts from an empty store; the wall time of ``sweep.run_jobs`` is
  measured (the cluster's start is reported on its own). Both must give the same artifact keys.
* overhead: ``--n-trivial`` calls of a function that returns at once, submitted through the
  runner and awaited (after a warm-up round that starts the workers): wall time per task.

The machine's load average (``os.getloadavg``) is printed before and after: on a shared machine
read the ratio, not the seconds.

Usage:  python bench/bench_sweep.py [--n-jobs 8] [--d 128] [--tokens 262144] [--n-trivial 200]
        python bench/bench_sweep.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from sae_studies import sweep  # noqa: E402
from sae_studies.analyses import synthetic as syn  # noqa: E402
from sae_studies.config import SAEConfig  # noqa: E402
from sae_studies.saes import registry  # noqa: E402
from sae_studies.store import Store  # noqa: E402


def grid(root: Path, n_jobs: int, d: int, tokens: int) -> list[sweep.SAEJob]:
    spec = syn.LowRankSpec(d=d, n_isolated=d // 4, n_groups=4, rank=4)
    acts = syn.materialise(spec, 16384, Store(root))
    cfg = dataclasses.replace(SAEConfig(), train_tokens=tokens, lr=2e-3, dead_feature_window=32)
    return [sweep.SAEJob(acts, registry.get("topk").spec(8 * d, 8, seed), cfg, 1024) for seed in range(n_jobs)]


def trivial(*_args) -> int:
    return 0


def warm_up(*_args) -> int:
    """Load what a training job imports (torch, SAELens, the package) into a worker."""
    import sae_studies.train  # noqa: F401

    return 0


def per_task(runner: sweep.Runner, n: int, fn=trivial) -> float:
    start = time.perf_counter()
    futures = [runner.submit(fn, i) for i in range(n)]
    for f in futures:
        f.result()
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-jobs", type=int, default=8)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=262144)
    ap.add_argument("--n-trivial", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="4 jobs of d = 64, 32k tokens; 50 trivial tasks")
    args = ap.parse_args()
    if args.quick:
        args.n_jobs, args.d, args.tokens, args.n_trivial = 4, 64, 32768, 50
    try:
        import ray
    except ImportError:
        sys.exit(f"bench_sweep: {sweep.RAY_EXTRA}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # the workers import this checkout's package (they inherit the environment of ray.init)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}  (cores: {os.cpu_count()})")
    print(f"grid: {args.n_jobs} TopK SAEs, d = {args.d}, F = {8 * args.d}, {args.tokens:,} tokens each, 1 thread per job")
    with tempfile.TemporaryDirectory() as tmp:
        local_jobs = grid(Path(tmp) / "local", args.n_jobs, args.d, args.tokens)
        start = time.perf_counter()
        local = sweep.run_jobs(local_jobs, Store(Path(tmp) / "local"), sweep.InProcessRunner(), desc="in process")
        t_local = time.perf_counter() - start

        start = time.perf_counter()
        sweep.start_ray(num_cpus=2, _node_ip_address="127.0.0.1")
        runner = sweep.RayRunner("auto", cpus_per_task=1, max_retries=0)
        per_task(runner, 4, warm_up)  # start both workers and import the package in them
        t_start = time.perf_counter() - start
        ray_jobs = grid(Path(tmp) / "ray", args.n_jobs, args.d, args.tokens)
        start = time.perf_counter()
        remote = sweep.run_jobs(ray_jobs, Store(Path(tmp) / "ray"), runner, desc="ray, 2 workers")
        t_ray = time.perf_counter() - start
        assert not local.failed and not remote.failed
        assert [a.key for a in local.artifacts] == [a.key for a in remote.artifacts], "the two runs made different SAEs"

        overhead_ray = per_task(runner, args.n_trivial)
        overhead_local = per_task(sweep.InProcessRunner(), args.n_trivial)
        ray.shutdown()
    print(f"in process:       {t_local:7.1f} s  ({t_local / args.n_jobs:.2f} s per SAE)")
    print(f"ray, 2 workers:   {t_ray:7.1f} s  (cluster start and worker warm-up, imports included: {t_start:.1f} s, not counted)")
    print(f"speed-up (in process / ray): {t_local / t_ray:.2f}x   (2 workers: at most 2x)")
    print(f"per-task overhead on a trivial job: ray {overhead_ray * 1e3:.2f} ms, in process {overhead_local * 1e6:.1f} us")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
