"""Study 6's stability along the flow (studies.architectures_flow): stability joined to study 5's
groups, the per-seed shares, and the verdict rule on made-up tables."""

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.studies import architectures_flow as AF


def test_stability_by_group_marks_shared_directions_stable():
    """Features 0-3 share their decoder row across the three seeds; 4-7 are random per seed."""
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(4, 16, generator=gen)
    decoders = {s: {("resid", 1): torch.cat([shared, torch.randn(4, 16, generator=gen)])} for s in range(3)}
    groups = pd.DataFrame(
        [{"seed": s, "layer": 1, "feature": f, "group": "translated" if f < 4 else "newborn"} for s in range(3) for f in range(8)]
    )
    table = AF.stability_by_group(groups, decoders, [1], tau=0.7)
    assert (table[table.feature < 4].fraction == 1).all() and (table[table.feature >= 4].fraction == 0).all()
    per_seed = AF.group_stability_per_seed(table)
    assert per_seed.delta.tolist() == [1.0, 1.0, 1.0] and (per_seed.n_translated == 4).all()
    with pytest.raises(ValueError, match="2 seeds"):
        AF.stability_by_group(groups, {0: decoders[0]}, [1], 0.7)


def _per_seed(deltas, base=0.2):
    return pd.DataFrame(
        {
            "seed": range(len(deltas)),
            "stable_translated": [base + d for d in deltas],
            "stable_newborn": [base] * len(deltas),
            "n_translated": 50,
            "n_newborn": 30,
            "delta": deltas,
        }
    )


def test_flow_verdict_agrees_disagrees_inconclusive_untested():
    assert AF.flow_stability_verdict(_per_seed([0.30, 0.32, 0.29, 0.31])).outcome == "agrees"
    assert AF.flow_stability_verdict(_per_seed([-0.30, -0.32, -0.29])).outcome == "disagrees"
    v = AF.flow_stability_verdict(_per_seed([0.2, -0.1, 0.05]))
    assert v.outcome == "inconclusive" and v.interval[0] < 0 < v.interval[1] and v.n == 3
    assert AF.flow_stability_verdict(_per_seed([0.3])).outcome == "untested"
    assert AF.flow_stability_verdict(_per_seed([0.3, np.nan])).outcome == "untested"
