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
    want_columns = {"tokens", "seed", "explained_variance", "l0", "dead_fraction", "stable", "read_k", "duplicate_share"}
    assert want_columns | {"null_fraction_stable"} <= set(table.columns)
    assert (
        set(table[table.architecture == "hierarchical_topk@2"].read_k) == set(table[table.architecture == "kron"].read_k) == {2}
    )
    assert table.duplicate_share.between(0, 1).all()

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


def test_lr_check_sweeps_each_ladder_architecture_and_shares_the_ladder_at_the_study_rate(tmp_path, acts, one_thread):
    C = Study06Config(
        layer=0, expansion_factor=4, k=2, hierarchical_ks=(2, 4), batch_size=B, lr=5e-3, min_firings=1,
        train_tokens=RUNGS[-1], convergence_tokens=RUNGS, convergence_seeds=(0, 1), convergence_lrs=(2.5e-3, 5e-3, 1e-2),
        lr_sweep_rung=1,
    )  # fmt: skip
    profile = SimpleNamespace(study06=C, sae=SAEConfig(lr=1e-4, dead_feature_window=8, train_tokens=RUNGS[-1]))
    run = SimpleNamespace(profile=profile, store=Store(tmp_path / "s"), activations=lambda hooks, split=None: {hooks[0]: acts})
    x = acts.tensor()[:1024]
    table = AL.ladder_table(run, x, progress=False)
    sweep = AL.lr_sweep(run, x, progress=False)
    assert set(sweep.architecture) == {"topk", "hierarchical_topk@2", "kron"}
    assert (sweep.tokens == RUNGS[-1]).all() and (sweep.study_lr == 5e-3).all()  # lr_sweep_rung=1: the top
    for arch, g in sweep.groupby("architecture"):
        assert {2.5e-3, 5e-3, 1e-2} <= set(g.lr) and g.chosen.sum() == 1
        best = g[g.chosen].iloc[0]
        at_study = g[g.lr == 5e-3].explained_variance.iloc[0]
        assert best.explained_variance == g.explained_variance.max()
        assert g.ev_given_up.iloc[0] == pytest.approx(best.explained_variance - at_study)
        assert bool(g.inside.iloc[0]) == (g.lr.min() < best.lr < g.lr.max())
        # at the study's rate the check reads the main ladder's first seed (its SAE, read at the same k)
        main = table[(table.architecture == arch) & (table.tokens == RUNGS[-1]) & (table.seed == 0)].explained_variance
        assert at_study == pytest.approx(float(main.iloc[0]), abs=1e-9)
    assert AL.lr_sweep(SimpleNamespace(profile=SimpleNamespace(study06=Study06Config())), x).empty


def _table(gap_by_rung, seeds=(0, 1, 2), base=0.2, kron_dead=0.05):
    rows = []
    common = {"explained_variance": 0.9, "l0": 32.0, "read_k": 32, "duplicate_share": 0.0}
    for tokens, gap in gap_by_rung.items():
        for s in seeds:
            rows.append(
                {"architecture": "topk", "tokens": tokens, "seed": s, "stable": base + 0.001 * s, "dead_fraction": 0.05, **common}
            )
            rows.append(
                {
                    "architecture": "kron",
                    "tokens": tokens,
                    "seed": s,
                    "stable": base + gap + 0.002 * s,
                    "dead_fraction": kron_dead,
                    **common,
                }
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


CFG = Study06Config(train_tokens=131072, seeds=(0, 1, 2, 3, 4))


def test_verdict_is_read_at_the_top_rung_and_gated_on_the_whole_ladder():
    table_verdict = Verdict("kron is more reproducible", "paper", "table: Δ -0.030", "disagrees", "rule")
    # moving: the top rung's rule says disagrees, the gap still moved over the last doubling
    moving = AL.gaps(_table({65536: -0.10, 131072: -0.05, 262144: -0.02}))
    (v,) = AL.ladder_verdicts(moving, [table_verdict], ["kron"], CFG)
    assert v.outcome == "untested" and "rule alone would say disagrees" in v.ours
    assert "read on the ladder at 262,144 tokens (3 seeds); at 131,072 tokens the rule alone says disagrees" in v.ours
    assert v.statistic == pytest.approx(-0.02 + 0.001)  # the top rung's mean paired gap (seed offsets 0.002 s − 0.001 s)
    assert v.n == 3 and v.converged_at == "not converged"
    # the table's verdict, gated up to train_tokens (131k: moving too), is what `previous` records
    assert "budget (131,072 tokens) and gated up to there: untested — table: Δ -0.030" in v.previous
    # levelled off from 131k: the top rung's reading stands, with where it levelled off
    levelled = AL.gaps(_table({65536: -0.10, 131072: -0.04, 262144: -0.04}))
    (kept,) = AL.ladder_verdicts(levelled, [table_verdict], ["kron"], CFG)
    assert kept.outcome == "disagrees" and kept.converged_at == "131,072 tokens"
    assert kept.interval[1] < 0


def test_ladder_verdicts_keep_the_table_where_there_is_no_ladder_and_untest_a_dead_top_rung():
    table_verdicts = [Verdict(f"{c} claim", "p", f"table {c}", "inconclusive", "r") for c in ("hierarchical_topk@32", "kron")]
    levelled = AL.gaps(_table({65536: -0.10, 131072: -0.04, 262144: -0.04}))
    hier, kron = AL.ladder_verdicts(levelled, table_verdicts, ["hierarchical_topk@32", "kron"], CFG)
    assert hier is table_verdicts[0]  # not on this ladder
    assert kron.outcome == "disagrees"
    assert AL.ladder_verdicts(pd.DataFrame(), table_verdicts, ["hierarchical_topk@32", "kron"], CFG) == table_verdicts
    dead = AL.gaps(_table({65536: -0.10, 131072: -0.04, 262144: -0.04}, kron_dead=0.6))
    (v,) = AL.ladder_verdicts(dead, table_verdicts[1:], ["kron"], CFG)
    assert v.outcome == "untested" and "dead share 0.60 > 0.5" in v.ours
    with pytest.raises(ValueError, match="one table verdict per candidate"):
        AL.ladder_verdicts(levelled, table_verdicts, ["kron"], CFG)


def test_gate_table_gates_the_gap_of_candidates_only():
    gates = AL.gate_table(AL.gaps(_table({65536: -0.10, 131072: -0.04, 262144: -0.04})), 262144)
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
    with pytest.raises(ValueError, match="study06.lr_sweep_rung"):
        A.check(dataclasses.replace(C, lr_sweep_rung=len(C.convergence_tokens)), d, layers)
    with pytest.raises(ValueError, match="study06.lr_sweep_rung"):
        load_profile("smoke", {"study06.lr_sweep_rung": -1})
    with pytest.raises(ValueError, match="study06.convergence_lrs"):
        load_profile("smoke", {"study06.convergence_lrs": [2e-3, 1e-3]})


def test_ladder_figure_names_every_panel_s_entries_once():
    from sae_studies.studies import ladder_plots

    g = AL.gaps(_table({65536: -0.1, 131072: -0.05})).assign(null_fraction_stable=0.05)
    fig = ladder_plots.plot_ladder(g, AL.QUANTITIES, nulls={"stable": "null_fraction_stable"}, null_label="covariance")
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names == ["topk", "kron", "covariance null"]  # the null is drawn in the middle panel only
    assert AL.gate_table(g).converged_at.dtype == "Int64"


def test_lr_sweep_figure_draws_each_architecture_s_gap_to_its_best_rate():
    from sae_studies.studies import ladder_plots

    sweep = pd.DataFrame(
        {
            "architecture": ["topk"] * 3 + ["kron"] * 3,
            "lr": [1e-3, 2e-3, 4e-3] * 2,
            "explained_variance": [0.90, 0.93, 0.92, 0.80, 0.81, 0.85],
            "chosen": [False, True, False, False, False, True],
        }
    )
    fig = ladder_plots.plot_lr_sweep(sweep, study_lr=2e-3, title="t")
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith(("topk", "kron"))]
    assert [ln.get_label() for ln in lines] == ["topk (best EV 0.930)", "kron (best EV 0.850)"]
    assert list(lines[0].get_ydata()) == pytest.approx([-0.03, 0.0, -0.01])
    assert list(lines[1].get_ydata()) == pytest.approx([-0.05, -0.04, 0.0])
    assert "the study's rate 0.002" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_yscale() == "linear"  # gaps up to 0.05: one linear axis reads them
    collapsed = sweep.assign(explained_variance=[0.90, 0.93, 0.50, 0.80, 0.81, 0.85])
    assert ladder_plots.plot_lr_sweep(collapsed).axes[0].get_yscale() == "symlog"  # a 0.43 collapse would flatten the rest
    with pytest.raises(ValueError, match="lacks columns"):
        ladder_plots.plot_lr_sweep(sweep.drop(columns="chosen"))
