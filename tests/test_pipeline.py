"""Run.sweep_table: a profile that runs a sweep writes its table; only the default profile reads
the table the convergence profile committed (the same embedded model)."""

import pandas as pd

from sae_studies import pipeline
from sae_studies.config import load_profile
from sae_studies.publish import publish


def test_sweep_table_writes_reads_and_keeps_models_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STUDIES_ROOT", str(tmp_path))
    (tmp_path / "configs").mkdir()
    for name in ("default", "convergence", "smollm2"):
        (tmp_path / "configs" / f"{name}.yaml").write_text("{}\n")
    table = pd.DataFrame({"tokens": [262144, 1048576], "ΔEV": [-0.15, -0.05]})

    monkeypatch.setenv("SAE_STUDIES_PUBLISH", "1")  # as under make figures
    sweep = pipeline.Run(load_profile("convergence"))
    sweep.profile.figures_dir.mkdir(parents=True)
    written = sweep.sweep_table("03_budget_sweep", lambda: table)
    pd.testing.assert_frame_equal(written, table)
    assert (sweep.profile.staging_dir / "03_budget_sweep.csv").exists()
    publish("convergence")  # the notebook finished
    assert (tmp_path / "figures" / "convergence" / "03_budget_sweep.csv").exists()

    read = pipeline.Run(load_profile("default")).sweep_table("03_budget_sweep", None)
    pd.testing.assert_frame_equal(read, table)
    assert pipeline.Run(load_profile("smollm2")).sweep_table("03_budget_sweep", None).empty
    assert pipeline.Run(load_profile("default")).sweep_table("01_convergence", None).empty
