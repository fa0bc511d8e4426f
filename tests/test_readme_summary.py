"""The README's findings summary is generated from the committed findings files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_studies.studies import readme_summary as RS

ROOT = Path(__file__).resolve().parents[1]


def _write(folder: Path, study: str, verdicts: list[dict], counts: dict | None = None, provenance: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"study": study, "title": study, "model": "m", "profile": "p", "verdicts": verdicts}
    if counts is not None:
        record |= {"outcome_counts": counts, "provenance": provenance}
    (folder / f"findings_{study}.json").write_text(json.dumps(record))


def test_summary_shows_each_models_outcome_number_and_source(tmp_path):
    v_new = {
        "claim": "a claim",
        "outcome": "agrees",
        "statistic": 0.25,
        "interval": [0.1, 0.4],
        "n": 5,
        "converged_at": "no ladder",
    }
    v_gated = {
        "claim": "gated",
        "outcome": "untested",
        "statistic": 0.1,
        "interval": None,
        "n": 3,
        "converged_at": "not converged",
    }
    counts = {"agrees": 1, "partly": 0, "disagrees": 0, "inconclusive": 0, "untested": 1}
    _write(tmp_path, "stability", [v_new, v_gated], counts, "overrides: none; code at commit abcdef1234")
    _write(tmp_path / "smollm2", "stability", [{"claim": "a claim", "outcome": "disagrees"}])  # previous rules
    md = RS.summary_markdown(tmp_path)
    assert "| a claim | **agrees** +0.250 [+0.100, +0.400], n = 5 | **disagrees** |" in md
    assert "| gated | **untested** (not converged) +0.100, n = 3 | not in this model's table |" in md
    assert "1 agrees, 1 untested (code abcdef1)" in md and "previous rules (before issue 19)" in md
    assert "Study 3" not in md  # a study without findings is left out
    _write(tmp_path, "stability", [v_new], counts, "overrides: none; code at commit abcdef1234 with uncommitted changes")
    assert "(code abcdef1 with uncommitted changes)" in RS.summary_markdown(tmp_path)  # a dirty run does not read as clean


def test_update_rewrites_only_the_block_and_needs_it(tmp_path):
    _write(tmp_path / "figures", "kron", [{"claim": "c", "outcome": "partly"}])
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{RS.START}\nold\n{RS.END}\noutro\n")
    assert RS.update_readme(readme, tmp_path / "figures")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text and "| c | **partly** |" in text
    assert not RS.update_readme(readme, tmp_path / "figures")  # idempotent
    readme.write_text("no block")
    with pytest.raises(ValueError, match="no generated findings block"):
        RS.update_readme(readme, tmp_path / "figures")


def test_committed_readme_summary_matches_the_committed_findings():
    """`make findings` wrote the README's block from figures/: editing either by hand fails here."""
    assert RS.readme_block(ROOT / "README.md") == RS.summary_markdown(ROOT / "figures")
