"""`make figures` runs notebooks JOBS at a time: each must start after the notebooks whose
artifacts it reads (so that two at once never build the same model or SAEs twice), and a
selection (NOTEBOOK=...) must run only what it names. Read from make's dry run; the two lanes
from a real make run whose notebooks are sleeps."""

import os
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


_FAKE_PYTHON = """#!/bin/bash
# Stands in for the venv's python: `-m papermill <notebook> ...` sleeps its notebook's share of a
# cold run (SECONDS_OF) and logs when it ran; `-m sae_studies.publish` does nothing.
[ "$2" = papermill ] || exit 0
nb=$(basename "$3" .ipynb); nb=${nb%%_*}
declare -A seconds=(SECONDS_OF)
echo "start $nb" >> "$LANE_LOG"; sleep "${seconds[$nb]}"; echo "end $nb" >> "$LANE_LOG"
"""


def _lanes(tmp_path, seconds: dict[str, float], *make_args: str) -> list[str]:
    """The start / end events of `make figures JOBS=2 <make_args>` whose notebooks sleep `seconds`."""
    fake = tmp_path / "python"
    fake.write_text(_FAKE_PYTHON.replace("SECONDS_OF", " ".join(f"[{nb}]={s}" for nb, s in seconds.items())))
    fake.chmod(0o755)
    log = tmp_path / "lanes.log"
    subprocess.run(
        ["make", "figures", "JOBS=2", "STAMP=", f"PY={fake}", f"BUILD={tmp_path}/build", *make_args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LANE_LOG": str(log), "SAE_STUDIES_DATA": str(tmp_path)},
    )
    return log.read_text().split("\n")


def test_two_lanes_start_06_as_soon_as_05_ends(tmp_path):
    """With JOBS=2, the lane 05 frees goes to 06 (the longest notebook), not to 03 or 04: GNU make
    alone came back to 06 only after starting everything else, so 06 ran last. Notebooks stand in
    by sleeps in the proportions of a cold default run."""
    seconds = {"00": 0.57, "02": 0.32, "05": 1.1, "06": 3.0, "01": 1.5, "03": 2.9, "04": 0.3}
    events = _lanes(tmp_path, seconds, "PROFILE=smoke")
    after_05 = events[events.index("end 05") + 1]
    assert after_05 == "start 06"
    assert events.index("start 04") > events.index("start 06")
    assert sorted(e for e in events if e.startswith("end")) == [f"end {nb}" for nb in ("00", "01", "02", "03", "04", "05", "06")]


def test_smollm2_runs_04_after_03_beside_06(tmp_path):
    """On smollm2, 00 05 06 alone is the longest chain (06 cold: about 3 h), so 04 joins the other
    lane after 03 instead of following 06. Sleeps in the proportions of its cold run of 2026-12-07."""
    seconds = {"00": 0.15, "05": 0.33, "06": 1.13, "01": 0.63, "03": 0.39, "04": 0.18}
    events = _lanes(tmp_path, seconds, "PROFILE=smollm2", "NOTEBOOK=0[013456]_*")
    assert events[events.index("end 05") + 1] == "start 06"
    assert events.index("end 03") < events.index("start 04") < events.index("end 06")
