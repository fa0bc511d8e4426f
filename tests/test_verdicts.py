"""Verdicts as data and the findings tables."""

import numpy as np
import pandas as pd
import pytest

from sae_studies.studies import verdicts


def test_verdict_outcome_is_checked_and_table_is_written(tmp_path):
    v = verdicts.Verdict("claim a|b", "paper says 0.8", "0.7 ± 0.1 (n=3)", "partly", "rule x")
    with pytest.raises(ValueError, match="outcome must be one of"):
        verdicts.Verdict("c", "p", "o", "maybe", "r")
    path = verdicts.write_findings([v], "demo", tmp_path, title="Demo", model="toy", profile="smoke")
    text = path.read_text()
    assert path.name == "findings_demo.md" and "| claim a\\|b |" in text and "**partly**" in text and "toy" in text
    with pytest.raises(ValueError, match="no verdicts"):
        verdicts.write_findings([], "demo", tmp_path, title="Demo", model="toy", profile="smoke")


def test_spread_and_per_group_outcome():
    assert verdicts.spread([1.0, 2.0, 3.0], ".1f") == "2.0 ± 1.0 (n=3)"
    assert verdicts.spread([0.5], ".2f") == "0.50 (n=1)"
    assert verdicts.spread([-1.0, -3.0], "+.1f") == "-2.0 ± 1.4 (n=2)"
    assert verdicts.spread([np.nan]) == "n/a"
    assert verdicts.per_group_outcome(pd.Series({"a": True, "b": True}))[0] == "agrees"
    assert verdicts.per_group_outcome(pd.Series({"a": True, "b": False}))[0] == "partly"
    assert verdicts.per_group_outcome(pd.Series({"a": False}))[0] == "disagrees"
    assert verdicts.per_group_outcome(pd.Series(dtype=bool))[0] == "untested"


def test_side_by_side_puts_models_in_columns(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    verdicts.write_findings(
        [verdicts.Verdict("c1", "p1", "0.9", "agrees", "r"), verdicts.Verdict("c2", "p2", "0.1", "disagrees", "r")],
        "demo",
        a,
        title="T",
        model="toy",
        profile="default",
    )
    verdicts.write_findings(
        [verdicts.Verdict("c1", "p1", "0.8", "agrees", "r"), verdicts.Verdict("c2", "p2", "0.7", "agrees", "r")],
        "demo",
        b,
        title="T",
        model="real",
        profile="smollm2",
    )
    table = verdicts.side_by_side({"embedded": a, "SmolLM2": b}, "demo")
    assert "| claim | paper | embedded | SmolLM2 | holds on |" in table
    assert "| c1 | p1 | **agrees**: 0.9 | **agrees**: 0.8 | both |" in table
    assert "| c2 | p2 | **disagrees**: 0.1 | **agrees**: 0.7 | SmolLM2 |" in table
    with pytest.raises(ValueError, match="no findings_other.json"):
        verdicts.side_by_side({"embedded": a}, "other")
