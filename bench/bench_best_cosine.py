"""Benchmark: chunked best-cosine search against the dense ``W_a @ W_b.T`` + max.

Two random Gaussian "decoders" ``[F, d]`` (float32, d = 768) are matched: for every row of A
the best cosine among the rows of B and its index (``sae_studies.analyses.cosine.best_cosine``).

* dense:   ``unit(A) @ unit(B).T`` then ``.max(dim=1)`` — the full F × F matrix.
* chunked: ``best_cosine(A, B)`` at its defaults (blocks of 4096 × 16384 rows, one reused
  256 MiB buffer).

Each case runs in a fresh subprocess with ``torch.set_num_threads(2)``. Peak memory is
``ru_maxrss`` (the process' resident high-water mark, Linux KiB) at the end minus
``ru_maxrss`` after the inputs were allocated and touched and a small warm-up matmul ran —
i.e. the *extra* memory the method needed on top of its inputs. Timing is one run of the
method (wall clock, ``time.perf_counter``). No assertions on wall-clock numbers.

Dense is run only at the paired sizes (default 32,768: a 4 GiB similarity matrix); at the
full 65,536 the dense matrix alone is 16 GiB of a 24 GiB machine shared with other jobs, so
only the chunked search runs there, to show it stays under 1 GiB extra.

Usage:  python bench/bench_best_cosine.py [--paired 16384 32768] [--full 65536] [--d 768]
        python bench/bench_best_cosine.py --quick      # small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_case(method: str, n: int, d: int, out_path: str) -> None:
    """Child process: one measurement, printed as one JSON line; results saved to out_path."""
    import torch

    sys.path.insert(0, os.path.join(REPO, "src"))
    from sae_studies.analyses.cosine import best_cosine

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g)
    b = torch.randn(n, d, generator=g)
    w = torch.randn(256, d)
    (w @ w.T).max(dim=1)  # warm up BLAS / thread pool outside the measurement
    base = _maxrss_bytes()
    t0 = time.perf_counter()
    if method == "dense":
        a_n = a / a.norm(dim=1, keepdim=True)
        b_n = b / b.norm(dim=1, keepdim=True)
        sim = a_n @ b_n.T
        values, indices = sim.max(dim=1)
        del sim, a_n, b_n
    elif method == "chunked":
        values, indices = best_cosine(a, b)
    else:
        raise ValueError(f"method must be 'dense' or 'chunked'; got {method!r}")
    seconds = time.perf_counter() - t0
    peak = _maxrss_bytes()
    torch.save({"values": values, "indices": indices}, out_path)
    print(json.dumps({"method": method, "n": n, "d": d, "seconds": seconds, "extra_bytes": peak - base}))


def measure(method: str, n: int, d: int, tmpdir: str) -> tuple[dict, str]:
    out_path = os.path.join(tmpdir, f"{method}_{n}.pt")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--case", method, str(n), "--d", str(d), "--out", out_path],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), out_path


def gib(x: float) -> str:
    return f"{x / 2**30:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paired", type=int, nargs="*", default=[32768], help="sizes run both dense and chunked")
    ap.add_argument("--full", type=int, nargs="*", default=[65536], help="sizes run chunked only")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--quick", action="store_true", help="paired 4096, full 8192 (a smoke run)")
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.case:
        run_case(args.case[0], int(args.case[1]), args.d, args.out)
        return
    if args.quick:
        args.paired, args.full = [4096], [8192]

    import torch

    print(f"best cosine search, two random float32 dictionaries [F, d], d = {args.d}, 2 threads")
    print("extra memory = ru_maxrss after the search − ru_maxrss after allocating the inputs (fresh process per case)")
    print()
    header = f"{'F':>7} {'method':>8} {'time s':>8} {'extra GiB':>10} {'time ratio':>11} {'mem ratio':>10}  note"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.paired:
            dense, dpath = measure("dense", n, args.d, tmp)
            chunk, cpath = measure("chunked", n, args.d, tmp)
            rd, rc = torch.load(dpath), torch.load(cpath)
            dv = float((rd["values"] - rc["values"]).abs().max())
            agree = float((rd["indices"] == rc["indices"]).double().mean())
            print(f"{n:>7} {'dense':>8} {dense['seconds']:>8.2f} {gib(dense['extra_bytes']):>10} {'1.00':>11} {'1.00':>10}")
            t_ratio = chunk["seconds"] / dense["seconds"]
            m_ratio = chunk["extra_bytes"] / max(dense["extra_bytes"], 1)
            print(
                f"{n:>7} {'chunked':>8} {chunk['seconds']:>8.2f} {gib(chunk['extra_bytes']):>10} "
                f"{t_ratio:>11.2f} {m_ratio:>10.3f}  max|Δvalue| {dv:.1e}, same index {agree:.4%}"
            )
        for n in args.full:
            chunk, _ = measure("chunked", n, args.d, tmp)
            dense_gib = n * n * 4 / 2**30
            print(
                f"{n:>7} {'chunked':>8} {chunk['seconds']:>8.2f} {gib(chunk['extra_bytes']):>10} {'':>11} {'':>10}  "
                f"dense not run: its F×F float32 matrix alone is {dense_gib:.1f} GiB"
            )
    print()
    print("ratios are chunked / dense at the same F (below 1 = chunked is cheaper)")


if __name__ == "__main__":
    main()
