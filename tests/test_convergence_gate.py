"""The convergence gate on tables with a known answer."""

import numpy as np
import pytest

from sae_studies.analyses.convergence import gate

RUNGS = [2**19, 2**20, 2**21, 2**22]


def test_levelled_off_quantity_passes_and_names_its_rung():
    values = [[0.10, 0.12, 0.11], [0.30, 0.31, 0.29], [0.40, 0.42, 0.38], [0.405, 0.43, 0.39]]
    g = gate("ev", RUNGS, values)
    assert g.converged
    assert g.converged_at == 2**21  # 1M → 2M moved 0.097 > sd 0.02; 2M → 4M moved 0.008 < sd
    assert g.rungs == (2**21, 2**22)
    assert g.change == pytest.approx(np.mean(values[3]) - np.mean(values[2]))
    assert g.seed_spread == pytest.approx(np.std(values[3], ddof=1))
    assert "n=3" in g.describe()


def test_still_moving_quantity_fails():
    values = [[0.01, 0.02], [0.05, 0.06], [0.17, 0.18], [0.30, 0.31]]
    g = gate("fraction stable", RUNGS, values)
    assert not g.converged and g.converged_at is None


def test_one_seed_cannot_show_convergence():
    g = gate("gap", RUNGS[:2], [[0.5], [0.5]])
    assert not g.converged and np.isnan(g.seed_spread) and g.n_seeds == 1


def test_bad_tables_are_named():
    with pytest.raises(ValueError, match="at least two rungs"):
        gate("q", [1], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="strictly increasing"):
        gate("q", [2, 1], [[0.1, 0.2], [0.1, 0.2]])
    with pytest.raises(ValueError, match="n_rungs"):
        gate("q", [1, 2], [[0.1, 0.2]])
