"""A ladder rung against an ordinary run of the same length (issue 18's check).

Default profile, layer-2 residual stream, TopK 8x (k = 32), study 1's batch size and learning rate,
3 seeds: the top rung of a T/4, T/2, T ladder (warmup-stable-decay, decay 20 %) against `train_sae`
at T tokens (warm-up 5 %, constant, linear decay to 0 over the last 20 %). Prints EV per seed,
study 1's live fraction stable (mean ± sd over seeds) and the Hungarian share for both, the
optimiser steps each spent (the ladder's three rungs included) and their wall-clock ratio.

T is 2M by default: up to 1M tokens the ladder's default warm-up is the ordinary run's and its top
rung is that run bit for bit (tests/test_ladder.py), so the check that can fail is a rung past 1M,
where the ladder keeps a 1M run's warm-up (52k tokens) and the ordinary run warms up over 5 % of T.

    PYTHONPATH=src python bench/bench_ladder.py [--tokens 2097152] [--profile default]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from sae_studies import activations, ladder, pipeline
from sae_studies.analyses import quality
from sae_studies.saes import registry
from sae_studies.studies import stability as S1
from sae_studies.train import train_sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2_097_152)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warmup-tokens", type=int, default=None, help="the ladder's warm-up (default: ladder.plan's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = pipeline.start(args.profile)
    C = run.profile.study01
    hook = activations.hook_name(args.layer)
    acts = run.activations([hook])[hook]
    eval_x = run.activations([hook], split="val")[hook].tensor()
    d, k, bs = acts.d, run.profile.sae.k, C.batch_size
    cfg = S1.sae_config(run.profile, args.tokens)
    rungs = [args.tokens // 4, args.tokens // 2, args.tokens]
    models, steps, seconds = {"ordinary": [], "ladder": []}, {"ordinary": 0, "ladder": 0}, {"ordinary": 0.0, "ladder": 0.0}
    for seed in args.seeds:
        spec = registry.get("topk").spec(8 * d, k, seed)
        t = time.time()
        sae, _ = train_sae(acts, spec, cfg, run.store, bs)
        seconds["ordinary"] += time.time() - t
        steps["ordinary"] += args.tokens // bs
        models["ordinary"].append(sae)
        t = time.time()
        lad = ladder.train_ladder(acts, spec, cfg, run.store, rungs, bs, warmup_tokens=args.warmup_tokens)
        seconds["ladder"] += time.time() - t
        steps["ladder"] += lad.plan.cost_steps
        models["ladder"].append(lad.saes[-1])
    rows = []
    for name, ms in models.items():
        evs = [quality.sae_reconstruction_metrics(m, eval_x).explained_variance for m in ms]
        row = S1.convergence_row(ms, eval_x, C.tau, C.min_firings)
        rows.append(
            {
                "run": name,
                **{f"ev_seed{s}": ev for s, ev in zip(args.seeds, evs)},
                "ev_mean": np.mean(evs),
                "ev_sd": np.std(evs, ddof=1),
                "stable": row["stable"],
                "stable_sd": row["stable_sd"],
                "hungarian_share": row["hungarian_share"],
                "dead": row["dead_fraction"],
                "steps (all rungs)": steps[name],
                "seconds": round(seconds[name], 1),
            }
        )
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(4).to_string(index=False))
    out = run.profile.root / "build" / f"bench_ladder_{args.tokens}_warmup{args.warmup_tokens}.csv"
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out, index=False)
    print(f"steps ladder / ordinary: {steps['ladder'] / steps['ordinary']:.3f} (3 rungs vs 1 run)")


if __name__ == "__main__":
    main()
