"""One figure style for every notebook, and `save_figure` that writes PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .corpus import CATEGORIES

CATEGORY_COLORS = dict(zip(CATEGORIES, sns.color_palette("colorblind", len(CATEGORIES))))


def use_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.titlesize": "medium"})


def save_figure(fig: plt.Figure, name: str, directory: Path, pdf: bool = True) -> Path:
    """Write `<directory>/<name>.png` (and .pdf) and return the PNG path."""
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / f"{name}.png"
    fig.savefig(png)
    if pdf:  # no creation date: a rerun that draws the same figure leaves the committed PDF unchanged
        fig.savefig(directory / f"{name}.pdf", metadata={"CreationDate": None})
    return png
