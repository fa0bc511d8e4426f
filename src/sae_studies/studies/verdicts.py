"""Verdicts as data, and the findings tables every study writes.

A study's verdict rule is a tested function that takes the numbers it needs and returns a
:class:`Verdict`: the claim, what the paper reports, our number with its spread, the rule that
decided (fixed before looking) and the outcome. A notebook collects its verdicts and writes
them with :func:`write_findings` to ``<figures>/findings_<study>.md``; the README links these
tables, so what did and did not reproduce is visible without running anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..analyses.convergence import Convergence

#: Outcomes, strongest agreement first. "inconclusive": the data cannot tell (the interval covers
#: both sides, or the test's positive control lacks power); "untested": not run, or not converged.
OUTCOMES = ("agrees", "partly", "disagrees", "inconclusive", "untested")


@dataclass(frozen=True)
class Verdict:
    claim: str
    """The claim as the paper states it (short)."""
    paper: str
    """What the paper reports (a number where it gives one)."""
    ours: str
    """Our number(s) with their spread over seeds, and the model they come from."""
    outcome: str
    """One of OUTCOMES."""
    rule: str
    """The rule that decided, stated before looking at the numbers."""
    statistic: float | None = None
    """The number the rule reads (an effect size, a difference, a share)."""
    interval: tuple[float, float] | None = None
    """Its confidence interval (the rule says which: t, bootstrap; its level)."""
    n: int | None = None
    """Replicates behind the interval (seeds, unless the rule says otherwise)."""
    convergence: Convergence | None = None
    """The convergence gate of the quantity read (see `analyses.convergence`); None: no ladder."""
    previous: str = ""
    """Where the rule changed: the previous rule and verdict, and why it changed."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}; got {self.outcome!r}")
        if self.interval is not None and not (len(self.interval) == 2 and self.interval[0] <= self.interval[1]):
            raise ValueError(f"interval must be (low, high) with low <= high; got {self.interval!r}")

    def gated(self, convergence: Convergence) -> Verdict:
        """This verdict behind the convergence gate: a quantity that moved over the last doubling
        by more than its seed spread makes the outcome "untested" (the rule's own outcome is kept
        in `ours`, so the reader sees what an unconverged reading would have said). An untested
        verdict keeps its own reason (collapsed, not run) and gains the gate's reading."""
        if convergence.converged or self.outcome == "untested":
            return replace(self, convergence=convergence)
        return replace(
            self,
            convergence=convergence,
            outcome="untested",
            ours=f"{self.ours} [not converged; the rule alone would say {self.outcome}]",
        )

    @property
    def converged_at(self) -> str:
        """The findings table's "converged at" cell."""
        if self.convergence is None:
            return "no ladder"
        c = self.convergence
        return "not converged" if c.converged_at is None else f"{c.converged_at:,} tokens"


def per_group_outcome(ok: pd.Series | dict[str, bool]) -> tuple[str, str]:
    """``("agrees", "")`` if a condition holds for every group (e.g. architecture), ``("partly",
    "holds for a, b")`` for some, ``("disagrees", "")`` for none; empty input is untested."""
    ok = pd.Series(ok, dtype=bool)
    if ok.empty:
        return "untested", "no group could be measured"
    if ok.all():
        return "agrees", f"holds for all of {', '.join(map(str, ok.index))}"
    if ok.any():
        return "partly", f"holds for {', '.join(map(str, ok[ok].index))}; not for {', '.join(map(str, ok[~ok].index))}"
    return "disagrees", f"holds for none of {', '.join(map(str, ok.index))}"


def combine_outcomes(outcomes: dict) -> tuple[str, str]:
    """One outcome from per-condition outcomes (per architecture and layer, per k, per theme, ...),
    with a note naming the conditions. Untested conditions are left out (nothing tested →
    untested). Every condition agrees → agrees; some agree (or partly) and others do not →
    partly; every one inconclusive → inconclusive; none agrees and some disagree (the rest
    inconclusive) → disagrees: nothing supports the claim and part of the data contradicts it.
    The one rule every study combines its conditions by."""
    tested = {k: v for k, v in outcomes.items() if v != "untested"}
    if not tested:
        return "untested", "no condition could be tested"
    bad = {k: v for k, v in tested.items() if v not in OUTCOMES}
    if bad:
        raise ValueError(f"combine_outcomes takes outcomes from {OUTCOMES}; got {bad}")
    names = {o: [str(k) for k, v in tested.items() if v == o] for o in ("agrees", "partly", "disagrees", "inconclusive")}
    text = "; ".join(f"{o}: {', '.join(ks)}" for o, ks in names.items() if ks)
    if len(names["agrees"]) == len(tested):
        return "agrees", text
    if names["agrees"] or names["partly"]:
        return "partly", text
    if len(names["inconclusive"]) == len(tested):
        return "inconclusive", text
    return "disagrees", text


def both_outcomes(a: str, b: str) -> str:
    """Two conditions a claim needs together: agrees when both agree; partly when one agrees and
    the other disagrees; disagrees when one disagrees and the other does not agree (the
    conjunction is false whatever the undecided one does); inconclusive otherwise (one or both
    cannot tell, or are untested, and neither disagrees)."""
    if a == b == "agrees":
        return "agrees"
    if "disagrees" in (a, b):
        return "partly" if "agrees" in (a, b) else "disagrees"
    return "inconclusive"


def spread(values: Sequence[float] | np.ndarray, fmt: str = ".3f") -> str:
    """``"0.412 ± 0.013 (n=5)"``: mean ± standard deviation over seeds (sample, ddof=1);
    a single value prints without a spread."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:{fmt}} (n=1)"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt.lstrip('+')}} (n={v.size})"


def findings_table(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    return pd.DataFrame(
        [{**asdict(v), "converged_at": v.converged_at} for v in verdicts],
        columns=["claim", "paper", "ours", "outcome", "converged_at", "rule", "previous"],
    )


def outcome_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts have each outcome, in OUTCOMES order (zeros included)."""
    return {o: sum(v.outcome == o for v in verdicts) for o in OUTCOMES}


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {o}" for o, n in counts.items())


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(verdicts: Sequence[Verdict], title: str, model: str, profile: str, provenance: str = "") -> str:
    lines = [
        f"# {title}",
        "",
        f"Model: {model}. Profile: `{profile}`{' (' + provenance + ')' if provenance else ''}. "
        f"Written by the notebook on {time.strftime('%Y-%m-%d')}. "
        "Each row's rule is a tested function of the study module; where a rule was revised after a first "
        "run, the last column says what it was and why it changed.",
        "",
        f"Outcomes: {_counts_line(outcome_counts(verdicts))}.",
        "",
        "| claim | paper | ours | verdict | converged at | rule | previous rule and verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(v.claim)} | {_cell(v.paper)} | {_cell(v.ours)} | **{v.outcome}** | {_cell(v.converged_at)} | "
        f"{_cell(v.rule)} | {_cell(v.previous)} |"
        for v in verdicts
    ]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def write_findings(
    verdicts: Sequence[Verdict], study: str, figures_dir: Path, *, title: str, model: str, profile: str, provenance: str = ""
) -> Path:
    """Write ``<figures_dir>/findings_<study>.md`` (and the same verdicts as ``.json``, which
    :func:`side_by_side` reads) and return the markdown's path."""
    if not verdicts:
        raise ValueError(f"study {study!r} has no verdicts to write")
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"findings_{study}.md"
    _write(path, findings_markdown(verdicts, title, model, profile, provenance))
    record = {
        "study": study,
        "title": title,
        "model": model,
        "profile": profile,
        "provenance": provenance,
        "outcome_counts": outcome_counts(verdicts),
        "verdicts": [{**asdict(v), "converged_at": v.converged_at} for v in verdicts],
    }
    _write(path.with_suffix(".json"), json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def side_by_side(figures_dirs: dict[str, Path], study: str) -> str:
    """One markdown table of a study's verdicts on several models (columns in the order given):
    claim, paper, then each model's number and outcome, then where the claim holds. Models
    without a findings file for the study are left out."""
    records = {}
    for label, folder in figures_dirs.items():
        path = Path(folder) / f"findings_{study}.json"
        if path.exists():
            records[label] = json.loads(path.read_text())
    if not records:
        raise ValueError(f"no findings_{study}.json in {', '.join(map(str, figures_dirs.values()))}")
    claims: dict[str, dict] = {}
    for label, rec in records.items():
        for v in rec["verdicts"]:
            claims.setdefault(v["claim"], {"paper": v["paper"]})[label] = v
    labels = list(records)
    head = "| claim | paper | " + " | ".join(labels) + " | holds on |"
    lines = [head, "|" + "---|" * (3 + len(labels))]
    for claim, row in claims.items():
        cells = [f"**{row[lab]['outcome']}**: {_cell(row[lab]['ours'])}" if lab in row else "not run" for lab in labels]
        agree = [lab for lab in labels if lab in row and row[lab]["outcome"] == "agrees"]
        holds = ", ".join(agree) if agree else "neither" if len(labels) == 2 else "none"
        if len(agree) == len(labels):
            holds = "both" if len(labels) == 2 else "all"
        lines.append(f"| {_cell(claim)} | {_cell(row['paper'])} | " + " | ".join(cells) + f" | {holds} |")
    return "\n".join(lines) + "\n"


#: (study file name, title) of every study that writes findings, in notebook order.
STUDIES = (
    ("stability", "Study 1 · Feature stability across seeds"),
    ("synthetic", "Study 2 · A synthetic low-rank model of seed dependence"),
    ("hierarchical", "Study 3 · HierarchicalTopK against per-k SAEs"),
    ("kron", "Study 4 · KronSAE against TopK"),
    ("flow", "Study 5 · Cross-layer feature flow and steering"),
    ("architectures", "Study 6 · Every architecture side by side"),
)


def write_overview(figures: Path, columns: dict[str, str] | None = None) -> Path:
    """``figures/FINDINGS.md``: every study's verdicts with the models side by side (default:
    the embedded model from ``figures/`` and SmolLM2 from ``figures/smollm2/``)."""
    columns = columns or {"embedded model": ".", "SmolLM2-135M": "smollm2"}
    parts = [
        "# Findings, both models side by side",
        "",
        "Written by `make findings` from each notebook's `findings_<study>.json`. Per claim: what the paper "
        "reports, our number with its spread and the verdict on each model, and where the claim holds. "
        "The rules and the full tables are in each study's `findings_<study>.md`.",
        "",
    ]
    for study, title in STUDIES:
        cols = columns if study != "synthetic" else {"synthetic data (no language model)": "."}
        try:
            table = side_by_side({label: figures / sub for label, sub in cols.items()}, study)
        except ValueError:
            continue
        parts += [f"## {title}", "", table]
    path = figures / "FINDINGS.md"
    _write(path, "\n".join(parts))
    return path
