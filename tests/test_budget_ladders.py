"""Sets of SAEs on token-budget ladders (studies.budget_ladders) and studies 3 and 4's ladders: the
table and the convergence gate on planted cases with a known answer, the paired gaps against a
plain loop, a tiny real ladder table, the resume of a killed KronSAE / HierarchicalTopK ladder and
the profile checks of the new settings."""

import dataclasses
import functools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies import ladder, pipeline
from sae_studies.analyses import quality
from sae_studies.config import SAEConfig, load_profile
from sae_studies.saes import registry
from sae_studies.store import Store
from sae_studies.studies import budget_ladders as BL
from sae_studies.studies import hierarchical as H
from sae_studies.studies import hierarchical_claims as hc
from sae_studies.studies import hierarchical_ladder as HL
from sae_studies.studies import kron as K
from sae_studies.studies import kron_ladder as KL
from sae_studies.studies import stability
from sae_studies.studies.verdicts import Verdict

RUNGS = [65536, 131072, 262144, 524288]
LEVEL = [[0.40, 0.45, 0.35], [0.60, 0.62, 0.58], [0.61, 0.63, 0.59], [0.615, 0.635, 0.595]]  # levels off at 131k
MOVING = [[0.10, 0.12, 0.08], [0.20, 0.22, 0.18], [0.30, 0.32, 0.28], [0.40, 0.42, 0.38]]  # +0.1 a doubling, sd 0.02


def planted(values: dict, by: str = "label", column: str = "q") -> pd.DataFrame:
    rows = []
    for group, per_rung in values.items():
        for tokens, seeds in zip(RUNGS, per_rung):
            rows += [{by: group, "tokens": tokens, "seed": s, column: v} for s, v in enumerate(seeds)]
    return pd.DataFrame(rows)


def test_gate_finds_the_rung_a_planted_quantity_levels_off_at():
    t = planted({"flat": LEVEL, "moving": MOVING})
    c = BL.convergence(t, "q", ["flat"])
    assert c.converged and c.converged_at == 131072 and c.rungs == (262144, 524288)
    assert c.change == pytest.approx(0.005) and c.seed_spread == pytest.approx(0.02)
    assert "flat" in c.quantity
    m = BL.convergence(t, "q", ["moving"])
    assert not m.converged and m.converged_at is None and m.change == pytest.approx(0.1)
    both = BL.convergence(t, "q")  # a verdict over both groups: the one that has not converged
    assert not both.converged and "moving" in both.quantity
    early = BL.convergence(t, "q", ["flat"], up_to=131072)  # read at 131k: the jump 0.40 → 0.60 > sd
    assert not early.converged and early.rungs == (65536, 131072)
    assert BL.convergence(t, "q", up_to=65536) is None  # one rung below the budget: no ladder
    assert BL.convergence(t.iloc[:0], "q") is None


def test_gate_by_a_numeric_column_names_the_group_and_rejects_unknown_names():
    t = planted({8: LEVEL, 16: MOVING}, by="k", column="ΔEV")
    c = BL.convergence(t, "ΔEV", [16], by="k", name="gap")
    assert c.quantity == "gap, k=16" and not c.converged
    with pytest.raises(ValueError, match="lacks columns"):
        BL.convergence(t, "EV", by="k")
    with pytest.raises(ValueError, match=r"k \[32\]"):
        BL.convergence(t, "ΔEV", [32], by="k")


def test_gate_verdict_and_gate_table_on_the_planted_case():
    t = planted({"flat": LEVEL, "moving": MOVING})
    v = Verdict("claim", "paper", "0.6", "agrees", "rule")
    kept = BL.gate_verdict(v, t, "q", ["flat"])
    assert kept.outcome == "agrees" and kept.converged_at == "131,072 tokens"
    gated = BL.gate_verdict(v, t, "q")
    assert gated.outcome == "untested" and gated.converged_at == "not converged"
    assert BL.gate_verdict(v, t, "q", up_to=65536) is v  # no ladder below the budget
    g = BL.gate_table(t, {"q": "quantity q"})
    assert list(g.label) == ["flat", "moving"] and list(g.converged) == [True, False]
    assert BL.gate_table(t.iloc[:0], {"q": "q"}).empty


def test_paired_gap_against_a_plain_loop():
    rng = np.random.default_rng(0)
    rows = [
        {"model": m, "k": k, "tokens": t, "seed": s, "explained_variance": rng.random()}
        for m in ("a", "b")
        for k in (2, 4)
        for t in RUNGS[:2]
        for s in (0, 1, 2)
    ]
    table = pd.DataFrame(rows[:-1])  # b's last (k, tokens, seed) missing: that key is dropped
    got = BL.paired_gap(table, "a", "b", "explained_variance", by="model", keys=("k", "tokens", "seed"))
    ev = {(r["model"], r["k"], r["tokens"], r["seed"]): r["explained_variance"] for r in rows[:-1]}
    ref = {key[1:]: ev[key] - ev[("b", *key[1:])] for key in ev if key[0] == "a" and ("b", *key[1:]) in ev}
    assert len(got) == len(ref) == 11
    for r in got.itertuples():
        assert r.gap == pytest.approx(ref[(r.k, r.tokens, r.seed)])
    with pytest.raises(ValueError, match="model='c'"):
        BL.paired_gap(table, "c", "b", "explained_variance", by="model")


def long_table_study3(rng) -> pd.DataFrame:
    rows = []
    for t in RUNGS[:3]:
        for s in (0, 1):
            rows += [{"arm": f"topk k={k}", "tokens": t, "model": "topk", "k": k, "seed": s} for k in (2, 4, 8)]
            rows += [{"arm": "hierarchical_topk K=8", "tokens": t, "model": H.HIERARCHICAL, "k": k, "seed": s} for k in (2, 4, 8)]
    return pd.DataFrame(rows).assign(explained_variance=rng.random(len(rows)), l0=1.0)


def test_study3_gap_is_hierarchical_minus_topk_per_k_rung_and_seed():
    table = long_table_study3(np.random.default_rng(1))
    got = HL.gaps(table)
    assert set(got.columns) >= {"k", "tokens", "seed", "EV topk", f"EV {H.HIERARCHICAL}", "ΔEV"}
    assert len(got) == 3 * 3 * 2
    for r in got.itertuples(index=False):
        sel = (table.k == r.k) & (table.tokens == r.tokens) & (table.seed == r.seed)
        hier = table[sel & (table.model == H.HIERARCHICAL)].explained_variance.item()
        topk = table[sel & (table.model == "topk")].explained_variance.item()
        assert r.ΔEV == pytest.approx(hier - topk)
    g = HL.gate_table(got)
    assert set(g.k) == {2, 4, 8} and set(g.quantity) == set(HL.QUANTITIES)


def test_study3_budget_verdict_reads_the_ladder_over_seeds_where_there_is_one():
    gaps = HL.gaps(long_table_study3(np.random.default_rng(2)))
    sweep = pd.DataFrame({"tokens": [2**18, 2**20], "k": [2, 2], "ΔEV": [-0.1, -0.05]})
    table, source = HL.budget_evidence(gaps, sweep)
    assert source == "ladder" and len(table) == len(gaps) and table.seed.nunique() == 2
    assert "ladder: 3 budgets, 2 seed(s)" in hc.verdict_budget(table, source=source).ours
    # one seed or no ladder: the sweep
    assert HL.budget_evidence(gaps[gaps.seed == 0], sweep)[1] == "budget sweep"
    table, source = HL.budget_evidence(pd.DataFrame(), sweep)
    assert table is sweep and source == "budget sweep"


def test_study3_reads_the_front_at_the_ladder_s_top_against_topk_and_gates_every_k():
    gap = planted({2: LEVEL, 8: MOVING}, by="k", column="ΔEV")
    before = Verdict("front", "paper", "x", "partly", "rule", n=3)
    read = HL.ladder_verdict(before, gap, 524288)
    assert read.outcome == "untested" and "k=8" in read.convergence.quantity
    level = HL.ladder_verdict(before, gap[gap.k == 2], 524288)
    top = gap[(gap.k == 2) & (gap.tokens == gap.tokens.max())]["ΔEV"]
    want = hc.verdict_front(gap[(gap.k == 2) & (gap.tokens == gap.tokens.max())])
    assert level.outcome == want.outcome == "agrees" and level.statistic == pytest.approx(top.mean()) and level.n == len(top)
    assert "against TopK at k, the ladder's one baseline" in level.ours
    assert "read at the profile's budget (524,288 tokens" in level.previous
    assert HL.ladder_verdict(before, pd.DataFrame(), 524288) is before


def test_study4_gap_is_kron_minus_topk_per_rung_and_seed():
    rng = np.random.default_rng(2)
    rows = [
        {"model": m, "tokens": t, "d_sae": 128, "seed": s, "explained_variance": rng.random()}
        for m in (KL.TOPK, KL.KRON)
        for t in RUNGS
        for s in (0, 1, 2)
    ]
    table = pd.DataFrame(rows)
    got = KL.gaps(table)
    assert len(got) == len(RUNGS) * 3
    for r in got.itertuples(index=False):
        sel = (table.tokens == r.tokens) & (table.seed == r.seed)
        ref = (
            table[sel & (table.model == KL.KRON)].explained_variance.item()
            - table[sel & (table.model == KL.TOPK)].explained_variance.item()
        )
        assert r.ΔEV == pytest.approx(ref)
    v = Verdict("equal tokens", "paper", "x", "agrees", "rule")
    flat = planted({128: LEVEL}, by="d_sae", column="ΔEV")
    assert BL.gate_verdict(v, flat, KL.GAP, None, 524288, by="d_sae").outcome == "agrees"
    assert BL.gate_verdict(v, flat, KL.GAP, None, 131072, by="d_sae").outcome == "untested"


def test_read_at_top_gates_the_top_rung_s_reading_over_the_whole_ladder():
    t = planted({"flat": LEVEL, "moving": MOVING})
    before = Verdict("claim", "paper", "budget: 0.60", "agrees", "rule", n=5)
    read = Verdict("claim", "paper", "top: 0.615", "agrees", "rule", n=3, previous="rule revised once")
    below = Verdict("claim", "paper", "262k", "partly", "rule", statistic=0.61, interval=(0.55, 0.67), n=3)
    asked = []

    def rule_at(tokens, at_below=below):
        asked.append(tokens)
        return {524288: read, 262144: at_below}[tokens]

    kept = BL.read_at_top(rule_at, before, t, "q", 131072, ["flat"], until="2026-12-06")
    assert sorted(asked) == [262144, 524288]  # the rule is read at the top two rungs only
    assert kept.outcome == "agrees" and kept.converged_at == "131,072 tokens"
    assert (
        kept.ours
        == "top: 0.615; read on the ladder at 524,288 tokens (3 seeds); at 262,144 tokens the rule alone says partly +0.61 [+0.55, +0.67]"
    )
    # `before` gated on the rungs up to its budget (131k: the jump 0.40 → 0.60 moved), earlier revisions kept
    assert kept.previous.startswith("rule revised once; until 2026-12-06 read at the profile's budget (131,072 tokens, 5 seeds)")
    assert "gated up to there: untested — budget: 0.60 [not converged" in kept.previous
    bare = Verdict("claim", "paper", "262k", "untested", "rule")  # no statistic: the outcome alone
    bare_rule = functools.partial(rule_at, at_below=bare)
    assert BL.read_at_top(bare_rule, before, t, "q", 131072, ["flat"], until="2026-12-06").ours.endswith(
        "the rule alone says untested"
    )
    moving = BL.read_at_top(rule_at, before, t, "q", 131072, ["moving"], until="2026-12-06")
    assert moving.outcome == "untested" and "the rule alone would say agrees" in moving.ours
    assert (
        BL.read_at_top(rule_at, before, t.iloc[:0], "q", 131072, until="2026-12-06") is before
    )  # no ladder: the budget's reading stands


def test_study4_equal_tokens_verdict_reads_the_ladder_s_top_rung():
    rows = []
    for tokens, gap in zip(RUNGS, (-0.05, -0.004, -0.003, -0.003)):
        for s in range(3):
            rows.append({"model": KL.TOPK, "tokens": tokens, "d_sae": 128, "seed": s, "explained_variance": 0.90 + 0.001 * s})
            rows.append(
                {"model": KL.KRON, "tokens": tokens, "d_sae": 128, "seed": s, "explained_variance": 0.90 + gap + 0.0012 * s}
            )
    ladder = pd.DataFrame(rows)
    before = Verdict("KronSAE matches TopK's explained variance at equal F, k and tokens", "p", "grid", "disagrees", "r", n=3)
    v = KL.ladder_verdict(before, ladder, KL.gaps(ladder), budget=131072)
    # −0.003 + 0.0002 s at the top: above −0.01; the gap's last move (131k → 262k, 0.001) exceeds its seed sd 0.0002
    assert v.outcome == "agrees" and v.converged_at == "262,144 tokens"
    assert v.statistic == pytest.approx(-0.003 + 0.0002) and v.n == 3
    assert (
        "read on the ladder at 524,288 tokens (3 seeds); at 262,144 tokens the rule alone says agrees -0.0028" in v.ours
        and "untested — grid [not converged; the rule alone would say disagrees]" in v.previous
    )
    assert KL.ladder_verdict(before, ladder, pd.DataFrame(), budget=131072) is before


# ---- real ladders on small synthetic activations ------------------------------------------
B = 128
STEPS = (16 * B, 32 * B)
CFG = SAEConfig(lr=5e-3, dead_feature_window=8, train_tokens=STEPS[-1])


def spec(arch: str, seed: int = 0):
    options = {"m": 2, "n": 4} if arch == "kron" else {}
    return registry.get(arch).spec(64, 4, seed, **options)


def test_ladder_table_rows_are_the_rung_saes_metrics(tmp_path, acts, one_thread):
    arms = [BL.Arm("TopK", lambda s: spec("topk", s), CFG), BL.Arm("KronSAE", lambda s: spec("kron", s), CFG)]
    x = acts.tensor()[:1024]

    def rows(label, saes, seeds):
        return [{"seed": s, "ev": quality.sae_reconstruction_metrics(m, x).explained_variance} for s, m in zip(seeds, saes)]

    store = Store(tmp_path / "s")
    table = BL.ladder_table(acts, arms, STEPS, [0, 1], store, rows, B, label_column="model", progress=False)
    assert list(table.columns) == ["model", "tokens", "seed", "ev"] and len(table) == 2 * 2 * 2
    lad = ladder.train_ladder(acts, spec("kron", 1), CFG, store, STEPS, B, progress=False)
    assert lad.steps_run == 0  # the table's ladders are in the store
    row = table[(table.model == "KronSAE") & (table.tokens == STEPS[0]) & (table.seed == 1)]
    assert row.ev.item() == quality.sae_reconstruction_metrics(lad.saes[0], x).explained_variance
    with pytest.raises(ValueError, match="distinct"):
        BL.train_arms(acts, arms[:1] * 2, STEPS, [0], store, B, progress=False)


def test_study3_rung_rows_encode_the_hierarchical_model_at_every_k(one_thread):
    from sae_lens import SAE

    hier = SAE.from_dict(
        {"architecture": "hierarchical_topk", "d_in": 8, "d_sae": 32, "k": 4, "dtype": "float32", "device": "cpu"}
    )
    x = torch.randn(256, 8)
    rows = HL.rung_rows("hierarchical_topk K=4", [hier], [3], x, [1, 2, 4])
    assert [(r["model"], r["k"], r["seed"]) for r in rows] == [(H.HIERARCHICAL, k, 3) for k in (1, 2, 4)]
    assert all(r["l0"] <= r["k"] for r in rows)


def test_checks_name_the_ladder_settings():
    p = load_profile("smoke")
    d_sae = p.study03.expansion_factor * p.lm.d_model
    H.check(p.study03, d_sae, p.lm.n_layers, p.activations.batch_size)
    K.check_config(p.study04, p.lm.d_model, p.activations.n_tokens)
    for change, match in [
        ({"convergence_seeds": (0,)}, "study03.convergence_seeds"),
        ({"convergence_tokens": (1000, 2048)}, "study03.convergence_tokens"),
        ({"ladder_decay_fraction": 1.0}, "study03.convergence_tokens / ladder_decay_fraction"),
    ]:
        with pytest.raises(ValueError, match=match):
            H.check(dataclasses.replace(p.study03, **change), d_sae, p.lm.n_layers, p.activations.batch_size)
    with pytest.raises(ValueError, match="study04.convergence_tokens"):
        K.check_config(dataclasses.replace(p.study04, convergence_tokens=(4096, 2048)), p.lm.d_model, p.activations.n_tokens)
    with pytest.raises(ValueError, match=r"study04.convergence_seeds must be ≥ 2|at least 2 distinct"):
        load_profile("smoke", {"study04.convergence_seeds": [0]})


def test_ladder_checks_use_the_profile_s_warm_up_fraction():
    """The profile-load check plans each ladder with the warm-up `train_ladder` will use
    (sae.lr_warm_up_fraction), not ladder.plan's default: a fraction whose warm-up runs past the
    first rung's branch point fails at load, naming the field, before any work."""
    p = load_profile("default")
    rungs = p.study06.convergence_tokens  # 65k first rung at batch 2,048: branches at step 25
    BL.check_ladder("study06", p.study06, p.study06.batch_size, 0.05)  # 25 warm-up steps: fits
    with pytest.raises(ValueError, match=r"study06.convergence_tokens .*sae.lr_warm_up_fraction = 0.1.*branch steps"):
        BL.check_ladder("study06", p.study06, p.study06.batch_size, 0.1)  # 51 steps: does not
    assert ladder.plan(rungs, p.study06.batch_size, p.study06.ladder_decay_fraction, 0.05).warmup_steps == 25
    with pytest.raises(ValueError, match=r"sae.lr_warm_up_fraction = 0.1"):
        pipeline.check_studies(load_profile("default", {"sae.lr_warm_up_fraction": 0.1}))
    pipeline.check_studies(load_profile("default", {"sae.lr_warm_up_fraction": 0.02}))  # a shorter one still plans
    c1 = load_profile("convergence").study01  # study 1's own override wins over the fraction, and is named
    with pytest.raises(ValueError, match=r"study01.convergence_tokens .*warm-up: study01.ladder_warmup_tokens = 1000000"):
        stability.check(dataclasses.replace(c1, ladder_warmup_tokens=10**6), n_layers=4)


def test_plot_ladder_draws_a_gap_table_by_k_with_a_zero_line():
    from sae_studies.studies import ladder_plots

    gap = planted({2: LEVEL, 8: MOVING}, by="k", column="ΔEV").assign(**{"EV topk": 0.5, f"EV {H.HIERARCHICAL}": 0.5})
    fig = ladder_plots.plot_ladder(gap, HL.QUANTITIES, by="k", group_label="k = {}", reference={HL.GAP: 0.0}, read_at=131072)
    assert len(fig.axes) == len(HL.QUANTITIES) and len(fig.axes[-1].containers) == 2  # one line per k
    labels = fig.axes[-1].get_legend_handles_labels()[1]
    assert "k = 2" in labels and "k = 8" in labels
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in fig.axes[-1].lines)  # the reference level
    assert [ax.get_yscale() for ax in fig.axes] == ["linear"] * len(HL.QUANTITIES)


def test_plot_ladder_puts_a_named_quantity_on_a_symmetric_log_axis():
    from sae_studies.studies import ladder_plots

    gap = planted({2: LEVEL}, by="k", column="ΔEV").assign(**{"EV topk": 0.5, f"EV {H.HIERARCHICAL}": 0.5})
    fig = ladder_plots.plot_ladder(gap, HL.QUANTITIES, by="k", symlog={HL.GAP: 0.01})
    scales = {ax.get_ylabel(): ax.get_yscale() for ax in fig.axes}
    assert scales[HL.QUANTITIES[HL.GAP]] == "symlog" and list(scales.values()).count("symlog") == 1
    assert fig.axes[-1].yaxis.get_transform().linthresh == 0.01
    # a gap that never leaves the linear band by a decade stays on a linear axis
    small = gap.assign(**{"ΔEV": gap["ΔEV"] / 100})
    fig = ladder_plots.plot_ladder(small, HL.QUANTITIES, by="k", symlog={HL.GAP: 0.01})
    assert fig.axes[-1].get_yscale() == "linear"


def test_widen_sweep_widens_past_the_edge_that_holds_the_best_and_stops_inside():
    import math

    def peaked_at(target):
        calls = []

        def measure(lr):
            calls.append(lr)
            return -((math.log2(lr) - math.log2(target)) ** 2)

        return measure, calls

    measure, calls = peaked_at(2.0)
    found, best, inside = BL.widen_sweep(measure, [1.0, 2.0, 4.0])
    assert (best, inside, calls) == (2.0, True, [1.0, 2.0, 4.0])  # already inside: nothing added
    measure, calls = peaked_at(16.0)
    found, best, inside = BL.widen_sweep(measure, [1.0, 2.0, 4.0], max_extensions=2)
    assert calls == [1.0, 2.0, 4.0, 8.0, 16.0] and (best, inside) == (16.0, False)  # out of extensions, at the edge
    measure, calls = peaked_at(16.0)
    assert BL.widen_sweep(measure, [1.0, 2.0, 4.0], max_extensions=3)[1:] == (16.0, True)  # 32 measured: inside
    measure, calls = peaked_at(0.25)
    found, best, inside = BL.widen_sweep(measure, [1.0, 2.0, 4.0])
    assert sorted(found) == [0.25, 0.5, 1.0, 2.0, 4.0] and (best, inside) == (0.25, False)
    with pytest.raises(ValueError, match="at least one rate"):
        BL.widen_sweep(measure, [])


def test_sweep_rungs_read_the_rung_below_the_top_unless_told():
    rungs = [65536, 131072, 262144, 524288]
    assert BL.sweep_rungs(rungs, None) == [65536, 131072, 262144]  # the rung below the top
    assert BL.sweep_rungs(rungs, 0) == [65536]
    assert BL.sweep_rungs(rungs, 3) == rungs
    assert BL.sweep_rungs([65536], None) == [65536]  # the only rung
    cfg = SimpleNamespace(convergence_tokens=rungs, lr_sweep_rung=4)
    with pytest.raises(ValueError, match=r"study06.lr_sweep_rung must be null or index study06.convergence_tokens \(0 .. 3\)"):
        BL.check_sweep_rung("study06", cfg)
    BL.check_sweep_rung("study06", SimpleNamespace(convergence_tokens=rungs, lr_sweep_rung=None))
