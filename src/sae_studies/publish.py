"""Publish a finished `make figures` run of a committed profile into the committed figures.

A publishing run (SAE_STUDIES_PUBLISH=1, a committed profile, no overrides) writes its figures
and tables into a staging folder, `build/publish/<profile>/`. Only after papermill has executed
the whole notebook does the Makefile call `python -m sae_studies.publish <profile> <executed
notebook>`, which moves every staged file into the committed folder (`figures/` or
`figures/<profile>/`) and copies the executed notebook, outputs and all, to
`figures/notebooks/<profile>/`, so a reader sees every table and figure in context without
running anything. A failed or interrupted run publishes nothing. The copy leaves out progress bars
(tqdm's ipywidgets: their outputs and the widget state in the notebook's metadata), which are half
of a cold run's notebook and no result.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat

from .config import load_profile

#: An executed notebook above this size is published with a warning (they are committed).
MAX_NOTEBOOK_BYTES = 5 * 2**20
#: The output type of a Jupyter widget (tqdm.auto's progress bars in the kernel).
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_progress_bars(notebook: dict) -> dict:
    """The executed notebook without widget outputs and the widget state in its metadata: what
    remains are the tables, figures, text and prose."""
    for cell in notebook.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET_VIEW not in o.get("data", {})]
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


def publish(profile_name: str, executed_notebook: Path | None = None) -> list[Path]:
    """Move the staged files of `profile_name` into its committed folder; return what moved."""
    profile = load_profile(profile_name)
    staged, target = profile.staging_dir, profile.committed_figures_dir
    if target is None:
        raise ValueError(f"profile {profile_name!r} has no committed figures; nothing to publish")
    moved = []
    for src in sorted(p for p in staged.rglob("*") if p.is_file()) if staged.exists() else []:
        dst = target / src.relative_to(staged)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
        moved.append(dst)
    if executed_notebook is not None:
        executed_notebook = Path(executed_notebook)
        dst = profile.root / "figures" / "notebooks" / profile_name / executed_notebook.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        notebook = nbformat.read(executed_notebook, as_version=nbformat.NO_CONVERT)
        nbformat.write(without_progress_bars(notebook), dst)
        moved.append(dst)
        size = dst.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            print(f"warning: {dst} is {size / 2**20:.1f} MB (committed; aim for under {MAX_NOTEBOOK_BYTES / 2**20:.0f} MB)")
    shutil.rmtree(staged, ignore_errors=True)
    return moved


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m sae_studies.publish <profile> [<executed notebook>]")
    if load_profile(sys.argv[1]).committed_figures_dir is None:
        print(f"   profile {sys.argv[1]!r} is not committed: its figures stay in build/figures/{sys.argv[1]}/")
    else:
        done = publish(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) == 3 else None)
        print(f"   published {len(done)} file(s) of profile {sys.argv[1]!r} into the committed figures")
