import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies import pareto


def test_keep_top_k_keeps_the_largest():
    z = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 4.0]])
    assert torch.equal(pareto.keep_top_k(z, 2), torch.tensor([[0.0, 3.0, 0.0, 2.0], [5.0, 0.0, 0.0, 4.0]]))
    assert torch.equal(pareto.keep_top_k(z, 9), z)
    with pytest.raises(ValueError):
        pareto.keep_top_k(z, 0)


def test_category_auroc_known_answers():
    cats = np.array([0, 0, 1, 1, 2, 2, -1], dtype=np.int8)
    perfect0 = (torch.as_tensor(cats) == 0).float()
    noise = torch.zeros(7)
    codes = torch.stack([perfect0, noise], 1)
    auc = pareto.category_auroc(codes, cats)
    assert auc[0] == pytest.approx(1.0)
    assert auc[1] == pytest.approx(0.5) and set(auc) == {0, 1, 2}  # all-zero ties: chance


def test_interpolation_in_log_l0_and_gap():
    assert pareto.interpolate_at_l0(np.array([4, 16]), np.array([0.5, 0.7]), 8) == pytest.approx(0.6)
    assert np.isnan(pareto.interpolate_at_l0(np.array([4, 16]), np.array([0.5, 0.7]), 32))
    results = pd.DataFrame({"model": ["h", "h", "b", "b"], "k": [4, 16, 4, 16], "l0": [4.0, 16.0, 4.0, 16.0],
                            "ev": [0.55, 0.7, 0.5, 0.72]})
    gap = pareto.gap_at_equal_l0(results, "h", ["b"], "ev")
    assert gap.loc[4, "Δ"] == pytest.approx(0.05) and gap.loc[16, "Δ"] == pytest.approx(-0.02)
