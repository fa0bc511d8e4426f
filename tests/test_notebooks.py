"""Every notebook under notebooks/ runs end to end on the smoke profile (papermill), so a new
notebook is covered the day it is added, and writes the figures it names."""

import json
import re
from pathlib import Path

import papermill
import pytest

from sae_studies.config import load_profile, repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def figures_named_in(notebook: Path) -> set[str]:
    source = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    return set(re.findall(r"save_figure\(\s*\w+,\s*\"(\d\d_[\w]+)\"", source))


def test_there_are_notebooks():
    assert NOTEBOOKS


def test_notebooks_are_committed_without_outputs():
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), nb.name


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_on_smoke_profile(notebook, tmp_path):
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / notebook.name),
        parameters={"profile": "smoke"},
        cwd=str(notebook.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    figures = load_profile("smoke").figures_dir
    for name in figures_named_in(notebook):
        assert (figures / f"{name}.png").stat().st_size > 10_000, name
