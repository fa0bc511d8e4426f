"""Study 1's ladder table → the convergence gate of a named quantity, gated verdicts, the ladder
figure and the ladder's profile checks (on hand-made tables; the notebook's smoke run trains one)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sae_studies.config import load_profile
from sae_studies.studies import ladder_plots
from sae_studies.studies import stability as S1
from sae_studies.studies import stability_ladder as S1L
from sae_studies.studies.verdicts import Verdict

RUNGS = [131072, 262144, 524288]


def table(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    """A ladder table: values[arch][rung][seed] for every quantity (the same numbers)."""
    rows = []
    for arch, per_rung in values.items():
        for tokens, seeds in zip(RUNGS, per_rung):
            for seed, v in enumerate(seeds):
                rows.append(
                    {
                        "architecture": arch,
                        "tokens": tokens,
                        "seed": seed,
                        "lr": 1e-3,
                        **{q: v for q in S1L.QUANTITIES},
                        "null_fraction_stable": 0.01,
                        "null_pair_share": 0.02,
                    }
                )
    return pd.DataFrame(rows)


LEVEL = [[0.50, 0.52, 0.48], [0.60, 0.62, 0.58], [0.61, 0.63, 0.59]]  # moves 0.1, then 0.01 (sd 0.02)
MOVING = [[0.10, 0.12, 0.08], [0.20, 0.22, 0.18], [0.40, 0.42, 0.38]]  # still moving by 0.2


def test_convergence_reads_the_last_doubling_per_architecture():
    t = table({"topk": LEVEL, "batchtopk": MOVING})
    c = S1L.convergence(t, "stable", ["topk"])
    assert c.converged and c.converged_at == 262144 and c.rungs == (262144, 524288)
    assert c.change == pytest.approx(0.01) and c.seed_spread == pytest.approx(0.02)
    moving = S1L.convergence(t, "stable")  # both architectures: the one that has not converged
    assert not moving.converged and "batchtopk" in moving.quantity
    early = S1L.convergence(t, "stable", ["topk"], up_to=262144)  # read at 262k: moved 0.1 > sd
    assert not early.converged
    assert S1L.convergence(t, "stable", up_to=131072) is None  # one rung: nothing to gate on
    assert S1L.convergence(t.iloc[:0], "stable") is None


def test_convergence_rejects_unknown_names():
    t = table({"topk": LEVEL})
    with pytest.raises(ValueError, match="quantity"):
        S1L.convergence(t, "ev", ["topk"])
    with pytest.raises(ValueError, match="architectures"):
        S1L.convergence(t, "stable", ["jumprelu"])


def test_gate_verdict_and_gate_table():
    t = table({"topk": LEVEL, "batchtopk": MOVING})
    v = Verdict("claim", "paper", "0.6", "agrees", "rule")
    assert S1L.gate_verdict(v, t, "stable", architectures=["topk"]).outcome == "agrees"
    gated = S1L.gate_verdict(v, t, "stable")
    assert gated.outcome == "untested" and gated.converged_at == "not converged"
    assert S1L.gate_verdict(v, t, "stable", up_to=131072) is v  # no ladder below the budget
    g = S1L.gate_table(t)
    assert len(g) == 2 * len(S1L.QUANTITIES)
    assert set(g[g.architecture == "topk"].converged) == {True}


def test_rung_rows_on_identical_seeds_are_fully_stable(one_thread):
    import torch
    from sae_lens import SAE

    from sae_studies.saes import registry

    _ = registry  # registers the repository's classes
    sae = SAE.from_dict({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 2, "dtype": "float32", "device": "cpu"})
    x = torch.randn(512, 8)
    rows = S1L.rung_rows([sae, sae], [0, 1], x, 0.7, 1)
    assert [r["seed"] for r in rows] == [0, 1]
    live = [r for r in rows if not np.isnan(r["stable"])]
    assert all(r["stable"] == 1.0 for r in live)  # the same dictionary twice: every live latent matched
    assert rows[0]["hungarian_share"] == 1.0 and np.isnan(rows[1]["hungarian_share"])


def test_plot_ladder_draws_every_quantity():
    t = table({"topk": LEVEL, "batchtopk": MOVING})
    fig = ladder_plots.plot_ladder(t, S1L.QUANTITIES, nulls={"stable": "null_fraction_stable"}, read_at=262144)
    assert len(fig.axes) == len(S1L.QUANTITIES)
    assert len(fig.axes[0].containers) == 2  # one error-bar line per architecture
    with pytest.raises(ValueError, match="lacks columns"):
        ladder_plots.plot_ladder(t.drop(columns="seed"), S1L.QUANTITIES)


def test_check_validates_the_ladder_settings():
    cfg = load_profile("smoke").study01
    S1.check(cfg, 4)
    for change, match in [
        ({"convergence_tokens": (8192, 4096)}, "convergence_tokens"),
        ({"ladder_decay_fraction": 1.5}, "decay_fraction"),
        ({"lr_sweep_rung": 5}, "lr_sweep_rung"),
        ({"convergence_seeds": (0,)}, "convergence_seeds"),
    ]:
        with pytest.raises(ValueError, match=match):
            S1.check(dataclasses.replace(cfg, **change), 4)
