"""Where results go: only a finished publishing run of a committed profile reaches figures/."""

import json
import shutil

import matplotlib
import nbformat

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sae_studies import config, pipeline  # noqa: E402
from sae_studies.publish import publish  # noqa: E402


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout of its own (configs copied), so nothing here touches the repository's figures."""
    shutil.copytree(config.repo_root() / "configs", tmp_path / "configs")
    monkeypatch.setenv("SAE_STUDIES_ROOT", str(tmp_path))
    monkeypatch.setenv("SAE_STUDIES_DATA", str(tmp_path / "data"))
    return tmp_path


def _figure(run, name):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.save_figure(fig, name)
    plt.close(fig)


def test_an_override_run_leaves_figures_untouched(checkout, monkeypatch):
    monkeypatch.setenv(config.PUBLISH_ENV, "1")  # even under make figures
    run = pipeline.start("default", '{"study03.seeds": [0, 1]}')
    _figure(run, "03_demo")
    assert (run.profile.figures_dir / "03_demo.png").exists()
    assert run.profile.figures_dir.parent == checkout / "build" / "figures"
    assert not (checkout / "figures").exists()


def test_an_interactive_run_writes_build(checkout, monkeypatch):
    monkeypatch.delenv(config.PUBLISH_ENV, raising=False)
    run = pipeline.start("default")
    _figure(run, "03_demo")
    assert (checkout / "build" / "figures" / "default" / "03_demo.png").exists() and not (checkout / "figures").exists()


def test_a_publishing_run_reaches_figures_only_when_published(checkout, monkeypatch, tmp_path):
    monkeypatch.setenv(config.PUBLISH_ENV, "1")
    (checkout / "figures").mkdir()
    (checkout / "figures" / "03_demo.png").write_bytes(b"old")
    run = pipeline.start("default")
    _figure(run, "03_demo")
    assert (checkout / "figures" / "03_demo.png").read_bytes() == b"old"  # a failed run stops here
    executed = tmp_path / "03_demo.ipynb"
    bar = {
        "output_type": "display_data",
        "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "m"}, "text/plain": "0%|"},
    }
    table = {"output_type": "execute_result", "data": {"text/plain": "k  EV"}, "execution_count": 1, "metadata": {}}
    cell = {"cell_type": "code", "source": "train()", "outputs": [bar, table], "metadata": {}}
    metadata = {"widgets": {"state": {"m": {}}}, "kernelspec": {"name": "k"}}
    executed.write_text(json.dumps({"cells": [cell], "metadata": metadata, "nbformat": 4, "nbformat_minor": 4}))
    moved = publish("default", executed)
    assert (checkout / "figures" / "03_demo.png").read_bytes() != b"old"
    published = nbformat.read(checkout / "figures" / "notebooks" / "default" / "03_demo.ipynb", as_version=nbformat.NO_CONVERT)
    assert published["cells"][0]["outputs"] == [table]  # the progress bar is left out, the table kept
    assert published["metadata"] == {"kernelspec": {"name": "k"}}  # and the widgets' state
    assert len(moved) == 3 and not run.profile.figures_dir.exists()  # png, pdf, notebook


def test_a_new_publishing_run_starts_from_an_empty_stage(checkout, monkeypatch):
    monkeypatch.setenv(config.PUBLISH_ENV, "1")
    stage = config.load_profile("default").staging_dir
    stage.mkdir(parents=True)
    (stage / "left_by_a_failed_run.png").write_bytes(b"x")
    pipeline.start("default")
    assert not (stage / "left_by_a_failed_run.png").exists()


def test_two_notebooks_of_one_profile_stage_apart(checkout, monkeypatch, tmp_path):
    """As two `make figures` of one profile at once: the second neither clears the first's
    stage when it starts nor publishes the first's files when it ends."""
    monkeypatch.setenv(config.PUBLISH_ENV, "1")
    monkeypatch.setenv(config.STAGE_ENV, "03_a")
    first = pipeline.start("default")
    _figure(first, "03_first")
    first_stage = first.profile.figures_dir
    monkeypatch.setenv(config.STAGE_ENV, "04_b")
    second = pipeline.start("default")
    _figure(second, "04_second")
    (tmp_path / "04_b.ipynb").write_text("{}")
    publish("default", tmp_path / "04_b.ipynb")
    assert (checkout / "figures" / "04_second.png").exists() and not (checkout / "figures" / "03_first.png").exists()
    assert (first_stage / "03_first.png").exists() and first_stage.name == "03_a"
    monkeypatch.setenv(config.STAGE_ENV, "03_a")
    publish("default")
    assert (checkout / "figures" / "03_first.png").exists()
    monkeypatch.setenv(config.STAGE_ENV, "../x")
    with pytest.raises(ValueError, match="SAE_STUDIES_STAGE"):
        _ = config.load_profile("default").staging_dir


def test_findings_record_profile_overrides_and_commit(checkout):
    from sae_studies.studies.verdicts import Verdict

    run = pipeline.start("smoke", {"study03.ks": [2, 4]})
    text = run.write_findings([Verdict("c", "p", "o", "agrees", "r")], "demo", "Demo").read_text()
    assert "Profile: `smoke` (overrides: study03.ks=[2, 4]; code at commit" in text
