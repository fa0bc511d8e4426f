"""Study 6's ladder (studies.architectures_ladder): a tiny real ladder whose rows are the rung
SAEs' own metrics, the paired gap to TopK, the gate per candidate and the profile checks."""

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest

from sae_studies import ladder
from sae_studies.analyses import seed_stability
from sae_studies.config import SAEConfig, load_profile
from sae_studies.store import Store
from sae_studies.studies import architectures as A
from sae_studies.studies import architectures_ladder as AL
from sae_studies.studies.verdicts import Verdict
from sae_studies.study_config import Study06Config

B = 128
RUNGS = (8 * B, 16 * B)


def test_ladder_rows_are_the_rung_saes_metrics(tmp_path, acts, one_thread):
    C = Study06Config(
        layer=0, expansion_factor=4, k=2, hierarchical_ks=(2, 4), batch_size=B, lr=5e-3, min_firings=1,
        convergence_tokens=RUNGS, convergence_seeds=(0, 1),
    )  # fmt: skip
    profile = SimpleNamespace(study06=C, sae=SAEConfig(lr=1e-4, dead_feature_window=8, train_tokens=RUNGS[-1]))
    run = SimpleNamespace(profile=profile, store=Store(tmp_path / "s"), activations=lambda hooks, split=None: {hooks[0]: acts})
    x = acts.tensor()[:1024]
    table = AL.ladder_table(run, x, null_fraction_stable=0.01, progress=False)
    assert len(table) == len(RUNGS) * 2 * 3
    assert set(table.architecture) == {"topk", "hierarchical_topk@2", "kron"}
    assert {"tokens", "seed", "explained_variance", "l0", "dead_fraction", "stable", "null_fraction_stable"} <= set(table.columns)

    # HierarchicalTopK at rung 0, recomputed from the ladders in the store (no step trained again;
    # the study's rate, not the sae section's, trained them)
    sae_cfg = A.sae_config(profile)
    assert sae_cfg.lr == 5e-3
    lads = [
        ladder.train_ladder(acts, A.spec(C, A.HIERARCHICAL, 64, s), sae_cfg, run.store, RUNGS, B, progress=False) for s in (0, 1)
    ]
    assert all(lad.steps_run == 0 for lad in lads)
    saes = [lad.saes[0] for lad in lads]
    scores = seed_stability.stability_scores([m.W_dec for m in saes], C.tau)
    want, _ = A.quality_and_stability(saes[1], 2, x, scores.fraction[1], 1)
    got = table[(table.tokens == RUNGS[0]) & (table.seed == 1) & (table.architecture == "hierarchical_topk@2")].iloc[0]
    for col, value in want.items():
        assert got[col] == pytest.approx(value)
    full, _ = A.quality_and_stability(saes[1], None, x, scores.fraction[1], 1)
    assert got.l0 <= 2 + 1e-6 < full["l0"]  # read at its top-2 prefix, not at the trained K = 4


def _table(gap_by_rung, seeds=(0, 1, 2), base=0.2):
    rows = []
    for tokens, gap in gap_by_rung.items():
        for s in seeds:
            rows.append(
                {"architecture": "topk", "tokens": tokens, "seed": s, "stable": base + 0.001 * s, "explained_variance": 0.9}
            )
            rows.append(
                {"architecture": "kron", "tokens": tokens, "seed": s, "stable": base + gap + 0.002 * s, "explained_variance": 0.9}
            )
    return pd.DataFrame(rows)


def test_gap_is_paired_by_rung_and_seed_and_nan_for_the_reference():
    g = AL.gaps(_table({65536: -0.05, 131072: -0.02}))
    kron = g[g.architecture == "kron"].set_index(["tokens", "seed"])[AL.GAP]
    assert kron.loc[(65536, 2)] == pytest.approx(-0.05 + 0.002 * 2 - 0.001 * 2)
    assert kron.loc[(131072, 0)] == pytest.approx(-0.02)
    assert g[g.architecture == "topk"][AL.GAP].isna().all()
    with pytest.raises(ValueError, match="no 'topk' rows"):
        AL.gaps(_table({65536: 0.0}).query("architecture == 'kron'"))


def test_gate_untests_a_moving_gap_and_keeps_a_levelled_one():
    v = Verdict("kron is more reproducible", "paper", "x", "disagrees", "rule")
    moving = AL.gaps(_table({65536: -0.10, 131072: -0.05, 262144: 0.0}))
    gated = AL.gate_verdict(v, moving, "kron", up_to=262144)
    assert gated.outcome == "untested" and "rule alone would say disagrees" in gated.ours
    levelled = AL.gaps(_table({65536: -0.10, 131072: -0.04, 262144: -0.04}))
    kept = AL.gate_verdict(v, levelled, "kron", up_to=262144)
    assert kept.outcome == "disagrees" and kept.converged_at == "131,072 tokens"
    # up_to reads the rungs the verdict's SAEs were trained for: the moving ladder up to 131k moved too
    assert AL.gate_verdict(v, moving, "kron", up_to=131072).outcome == "untested"
    assert AL.gate_verdict(v, pd.DataFrame(), "kron", up_to=262144) is v
    assert AL.gate_verdict(v, moving, "hierarchical_topk@32", up_to=262144) is v  # not on this ladder
    gates = AL.gate_table(levelled, 262144)
    assert set(gates[gates.quantity == AL.GAP].architecture) == {"kron"}
    assert set(gates[gates.quantity == "stable"].architecture) == {"topk", "kron"}


def test_check_names_the_ladder_settings():
    p = load_profile("smoke")
    C = dataclasses.replace(p.study06, convergence_tokens=(8192, 16384))
    d, layers = p.lm.d_model, p.lm.n_layers
    A.check(C, d, layers)
    with pytest.raises(ValueError, match="study06.convergence_architectures"):
        A.check(dataclasses.replace(C, convergence_architectures=("topk", "standard")), d, layers)
    with pytest.raises(ValueError, match="study06.convergence_architectures"):
        A.check(dataclasses.replace(C, convergence_architectures=("kron",)), d, layers)
    with pytest.raises(ValueError, match="study06.convergence_seeds"):
        A.check(dataclasses.replace(C, convergence_seeds=(0,)), d, layers)
    with pytest.raises(ValueError, match="study06.convergence_tokens"):
        A.check(dataclasses.replace(C, convergence_tokens=(1000, 2048)), d, layers)
    with pytest.raises(ValueError, match="study06.convergence_seeds"):
        load_profile("smoke", {"study06.convergence_seeds": [0]})


def test_ladder_figure_names_every_panel_s_entries_once():
    from sae_studies.studies import ladder_plots

    g = AL.gaps(_table({65536: -0.1, 131072: -0.05})).assign(null_fraction_stable=0.05)
    fig = ladder_plots.plot_ladder(g, AL.QUANTITIES, nulls={"stable": "null_fraction_stable"}, null_label="covariance")
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names == ["topk", "kron", "covariance null"]  # the null is drawn in the middle panel only
    assert AL.gate_table(g).converged_at.dtype == "Int64"
