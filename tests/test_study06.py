"""Study 6 (studies.architectures): the grid, the L1 choice, collapse, the stability verdict rule
(agrees / disagrees / inconclusive / untested on made-up tables) and the cross-study summary."""

import json

import numpy as np
import pandas as pd
import pytest

from sae_studies.config import load_profile
from sae_studies.studies import architectures as A
from sae_studies.studies import verdicts
from sae_studies.study_config import Study06Config


def _table(deltas, ev_shift=0.0, l0_scale=1.0, seeds=5, base=0.3, spread=0.01):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(seeds):
        ref = base + spread * rng.normal()
        rows.append({"variant": "topk", "seed": s, "stable": ref, "explained_variance": 0.9, "l0": 32.0})
        for name, d in deltas.items():
            rows.append(
                {
                    "variant": name,
                    "seed": s,
                    "stable": ref + d + spread * rng.normal(),
                    "explained_variance": 0.9 + ev_shift,
                    "l0": 32.0 * l0_scale,
                }
            )
    return pd.DataFrame(rows)


def test_rule_agrees_when_the_candidate_is_clearly_more_stable():
    found = A.stability_verdicts(_table({"kron": 0.2, "hierarchical_topk@32": 0.15}), ["hierarchical_topk@32", "kron"])
    assert [v.outcome for v in found] == ["agrees", "agrees"]
    assert found[1].n == 5 and found[1].interval[0] > 0 and found[1].statistic == pytest.approx(0.2, abs=0.03)


def test_rule_disagrees_when_less_stable_and_is_inconclusive_when_the_interval_covers_zero():
    found = A.stability_verdicts(
        _table({"kron": -0.2, "hierarchical_topk@32": 0.0}, spread=0.05), ["hierarchical_topk@32", "kron"]
    )
    assert found[1].outcome == "disagrees"
    assert found[0].outcome == "inconclusive"
    assert found[0].interval[0] < 0 < found[0].interval[1]


def test_rule_is_inconclusive_off_equal_ev_or_l0_and_untested_when_collapsed_or_missing():
    assert A.stability_verdicts(_table({"kron": 0.2}, ev_shift=-0.05), ["kron"])[0].outcome == "inconclusive"
    assert A.stability_verdicts(_table({"kron": 0.2}, l0_scale=2.0), ["kron"])[0].outcome == "inconclusive"
    v = A.stability_verdicts(_table({"kron": 0.2}), ["kron"], collapsed_variants={"kron": "within-seed duplicates 0.9"})[0]
    assert v.outcome == "untested" and "duplicates" in v.ours
    assert A.stability_verdicts(_table({"kron": 0.2}), ["hierarchical_topk@32"])[0].outcome == "untested"
    assert A.stability_verdicts(_table({"kron": 0.2}, seeds=1), ["kron"])[0].outcome == "untested"


def test_holm_turns_a_marginal_side_into_inconclusive():
    # three seeds, a small positive effect: each alone is above 0 at 95 %, Holm over two candidates is not
    t = pd.DataFrame(
        [{"variant": "topk", "seed": s, "stable": 0.3, "explained_variance": 0.9, "l0": 32} for s in range(3)]
        + [
            {"variant": c, "seed": s, "stable": 0.3 + d, "explained_variance": 0.9, "l0": 32}
            for c in ("kron", "hierarchical_topk@32")
            for s, d in enumerate((0.01656, 0.02656, 0.03656))
        ]
    )
    found = A.stability_verdicts(t, ["hierarchical_topk@32", "kron"])
    assert all(v.interval[0] > 0 for v in found)
    assert [v.outcome for v in found] == ["inconclusive", "inconclusive"]
    assert "Holm" in found[0].ours


def test_nearest_l0_in_log_ratio():
    assert A.nearest_l0({1.0: 130.0, 5.0: 38.0, 10.0: 12.0}, 32) == 5.0
    assert A.nearest_l0({1.0: 64.0, 4.0: 16.0}, 32) == 4.0  # a tie: the sparser side
    assert A.nearest_l0({1.0: 0.0, 2.0: 500.0}, 32) == 2.0  # L0 = 0 is never nearest
    with pytest.raises(ValueError, match="l0_by_coefficient"):
        A.nearest_l0({}, 32)


def test_standard_lr_applies_to_the_standard_sae_only():
    P = load_profile("smoke", {"study06.lr": 0.002, "study06.standard_lr": 0.01})
    assert A.sae_config(P, 5.0).lr == 0.01 and A.sae_config(P, 5.0).l1_coefficient == 5.0
    assert A.sae_config(P).lr == 0.002  # every other architecture keeps the study's rate
    P = load_profile("smoke", {"study06.lr": 0.002})
    assert A.sae_config(P, 5.0).lr == 0.002  # unset: the study's rate
    with pytest.raises(ValueError, match="study06.standard_lr"):
        load_profile("smoke", {"study06.standard_lr": -1.0})


def test_collapsed_flags_duplicates_and_dead():
    t = pd.DataFrame(
        {
            "variant": ["topk", "topk", "standard", "standard", "kron"],
            "duplicate_share": [0.01, 0.02, 0.8, 0.9, 0.0],
            "dead_fraction": [0.1, 0.1, 0.0, 0.0, 0.95],
        }
    )
    out = A.collapsed(t, 0.5)
    assert set(out) == {"standard", "kron"} and "duplicates" in out["standard"] and "dead" in out["kron"]


def test_off_target_l0_flags_rows_that_miss_their_read_k():
    t = pd.DataFrame(
        {
            "variant": ["topk", "topk", "hierarchical_topk@8", "batchtopk", "standard", "standard"],
            "read_k": [32, 32, 8, 32, 32, 32],
            "l0": [32.0, 32.0, 8.0, 35.7, 140.0, 146.0],
        }
    )
    out = A.off_target_l0(t)
    assert list(out) == ["standard"] and "143 vs k = 32" in out["standard"]  # ×1.12 passes, ×4.5 does not
    assert "batchtopk" in A.off_target_l0(t, tolerance=0.1)
    from sae_studies.studies import architectures_plots as AP

    assert AP.untested_tag(out, "standard") == "L0 off target"
    assert A.l0_matched(35.7, 32) and not A.l0_matched(143.0, 32) and not A.l0_matched(24.4, 32)
    both = A.untested_rows(t.assign(duplicate_share=0.0, dead_fraction=[0.1, 0.1, 0.9, 0.1, 0.0, 0.0]), 0.5)
    assert set(both) == {"standard", "hierarchical_topk@8"} and both["hierarchical_topk@8"].startswith("dead share")


def test_variants_and_check():
    cfg = Study06Config(hierarchical_ks=(8, 32), k=32)
    labels = [v[0] for v in A.variants(cfg)]
    assert "hierarchical_topk@8" in labels and "hierarchical_topk@32" in labels and "topk" in labels
    assert A.check(cfg, 128, 4) == 1024
    with pytest.raises(ValueError, match="study06.hierarchical_ks"):
        A.check(Study06Config(hierarchical_ks=(8, 16), k=32), 128, 4)
    with pytest.raises(ValueError, match="study06.architectures"):
        A.check(Study06Config(architectures=("nope",)), 128, 4)
    with pytest.raises(ValueError, match="study06.layer"):
        A.check(Study06Config(layer=9), 128, 4)
    with pytest.raises(ValueError, match="kron"):
        A.check(Study06Config(kron_mn=(3, 5)), 128, 4)
    spec = A.spec(cfg, "hierarchical_topk", 1024, 1)
    assert spec.k == 32 and spec.seed == 1


@pytest.mark.parametrize("name", ["smoke", "default", "smollm2"])
def test_committed_profiles_pass_the_study_check(name):
    P = load_profile(name)
    A.check(P.study06, 32 if name == "smoke" else 576 if name == "smollm2" else 128, 30 if name == "smollm2" else 4)


def test_summary_table_means_and_intervals():
    t = pd.DataFrame({"variant": ["a", "a", "a", "b", "b"], "explained_variance": [0.8, 0.9, 1.0, 0.5, 0.5], "stable": [0.1] * 5})
    out = A.summary_table(t, {"fraction_stable": 0.02})
    assert out.loc["a", "explained_variance"] == pytest.approx(0.9) and out.loc["a", "n"] == 3
    assert out.loc["a", "explained_variance_ci"] == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)
    assert out.loc["b", "explained_variance_ci"] == 0 and out.loc["a", "stable_null"] == 0.02


def _findings(folder, study, verdict_list):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"findings_{study}.json").write_text(json.dumps({"verdicts": verdict_list}))


def test_headline_summary_reads_the_findings_files(tmp_path):
    v1 = {"claim": "stable features carry the signal", "paper": "0.6", "ours": "0.41 ± 0.02 (n=5)", "outcome": "partly"}
    v2 = {"claim": "second claim", "paper": "-", "ours": "x", "outcome": "agrees"}
    _findings(tmp_path / "emb", "stability", [v1, v2])
    _findings(tmp_path / "smol", "stability", [{**v1, "ours": "0.33 ± 0.05 (n=3)", "outcome": "disagrees"}])
    _findings(tmp_path / "emb", "kron", [{"claim": "kron is faster", "paper": "2x", "ours": "1.5x", "outcome": "agrees"}])
    out = A.headline_summary({"embedded": tmp_path / "emb", "SmolLM2": tmp_path / "smol"}, verdicts.STUDIES)
    assert list(out.study) == ["Study 1 · Feature stability across seeds", "Study 4 · KronSAE against TopK"]
    first = out.iloc[0]
    assert first.paper == "0.6" and first.embedded == "0.41 ± 0.02 (n=5)" and first["SmolLM2 outcome"] == "disagrees"
    assert out.iloc[1].SmolLM2 == "not run" and out.iloc[1]["SmolLM2 outcome"] == "untested"


def test_heatmap_and_bars_draw_every_cell(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from sae_studies.studies import architectures_plots as AP

    rows = []
    for v, ev, st in (("topk", 0.9, 0.3), ("kron", 0.88, 0.35), ("standard", 0.7, 0.9)):
        for s in range(3):
            rows.append(
                {"variant": v, "seed": s, "explained_variance": ev + 0.01 * s, "stable": st, "l0": 32.0, "dead_fraction": 0.1}
            )
    summary = A.summary_table(pd.DataFrame(rows), {"fraction_stable": 0.01})
    fig = AP.architecture_heatmap(summary, untested=["standard"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 3 * 4 and "0.910\n±0.025" in texts
    assert "standard (collapsed)" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    dead = AP.architecture_heatmap(summary, untested={"standard": "dead share 0.52 > 0.5"})
    assert "standard (mostly dead)" in [t.get_text() for t in dead.axes[0].get_yticklabels()]
    fig2 = AP.stability_bars(summary, 0.01, untested=["standard"])
    assert len(fig2.axes[0].patches) == 3
