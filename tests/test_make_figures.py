"""`make figures` runs notebooks JOBS at a time: each must start after the notebooks whose
artifacts it reads (so that two at once never build the same model or SAEs twice), and a
selection (NOTEBOOK=...) must run only what it names. Read from make's dry run."""

import re
import shutil
import subprocess

import pytest

from sae_studies import config

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
ROOT = config.repo_root()


def _dry_run(*args: str) -> str:
    out = subprocess.run(["make", "-n", *args, "PROFILE=smoke"], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout


def _targets(notebook: str | None = None) -> list[str]:
    """The per-notebook targets `make figures` hands to its parallel sub-make."""
    text = _dry_run("figures", *([f"NOTEBOOK={notebook}"] if notebook else []))
    line = next(line for line in text.splitlines() if "--no-print-directory -j" in line)
    return re.findall(r"\bnb-\d\d\b", line)


def _run_order(targets: list[str], notebook: str | None = None) -> list[str]:
    """The notebooks (their numbers) in the order one lane (-j1) would run them."""
    text = _dry_run("-j1", *targets, *([f"NOTEBOOK={notebook}"] if notebook else []))
    return re.findall(r"nb=notebooks/(\d\d)_", text)


def test_every_notebook_runs_once_after_what_it_reads():
    targets = _targets()
    order = _run_order(targets[::-1])  # listed last-first: only the dependencies put them in order
    notebooks = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(order) == notebooks  # each exactly once
    for lm_notebook in set(notebooks) - {"00", "02"}:  # 02's synthetic data reads no language model
        assert order.index("00") < order.index(lm_notebook)
    assert order.index("05") < order.index("06")  # 06 reads 05's SAEs
    assert targets[:3] == ["nb-00", "nb-02", "nb-05"]  # the longest chain (00, 05, 06) starts first


def test_a_selection_runs_only_what_it_names():
    assert _run_order(_targets("06_*"), "06_*") == ["06"]
    assert _run_order(_targets("0[156]_*"), "0[156]_*") == ["05", "06", "01"]
    assert _run_order(["nb-06", "nb-05"], "0[56]_*") == ["05", "06"]
