"""Figures are written reproducibly: redrawing the same figure leaves the committed files unchanged."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sae_studies.plotting import save_figure  # noqa: E402


def _draw(directory):
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 0, 2])
    path = save_figure(fig, "fig", directory)
    plt.close(fig)
    return path


def test_same_figure_twice_gives_identical_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # matplotlib's clock: two draws a day apart
    png = _draw(tmp_path / "a")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    png2 = _draw(tmp_path / "b")
    assert png.name == "fig.png" and png.exists()
    assert png.read_bytes() == png2.read_bytes()
    assert (tmp_path / "a" / "fig.pdf").read_bytes() == (tmp_path / "b" / "fig.pdf").read_bytes()
