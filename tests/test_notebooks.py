"""Every notebook under notebooks/ runs end to end on the smoke profile (papermill), so a new
notebook is covered the day it is added, and writes the figures it names."""

import json
import re
import subprocess
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


def stored_text(notebook: Path) -> str:
    """The notebook as git stores it (the index: what a commit takes, after the nbstripout filter
    that `make setup` installs); the file itself outside a git checkout."""
    rel = notebook.relative_to(repo_root()).as_posix()
    out = subprocess.run(["git", "show", f":{rel}"], cwd=repo_root(), capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else notebook.read_text()


def test_notebooks_are_committed_without_outputs():
    for nb in NOTEBOOKS:
        cells = json.loads(stored_text(nb))["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), nb.name


def test_notebooks_name_the_projects_kernel():
    for nb in NOTEBOOKS:
        assert json.loads(nb.read_text())["metadata"]["kernelspec"]["name"] == "sae-studies", nb.name


def test_outputs_are_stripped_by_the_git_filter():
    """`make setup` installs nbstripout as the clean filter of notebooks/*.ipynb (.gitattributes)."""
    attrs = subprocess.run(
        ["git", "check-attr", "filter", "notebooks/00_language_model.ipynb"], cwd=repo_root(), capture_output=True, text=True
    )
    if attrs.returncode != 0:
        pytest.skip("not a git checkout")
    assert attrs.stdout.strip().endswith("filter: nbstripout")
    clean = subprocess.run(["git", "config", "filter.nbstripout.clean"], cwd=repo_root(), capture_output=True, text=True)
    if not clean.stdout.strip():
        pytest.skip("the nbstripout filter is not configured here (make setup configures it)")
    nb = json.loads(NOTEBOOKS[0].read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["noise\n"]}]
    code["execution_count"] = 3
    out = subprocess.run(clean.stdout.strip(), shell=True, input=json.dumps(nb), capture_output=True, text=True, check=True)
    stripped = json.loads(out.stdout)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in stripped["cells"] if c["cell_type"] == "code")


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
