"""Study 2's verdict rules: each on a table where it must agree, one where it must disagree and
one where it must be inconclusive (t intervals over seeds; Welch intervals between sweep cells)."""

import numpy as np
import pandas as pd

from sae_studies.studies import synthetic_claims as sc

JITTER = (-0.01, 0.0, 0.01)  # three seeds: t interval half-width 4.30 × 0.01 / √3 ≈ 0.025


def _per_seed(iso_rec, iso_stable, group_stable, group_mb, rot_mb, sub, cross, archs=("topk", "standard"), jitter=JITTER):
    rows = []
    for a in archs:
        for seed, j in enumerate(jitter):
            rows.append(
                {
                    "architecture": a,
                    "seed": seed,
                    "iso_recovered": iso_rec + j,
                    "isolated_stable": iso_stable + j,
                    "group_stable": group_stable + j,
                    "group_mean_best": group_mb + j,
                    "rot_group_mean_best": rot_mb,
                    "subspace_cos2": sub + j,
                    "cross_seed_cos2": cross + j,
                }
            )
    return pd.DataFrame(rows)


WIDE = (-0.1, 0.0, 0.1)  # interval half-width ≈ 0.25: covers any threshold within 0.25


def test_verdict_isolated():
    agree = sc.verdict_isolated(_per_seed(0.97, 0.97, 0, 0, 0, 0, 0), 0.9)
    assert agree.outcome == "agrees" and agree.n == 3 and agree.interval[0] > 0 and agree.previous
    assert sc.verdict_isolated(_per_seed(0.5, 0.97, 0, 0, 0, 0, 0), 0.9).outcome == "disagrees"
    assert sc.verdict_isolated(_per_seed(0.9, 0.9, 0, 0, 0, 0, 0, jitter=WIDE), 0.9).outcome == "inconclusive"
    mixed = pd.concat([_per_seed(0.97, 0.97, 0, 0, 0, 0, 0, ("topk",)), _per_seed(0.97, 0.5, 0, 0, 0, 0, 0, ("standard",))])
    assert sc.verdict_isolated(mixed, 0.9).outcome == "partly"


def test_verdict_low_rank_unstable_is_paired():
    assert sc.verdict_low_rank_unstable(_per_seed(1, 0.95, 0.2, 0.60, 0.58, 0, 0)).outcome == "agrees"
    assert sc.verdict_low_rank_unstable(_per_seed(1, 0.95, 0.8, 0.90, 0.58, 0, 0)).outcome == "disagrees"
    # group and isolated stability move together across seeds: paired, the margin is steady
    steady = _per_seed(1, 0.95, 0.3, 0.60, 0.58, 0, 0, jitter=WIDE)
    assert sc.verdict_low_rank_unstable(steady).outcome == "inconclusive"  # mean best − null varies with the seed
    assert sc.verdict_low_rank_unstable(_per_seed(1, 0.95, 0.47, 0.60, 0.58, 0, 0, jitter=WIDE)).outcome == "inconclusive"


def test_verdict_subspaces():
    assert sc.verdict_subspaces(_per_seed(1, 1, 0, 0, 0, 0.98, 0.96), 0.2).outcome == "agrees"
    assert sc.verdict_subspaces(_per_seed(1, 1, 0, 0, 0, 0.98, 0.40), 0.2).outcome == "disagrees"
    assert sc.verdict_subspaces(_per_seed(1, 1, 0, 0, 0, 0.92, 0.92, jitter=WIDE), 0.2).outcome == "inconclusive"


def _phase(stable, sub, sd=0.01, n=3):
    cells = [(2, 1), (2, np.nan), (8, 1), (8, np.nan)]
    return pd.DataFrame(
        [
            {
                "rank": r,
                "directions": np.nan if np.isnan(m) else m * r,
                "group_stable": s,
                "group_stable_sd": sd,
                "subspace_cos2": c,
                "subspace_cos2_sd": sd,
                "n_seeds": n,
            }
            for (r, m), s, c in zip(cells, stable, sub)
        ]
    )


def test_verdict_phase():
    agree = sc.verdict_phase(_phase([1.0, 0.6, 0.9, 0.1], [0.99, 0.95, 0.97, 0.9]))
    assert agree.outcome == "agrees" and agree.statistic == 0.9 and agree.interval[0] > 0.3
    assert sc.verdict_phase(_phase([1.0, 0.6, 0.9, 0.1], [0.99, 0.95, 0.97, 0.5])).outcome == "partly"
    assert sc.verdict_phase(_phase([0.5, 0.6, 0.9, 0.4], [0.99, 0.95, 0.97, 0.9])).outcome == "disagrees"
    assert sc.verdict_phase(_phase([0.7, 0.6, 0.9, 0.35], [0.99, 0.95, 0.97, 0.9], sd=0.1)).outcome == "inconclusive"
    assert sc.verdict_phase(_phase([1.0, 0.6, 0.9, 0.1], [0.99, 0.95, 0.97, 0.9], n=1)).outcome == "inconclusive"


def _sizes(rec, sub, sd=0.01, n=3):
    return pd.DataFrame(
        {
            "factor": [0.5, 1.0, 2.0],
            "dir_recovered": rec,
            "dir_recovered_sd": sd,
            "subspace_cos2": sub,
            "subspace_cos2_sd": sd,
            "n_seeds": n,
        }
    )


def test_verdict_dictionary_size():
    assert sc.verdict_dictionary_size(_sizes([0.1, 0.5, 0.9], [0.7, 0.95, 0.97])).outcome == "agrees"
    assert sc.verdict_dictionary_size(_sizes([0.1, 0.5, 0.9], [0.7, 0.6, 0.97])).outcome == "partly"
    assert sc.verdict_dictionary_size(_sizes([0.1, 0.1, 0.2], [0.9, 0.95, 0.97])).outcome == "disagrees"
    assert sc.verdict_dictionary_size(_sizes([0.1, 0.3, 0.45], [0.9, 0.95, 0.97], sd=0.1)).outcome == "inconclusive"
