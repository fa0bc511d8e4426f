"""Benchmark: float32 against bfloat16 (autocast) for SAE training, harvest and spliced CE.

One run, ratios against baselines measured in the same run:

* **SAE training** at (d, F, k) = (128, 1024, 32), (576, 4608, 32), (768, 16384, 64), one and two
  threads, through ``SAETrainer.fit`` as ``train.train_sae`` runs it: the float32 fast path
  (``sparse_topk``), the bfloat16 fast path (``sparse_topk`` under SAETrainer's bfloat16 autocast)
  and SAELens' own TopK (``topk``, float32). Each in a fresh subprocess: tokens/s (first step
  excluded), step time / the bfloat16 encoder matmul ``addmm(b_enc, x, W_enc)`` alone (median of
  5), and EV ``1 - E||x-x_hat||^2 / (E||x||^2 - ||E x||^2)`` (float64, held-out batches) after the
  same tokens on every path. Data: ``bench_topk_training.make_data`` (sparse ground truth).
* **The LM forward** of the embedded model at the default profile's size (4 layers, d_model 128,
  n_ctx 128), trained briefly here (``--lm-epochs``, cached under ``build/bench_precision``): harvest
  tokens/s (``run_with_hooks`` writing one residual hook as ``activations.harvest`` does) and
  spliced CE (nats/token: clean, zero-ablated, and with the activation replaced by a rank-32
  projection), float32 against bfloat16.

``--device cuda`` runs the same on a GPU (bfloat16 autocast; ``torch.cuda.synchronize`` around
every timing; thread counts do not apply). Plain script; prints tables; no assertions on time.

    .venv/bin/python bench/bench_precision.py [--quick] [--device cuda] [--no-lm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 4096
HELD_OUT = 4
# (d, F, k, steps per path: full, quick)
SIZES = [(128, 1024, 32, 64, 16), (576, 4608, 32, 16, 5), (768, 16384, 64, 8, 3)]
PATHS = ("float32", "bfloat16", "saelens")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def sae_worker(d: int, F: int, k: int, steps: int, path: str, threads: int, device: str) -> dict:
    """One SAE training run in this process; returns its timings and EV."""
    import torch

    torch.set_num_threads(threads)
    from bench_topk_training import make_data
    from sae_lens.config import SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    import sae_studies.saes  # noqa: F401  registers sparse_topk

    data = [x.to(device) for x in make_data(d, F, k, steps + HELD_OUT)]
    train, held = data[:steps], data[steps:]
    cls, cfg_cls = get_sae_training_class("topk" if path == "saelens" else "sparse_topk")
    torch.manual_seed(0)
    from sae_studies.saes.sparse_topk import use_fast_bookkeeping

    sae = use_fast_bookkeeping(
        cls(cfg_cls(d_in=d, d_sae=F, k=k, aux_loss_coefficient=1 / 32, device=device))
    )  # as train.build_training_sae
    cfg = SAETrainerConfig(
        total_training_samples=BATCH * steps,
        train_batch_size_samples=BATCH,
        lr=1e-3,
        lr_end=1e-3,
        dead_feature_window=1000,
        feature_sampling_window=2000,
        device=device,
        autocast=path == "bfloat16",
    )
    stamps: list[float] = []

    def provider():
        for x in train:
            _sync(device)
            stamps.append(time.perf_counter())
            yield x
        _sync(device)
        stamps.append(time.perf_counter())
        while True:  # never reached: fit stops after `steps` batches
            yield train[0]

    trainer = SAETrainer(cfg, sae, data_provider=provider())
    with torch.no_grad():  # the bfloat16 encoder matmul alone, same shapes (median of 5)
        xb, Wb, bb = train[0].bfloat16(), sae.W_enc.bfloat16(), sae.b_enc.bfloat16()
        out = torch.empty(BATCH, F, dtype=torch.bfloat16, device=device)
        ts = []
        for _ in range(6):
            _sync(device)
            t = time.perf_counter()
            torch.addmm(bb, xb, Wb, out=out)
            _sync(device)
            ts.append(time.perf_counter() - t)
    enc_s = sorted(ts[1:])[2]
    os.environ.setdefault("TQDM_DISABLE", "1")
    trainer.fit()
    intervals = [b - a for a, b in zip(stamps[:-1], stamps[1:])][:steps]
    step_s = sum(intervals[1:]) / max(1, len(intervals) - 1)
    sse = tot = 0.0
    n = 0
    s1 = torch.zeros(d, dtype=torch.float64, device=device)
    sae.eval()
    with torch.no_grad():
        for x in held:
            xh, xd = sae(x).double(), x.double()
            sse += float((xd - xh).pow(2).sum())
            tot += float(xd.pow(2).sum())
            s1 += xd.sum(0)
            n += xd.shape[0]
    ev = 1.0 - (sse / n) / (tot / n - float((s1 / n).pow(2).sum()))
    return {"step_s": step_s, "tokens_per_s": BATCH / step_s, "enc_bf16_s": enc_s, "ev": ev}


def lm_worker(threads: int, device: str, epochs: float, n_tokens: int) -> dict:
    """Harvest-style forward and spliced CE of the embedded default-size LM, float32 vs bfloat16."""
    import torch

    torch.set_num_threads(threads)
    from sae_studies import lm
    from sae_studies.analyses.quality import Splicer
    from sae_studies.config import CorpusConfig, LMConfig
    from sae_studies.precision import autocast
    from sae_studies.store import Store

    store = Store(Path(__file__).resolve().parents[1] / "build" / "bench_precision")
    loaded = lm.load_model(LMConfig(train_epochs=epochs, device=device, compute_dtype="float32"), CorpusConfig(), store)
    model = loaded.model
    hook = "blocks.2.hook_resid_post"
    contexts = loaded.contexts("val", n_tokens)
    out: dict = {"n_tokens": int(contexts.size), "hook": hook}
    g = torch.Generator().manual_seed(0)
    proj = torch.linalg.qr(torch.randn(model.cfg.d_model, 32, generator=g))[0].to(device)  # a fixed rank-32 "SAE"
    rows: list = []

    def writer(act, hook):
        rows.append(act.detach().reshape(-1, act.shape[-1]).float().cpu())

    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        with torch.no_grad(), autocast(dtype, device):  # activations.harvest's loop
            for _ in range(2):  # the first pass warms up
                rows.clear()
                _sync(device)
                t = time.perf_counter()
                for i in range(0, len(contexts), 32):
                    batch = torch.as_tensor(contexts[i : i + 32], dtype=torch.long, device=device)
                    model.run_with_hooks(batch, fwd_hooks=[(hook, writer)], stop_at_layer=3)
                _sync(device)
                harvest_s = time.perf_counter() - t
        acts = torch.cat(rows)
        splicer = Splicer(model, hook, contexts, cache_mib=0, compute_dtype=dtype)
        _sync(device)
        t = time.perf_counter()
        ce = splicer.ce(lambda a: {"proj": (a - a.mean(0)) @ proj @ proj.T + a.mean(0)})
        _sync(device)
        ce_s = time.perf_counter() - t
        out[name] = {
            "harvest_tokens_per_s": acts.shape[0] / harvest_s,
            "ce_s": ce_s,
            "ce_clean": ce["clean"],
            "ce_proj": ce["proj"],
            "ce_zero": splicer.ce_zero,
            "acts": acts,
        }
    a32, a16 = out["float32"].pop("acts"), out["bfloat16"].pop("acts")
    out["acts_rel_err"] = float((a16 - a32).norm() / a32.norm())
    return out


def _run(args: list[str]) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if res.returncode:
        raise RuntimeError(f"worker {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and tokens")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-lm", action="store_true", help="skip the LM forward part")
    ap.add_argument("--lm-epochs", type=float, default=0.1, help="training of the embedded LM (cached)")
    args = ap.parse_args()
    threads = [1, 2] if args.device == "cpu" else [1]
    t0, load0 = time.time(), os.getloadavg()
    print(f"SAE training, batch {BATCH}, Adam lr 1e-3, same data and seed per size; device {args.device}")
    hdr = (
        f"{'thr':>3} {'d':>4} {'F':>6} {'k':>3} {'steps':>5} | {'SAELens tok/s':>13} {'f32 tok/s':>9} {'bf16 tok/s':>10} "
        f"{'bf16/f32':>8} {'bf16/SL':>7} | {'enc bf16 ms':>11} {'bf16 step ms':>12} {'step/enc':>8} | "
        f"{'EV SL':>7} {'EV f32':>7} {'EV bf16':>7} {'|dEV|':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    for thr in threads:
        for d, F, k, full, quick in SIZES:
            steps = quick if args.quick else full
            r = {p: _run(["--sae", str(d), str(F), str(k), str(steps), p, str(thr), args.device]) for p in PATHS}
            f32, b16, sl = r["float32"], r["bfloat16"], r["saelens"]
            print(
                f"{thr:>3} {d:>4} {F:>6} {k:>3} {steps:>5} | {sl['tokens_per_s']:>13.0f} {f32['tokens_per_s']:>9.0f} "
                f"{b16['tokens_per_s']:>10.0f} {b16['tokens_per_s'] / f32['tokens_per_s']:>7.2f}x "
                f"{b16['tokens_per_s'] / sl['tokens_per_s']:>6.2f}x | {b16['enc_bf16_s'] * 1e3:>11.1f} "
                f"{b16['step_s'] * 1e3:>12.1f} {b16['step_s'] / b16['enc_bf16_s']:>7.2f}x | "
                f"{sl['ev']:>7.4f} {f32['ev']:>7.4f} {b16['ev']:>7.4f} {abs(b16['ev'] - f32['ev']):>7.4f}",
                flush=True,
            )
    print("targets: bf16/f32 >= 3x at d >= 576, step/enc <= 1.5x, |dEV| <= 0.002 (EV float64, held-out batches)")
    if not args.no_lm:
        n_tokens = 128 * 64 if args.quick else 128 * 256
        print(
            f"\nembedded LM (default size, trained {args.lm_epochs} epochs), {n_tokens} val tokens, hook blocks.2.hook_resid_post"
        )
        hdr = (
            f"{'thr':>3} | {'harvest f32 tok/s':>17} {'bf16 tok/s':>10} {'ratio':>6} | {'CE f32 s':>8} {'bf16 s':>7} "
            f"{'ratio':>6} | {'CE clean f32':>12} {'bf16':>7} {'CE proj f32':>11} {'bf16':>7} {'max|dCE|':>8} {'acts rel err':>12}"
        )
        print(hdr)
        print("-" * len(hdr))
        for thr in threads:
            r = _run(["--lm", str(thr), args.device, str(args.lm_epochs), str(n_tokens)])
            a, b = r["float32"], r["bfloat16"]
            dce = max(abs(a[key] - b[key]) for key in ("ce_clean", "ce_proj", "ce_zero"))
            print(
                f"{thr:>3} | {a['harvest_tokens_per_s']:>17.0f} {b['harvest_tokens_per_s']:>10.0f} "
                f"{b['harvest_tokens_per_s'] / a['harvest_tokens_per_s']:>5.2f}x | {a['ce_s']:>8.2f} {b['ce_s']:>7.2f} "
                f"{a['ce_s'] / b['ce_s']:>5.2f}x | {a['ce_clean']:>12.4f} {b['ce_clean']:>7.4f} {a['ce_proj']:>11.4f} "
                f"{b['ce_proj']:>7.4f} {dce:>8.4f} {r['acts_rel_err']:>12.2e}",
                flush=True,
            )
        print("targets: harvest and CE >= 2x, |dCE| <= 0.01 nats/token (clean, projected and zero-ablated CE)")
    load1 = os.getloadavg()
    print(
        f"total {time.time() - t0:.0f} s; load average (1/5/15 min) {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at start, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at end, on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sae":
        d, F, k, steps = (int(a) for a in sys.argv[2:6])
        print(json.dumps(sae_worker(d, F, k, steps, sys.argv[6], int(sys.argv[7]), sys.argv[8])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--lm":
        print(json.dumps(lm_worker(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
