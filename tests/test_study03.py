import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies.analyses import features, quality
from sae_studies.studies import hierarchical


def test_keep_top_k_keeps_the_largest():
    z = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 4.0]])
    assert torch.equal(quality.keep_top_k(z, 2), torch.tensor([[0.0, 3.0, 0.0, 2.0], [5.0, 0.0, 0.0, 4.0]]))
    assert torch.equal(quality.keep_top_k(z, 9), z)
    with pytest.raises(ValueError):
        quality.keep_top_k(z, 0)


def test_category_auroc_known_answers():
    cats = np.array([0, 0, 1, 1, 2, 2, -1], dtype=np.int8)
    perfect0 = (torch.as_tensor(cats) == 0).float()
    noise = torch.zeros(7)
    codes = torch.stack([perfect0, noise], 1)
    auc = features.category_auroc(codes, cats)
    assert auc[0] == pytest.approx(1.0)
    assert auc[1] == pytest.approx(0.5) and set(auc) == {0, 1, 2}  # all-zero ties: chance


def test_rank_sums_agree_with_scipy_rankdata():
    """The sparse rank sums equal the dense average ranks' sums: ties among zeros, among nonzero
    values and across columns, negative codes, an all-zero column and a column with no zero."""
    from scipy.stats import rankdata

    g = np.random.default_rng(0)
    a = g.choice([0.0, 0.0, 0.0, 0.5, 1.0, 2.5], size=(300, 7)).astype(np.float32)
    a[:, 1] = 0.0
    a[:, 2] = g.normal(size=300)  # no zeros, some negative
    a[::7, 3] = -1.0  # negative codes below the zeros
    rows = g.random(300) < 0.3
    ranks = rankdata(a.astype(np.float64), axis=0)
    np.testing.assert_allclose(features.rank_sums(a, [rows, ~rows]), [ranks[rows].sum(0), ranks[~rows].sum(0)], rtol=1e-12)


def test_category_auroc_agrees_with_sklearn():
    """Best single-latent AUROC per category against sklearn's roc_auc_score on TopK-like codes."""
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(1)
    pre = torch.randn(400, 32, generator=g)
    codes = quality.keep_top_k(torch.relu(pre), 4)
    cats = np.random.default_rng(1).integers(-1, 3, size=400)
    codes[torch.as_tensor(cats == 2), 5] += 3.0  # latent 5 tracks category 2
    auc = features.category_auroc(codes, cats)
    keep = cats >= 0
    for c in (0, 1, 2):
        best = max(roc_auc_score(cats[keep] == c, codes.numpy()[keep, j]) for j in range(32))
        assert auc[c] == pytest.approx(best, abs=1e-12)
    assert auc[2] > 0.9


def test_interpolation_in_log_l0_and_gap():
    assert hierarchical.interpolate_at_l0(np.array([4, 16]), np.array([0.5, 0.7]), 8) == pytest.approx(0.6)
    assert np.isnan(hierarchical.interpolate_at_l0(np.array([4, 16]), np.array([0.5, 0.7]), 32))
    results = pd.DataFrame(
        {"model": ["h", "h", "b", "b"], "k": [4, 16, 4, 16], "l0": [4.0, 16.0, 4.0, 16.0], "ev": [0.55, 0.7, 0.5, 0.72]}
    )
    gap = hierarchical.gap_at_equal_l0(results, "h", ["b"], "ev")
    assert gap.loc[4, "Δ"] == pytest.approx(0.05) and gap.loc[16, "Δ"] == pytest.approx(-0.02)


def test_check_names_the_bad_parameter():
    from sae_studies.study_config import Study03Config

    with pytest.raises(ValueError, match="study03.ks"):
        hierarchical.check(Study03Config(ks=(16, 8)), 1024, 4)
    with pytest.raises(ValueError, match="reduced_ks"):
        hierarchical.check(Study03Config(reduced_ks=(12,)), 1024, 4)
    with pytest.raises(ValueError, match="study03.layer"):
        hierarchical.check(Study03Config(layer=9), 1024, 4)
    specs, skipped = hierarchical.specs(Study03Config(ks=(8, 64)), 128, seed=0)
    assert ("multi_topk", 64) not in specs and any("multi_topk at k=64" in s for s in skipped)
    assert ("hierarchical_topk", 64) in specs


def test_pareto_summary_is_mean_and_sd_over_seeds():
    results = pd.DataFrame(
        {
            "model": ["h", "h", "h", "b"],
            "k": [4, 4, 16, 4],
            "seed": [0, 1, 0, 0],
            "l0": [4.0, 5.0, 16.0, 4.0],
            "explained_variance": [0.5, 0.7, 0.8, 0.6],
            "loss_recovered": [0.9, 0.9, 0.95, 0.92],
        }
    )
    s = hierarchical.pareto_summary(results).set_index(["model", "k"])
    assert s.loc[("h", 4), "l0"] == pytest.approx(4.5) and s.loc[("h", 4), "ev"] == pytest.approx(0.6)
    assert s.loc[("h", 4), "ev_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s.loc[("h", 4), "lr_sd"] == pytest.approx(0.0) and np.isnan(s.loc[("b", 4), "ev_sd"])
    assert s.loc[("h", 16), "lr"] == pytest.approx(0.95)


def test_the_study_rate_reaches_the_grid_and_the_ladder():
    from sae_studies.config import load_profile
    from sae_studies.studies import hierarchical_ladder

    P = load_profile("smoke", {"sae.lr": 4e-4})
    assert hierarchical.sae_config(P).lr == 4e-4  # unset: sae.lr
    P = load_profile("smoke", {"sae.lr": 4e-4, "study03.lr": 3.2e-3})
    assert hierarchical.sae_config(P).lr == 3.2e-3 and hierarchical.sae_config(P, 4096).lr == 3.2e-3
    assert hierarchical_ladder.sae_config is hierarchical.sae_config  # the ladder trains at the grid's rate
    with pytest.raises(ValueError, match="study03.lr"):
        load_profile("smoke", {"study03.lr": 0.0})
