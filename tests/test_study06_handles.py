"""Study 6's steering handles (studies.architectures_steering): the verdict rule on made-up pair
tables, the subspace handle on a planted case, the feature pick on a small known case, and the
pair table and figure on a made-up generation table."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.studies import architectures_plots as AP
from sae_studies.studies import architectures_steering as AS


def _pairs(d1, d2, stable=0.3, unsteered=0.1):
    d1, d2 = np.asarray(d1, float), np.asarray(d2, float)
    noise = 0.01 * np.sin(np.arange(len(d1)))  # the stable handles' gains over the baseline vary a little
    return pd.DataFrame(
        {
            "theme": [f"t{i}" for i in range(len(d1))],
            "sae_seed": 0,
            "stable": stable + noise,
            "unstable": stable + noise - d1,
            "unstable subspace": stable + noise - d2,
            "d1": d1,
            "d2": d2,
            "unsteered": unsteered,
            "steer": stable + noise - unsteered,
        }
    )


def test_rule_agrees_when_unstable_steer_worse_and_the_subspace_as_well():
    worse, same = AS.handle_verdicts(_pairs([0.20, 0.22, 0.19, 0.21], [0.00, 0.01, -0.01, 0.005]))
    assert worse.outcome == "agrees" and same.outcome == "agrees"
    assert worse.n == 4 and worse.statistic == pytest.approx(0.205) and worse.interval[0] > 0
    assert same.interval[1] < AS.EQUIVALENCE_MARGIN and "Holm-adjusted p" in same.ours


def test_rule_subspace_better_than_stable_agrees():
    """d2 wholly below 0 (the subspace steers better than the stable feature) is inside the claim."""
    _, same = AS.handle_verdicts(_pairs([0.1, 0.12, 0.09, 0.11], [-0.20, -0.22, -0.19, -0.21]))
    assert same.outcome == "agrees"


def test_rule_disagrees():
    worse, same = AS.handle_verdicts(_pairs([-0.20, -0.22, -0.19, -0.21], [0.30, 0.32, 0.29, 0.31]))
    assert worse.outcome == "disagrees" and same.outcome == "disagrees"
    assert same.interval[0] > AS.EQUIVALENCE_MARGIN


def test_rule_inconclusive_when_the_intervals_cover_the_thresholds():
    worse, same = AS.handle_verdicts(_pairs([0.2, -0.1, 0.05, -0.02], [0.3, -0.2, 0.1, 0.0]))
    assert worse.outcome == "inconclusive" and worse.interval[0] < 0 < worse.interval[1]
    assert same.outcome == "inconclusive" and same.interval[0] < AS.EQUIVALENCE_MARGIN < same.interval[1]


def test_rule_holm_turns_two_marginal_decisions_inconclusive():
    """Each interval alone decides (p = 0.037 and 0.028), but Holm over the two comparisons
    raises both adjusted p-values to 0.057."""
    worse, same = AS.handle_verdicts(_pairs([0.1, 0.005, 0.05, 0.09, 0.03], [-0.05, 0.045, -0.02, 0.01, 0.0]))
    assert worse.interval[0] > 0 and same.interval[1] < AS.EQUIVALENCE_MARGIN
    assert worse.outcome == "inconclusive" and same.outcome == "inconclusive"


def test_rule_inconclusive_when_the_stable_handles_do_not_steer():
    """The same clear differences as the agreeing case, but the stable handle does not beat the
    unsteered baseline: nothing steers, so nothing is decided."""
    worse, same = AS.handle_verdicts(_pairs([0.20, 0.22, 0.19, 0.21], [0.00, 0.01, -0.01, 0.005], unsteered=0.3))
    assert worse.outcome == "inconclusive" and same.outcome == "inconclusive"
    assert "do not steer" in worse.ours and worse.interval[0] > 0  # the interval itself still decides
    steering, _ = AS.handle_verdicts(_pairs([0.20, 0.22, 0.19, 0.21], [0.00, 0.01, -0.01, 0.005]))
    assert "the stable handles steer" in steering.ours


def test_rule_untested_with_fewer_than_three_pairs():
    found = AS.handle_verdicts(_pairs([0.2, 0.21], [0.0, 0.01]))
    assert [v.outcome for v in found] == ["untested", "untested"]
    nan_pairs = _pairs([0.2, 0.21, np.nan], [0.0, 0.01, np.nan])
    assert [v.outcome for v in AS.handle_verdicts(nan_pairs)] == ["untested", "untested"]
    assert [v.outcome for v in AS.handle_verdicts(_pairs([], []))] == ["untested", "untested"]


def test_subspace_handle_recovers_the_planted_direction():
    """Rows u ± 0.5 v and u ± 0.5 w (v, w ⟂ u) average to u; far rows (−u, an orthogonal z, a
    row at cosine 0.2) stay out."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    u, v, w, z = (q[:, i].float() for i in range(4))
    pick = 3.0 * (u + 0.5 * v)  # the scale of a decoder row does not matter
    near = torch.stack([u - 0.5 * v, 2.0 * (u + 0.5 * w), u - 0.5 * w])
    far = torch.stack([-u, z, 0.2 * u + 0.98 * z])
    direction, members = AS.subspace_handle(pick, torch.cat([near, far]), 0.5)
    assert members == 4
    assert torch.allclose(direction, u, atol=1e-5) and direction.norm() == pytest.approx(1.0, abs=1e-6)
    alone, n_alone = AS.subspace_handle(pick, far, 0.5)
    assert n_alone == 1 and torch.allclose(alone, pick / pick.norm(), atol=1e-6)
    empty, n_empty = AS.subspace_handle(pick, torch.zeros(0, 16), 0.5)
    assert n_empty == 1 and torch.allclose(empty, alone)


def test_pick_pair_matches_the_classes_on_enrichment_and_prefers_non_token_features():
    classes = np.array(["stable", "stable", "stable", "unstable", "unstable", "unstable", "dead", "partial"])
    enrichment = np.array([3.0, 1.1, 0.5, 0.9, 5.0, -1.0, 9.0, 8.0])
    token = np.array([False, False, False, False, True, False, False, False])
    # unstable: 4 is a token feature (left out while 3 is there), 5 is not enriched -> 3 (0.9), the
    # weaker class; stable: the one nearest 0.9 is 1 (1.1); dead and partial latents never count
    assert AS.pick_pair(enrichment, classes, token) == {"stable": 1, "unstable": 3}
    # without the token preference's alternative, the token feature is used (5.0): stable is
    # now the weaker class and gives its best (0); unstable gives the nearest to 3.0, feature 4
    only_token = np.array([False, False, False, True, True, False, False, False])
    assert AS.pick_pair(enrichment, classes, only_token) == {"stable": 0, "unstable": 4}
    # no unstable latent with positive enrichment: no pair
    assert AS.pick_pair(np.where(classes == "unstable", -1.0, enrichment), classes, token) is None


def _scored():
    rows = []
    for theme, base in (("limerick", 0.1), ("startrek", 0.2)):
        for p in range(2):
            rows.append({"theme": theme, "sae_seed": np.nan, "handle": "none", "s": 0.0, "prompt": p, "combined": base})
        for seed in (0, 1):
            for handle, gain in zip(AS.HANDLES, (0.3, 0.1, 0.25)):
                for s in (0.5, 2.0):
                    for p in range(2):
                        val = base + gain + 0.01 * seed + 0.02 * p
                        rows.append({"theme": theme, "sae_seed": seed, "handle": handle, "s": s, "prompt": p, "combined": val})
    out = pd.DataFrame(rows)
    out["theme_score"] = out["combined"]
    return out


def test_pair_table_and_figure():
    scored = _scored()
    pairs = AS.pair_table(scored)
    assert len(pairs) == 4 and set(pairs.columns) >= {"theme", "sae_seed", *AS.HANDLES, "d1", "d2"}
    assert np.allclose(pairs.d1, 0.2) and np.allclose(pairs.d2, 0.05)
    # steer = stable − the theme's unsteered mean: 0.3 + 0.01 · seed + 0.01 (mean over prompts)
    assert np.allclose(pairs.steer, 0.31 + 0.01 * pairs.sae_seed)
    assert list(AS.pair_table(scored, judge_ceiling=0.15).theme.unique()) == ["limerick"]
    summary = AS.handle_summary(scored)
    assert set(summary.handle) == {"none", *AS.HANDLES} and (summary.combined_ci >= 0).all()
    fig = AP.steering_handles(summary, pairs, ["limerick", "startrek", "zippy"], AS.EQUIVALENCE_MARGIN, (0.5, 2.0))
    assert len(fig.axes) == 3  # two themes with data and the paired-difference panel
    assert fig.axes[0].get_ylabel().startswith("combined score")
    judged = AP.steering_handles(summary, pairs[pairs.theme == "limerick"], ["limerick", "startrek"], 0.05, (0.5, 2.0))
    assert [ax.get_title() for ax in judged.axes[:2]] == ["limerick", "startrek\n(not judged)"]
