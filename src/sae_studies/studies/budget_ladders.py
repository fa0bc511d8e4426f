"""A set of SAEs on token-budget ladders, and the convergence gate of what a study reads off them.

Studies 1, 3, 4 and 6 each train a few *arms* (an architecture at a size and learning rate) on one
warmup-stable-decay ladder per seed (:func:`sae_studies.ladder.train_ladder`: one run per SAE,
an SAE at every rung) and read quantities off every rung's SAEs:

* :func:`ladder_table` trains every (arm, seed) ladder and returns a tidy table, one row per
  row that a study's callback returns for an arm's SAEs at a rung (``label``, ``tokens``, then
  the callback's columns, ``seed`` among them);
* :func:`paired_gap` turns it into per-seed differences between two models (a study's paired
  quantity, e.g. ΔEV = HierarchicalTopK@k − TopK@k of the same seed);
* :func:`convergence`, :func:`gate_verdict` and :func:`gate_table` apply
  :func:`sae_studies.analyses.convergence.gate` to a quantity per group of a ``by`` column, on the
  rungs up to the budget a verdict reads. A verdict over several groups has converged only if
  every group has;
* :func:`read_at_top` gives a verdict whose rule was applied to the ladder's top rung (issue 18: a
  verdict is read where its quantity has levelled off, or at the ladder's top reported as not
  converged), gated over the whole ladder, with the profile budget's reading as its ``previous``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

import pandas as pd
from tqdm.auto import tqdm

from ..analyses.convergence import Convergence, gate
from ..config import SAEConfig
from ..ladder import Ladder, plan, train_ladder
from ..saes.registry import SAESpec
from .verdicts import Verdict

__all__ = [
    "Arm",
    "check_ladder",
    "train_arms",
    "MAX_LR_EXTENSIONS",
    "sweep_rungs",
    "check_sweep_rung",
    "widen_sweep",
    "sweep_table",
    "ladder_table",
    "paired_gap",
    "convergence",
    "weakest",
    "gate_verdict",
    "read_at_top",
    "read_gated_at_top",
    "gate_table",
]


@dataclass(frozen=True)
class Arm:
    """One SAE of a ladder study, trained once per seed: its label, its spec for a seed and its
    training settings (the learning rate of the ladder's constant phase among them)."""

    label: str
    spec: Callable[[int], SAESpec]
    """seed → the SAE's spec (the seed sets the SAE's initialisation and data order)."""
    sae_cfg: SAEConfig


RungRows = Callable[[str, list, Sequence[int]], list[dict]]
"""``rows(label, saes, seeds)``: the table rows of one arm at one rung, given that rung's SAE of
every seed (in the order of ``seeds``); every row holds a ``seed``."""


def check_ladder(
    section: str,
    cfg,
    batch_size: int | None,
    warmup_fraction: float = SAEConfig.lr_warm_up_fraction,
    warmup_tokens: int | None = None,
) -> None:
    """A study's ladder settings (``convergence_tokens``, ``convergence_seeds``,
    ``ladder_decay_fraction``): a plan that `ladder.plan` accepts at ``batch_size`` (when given)
    with the warm-up `train_ladder` will use (``warmup_tokens``, study 1's override, or else
    ``warmup_fraction``: the profile's ``sae.lr_warm_up_fraction``), and at least two distinct
    seeds; the message names the fields."""
    if len(set(cfg.convergence_seeds)) != len(cfg.convergence_seeds) or len(cfg.convergence_seeds) < 2:
        raise ValueError(
            f"{section}.convergence_seeds must be at least 2 distinct seeds (the gate's seed spread); got {list(cfg.convergence_seeds)}"
        )
    if batch_size is not None:
        try:
            plan(cfg.convergence_tokens, batch_size, cfg.ladder_decay_fraction, warmup_fraction, warmup_tokens)
        except ValueError as err:
            warm = (
                f"sae.lr_warm_up_fraction = {warmup_fraction}"
                if warmup_tokens is None
                else f"{section}.ladder_warmup_tokens = {warmup_tokens}"
            )
            raise ValueError(f"{section}.convergence_tokens / ladder_decay_fraction (warm-up: {warm}): {err}") from err


def train_arms(
    acts,
    arms: Sequence[Arm],
    rungs: Sequence[int],
    seeds: Sequence[int],
    store,
    batch_size: int,
    decay_fraction: float = 0.2,
    warmup_tokens: int | None = None,
    progress: bool = True,
) -> dict[str, list[Ladder]]:
    """One ladder per (arm, seed) (trained, or loaded from the store): label → ladders in seed order."""
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels must be distinct; got {labels}")
    out = {}
    for arm in tqdm(arms, desc="ladders", disable=not progress):
        out[arm.label] = [
            train_ladder(
                acts,
                arm.spec(s),
                arm.sae_cfg,
                store,
                rungs,
                batch_size,
                decay_fraction,
                progress=False,
                warmup_tokens=warmup_tokens,
            )
            for s in tqdm(seeds, desc=f"{arm.label} ladders", disable=not progress, leave=False)
        ]
    return out


def sweep_rungs(rungs: Sequence[int], index: int | None) -> list[int]:
    """The ladder's rungs up to the one a learning-rate sweep reads (``index`` into ``rungs``;
    None: the rung below the top, where a ladder's last doubling is judged, or the only rung)."""
    index = max(len(rungs) - 2, 0) if index is None else index
    return list(rungs[: index + 1])


def check_sweep_rung(section: str, cfg) -> None:
    """``cfg.lr_sweep_rung`` is null or an index of ``cfg.convergence_tokens`` (the message names it)."""
    n = len(cfg.convergence_tokens)
    if cfg.lr_sweep_rung is not None and not 0 <= cfg.lr_sweep_rung < n:
        raise ValueError(
            f"{section}.lr_sweep_rung must be null or index {section}.convergence_tokens (0 .. {n - 1}); got {cfg.lr_sweep_rung}"
        )


MAX_LR_EXTENSIONS = 2
"""How many times a learning-rate sweep widens its grid past an edge that holds the best rate."""


def widen_sweep(
    measure: Callable[[float], float], grid: Sequence[float], max_extensions: int = MAX_LR_EXTENSIONS
) -> tuple[dict[float, float], float, bool]:
    """A learning-rate sweep that ends inside its grid where it can: ``measure(lr)`` (higher is
    better, e.g. held-out EV) at every rate of ``grid``, then the grid widened by a factor 2 beyond
    whichever edge holds the best, at most ``max_extensions`` times. Returns (value by rate, the
    best rate, whether the best ended strictly inside the swept grid)."""
    if not grid:
        raise ValueError("a learning-rate sweep needs at least one rate")
    found: dict[float, float] = {}
    todo = list(grid)
    for _ in range(max_extensions + 1):
        for lr in todo:
            if lr not in found:
                found[lr] = float(measure(lr))
        rates, best = sorted(found), max(found, key=found.get)
        if rates[0] < best < rates[-1]:
            break
        todo = [best * 2 if best == rates[-1] else best / 2]
    rates, best = sorted(found), max(found, key=found.get)
    return found, best, len(rates) >= 3 and rates[0] < best < rates[-1]


def sweep_table(architecture: str, tokens: int, sweep: tuple[dict[float, float], float, bool], **columns) -> pd.DataFrame:
    """One row per swept rate of :func:`widen_sweep`'s result (rates ascending): architecture,
    tokens, lr, explained_variance, ``chosen`` (the best rate), ``inside``, then ``columns``."""
    evs, best, inside = sweep
    return pd.DataFrame(
        [
            {
                "architecture": architecture,
                "tokens": tokens,
                "lr": lr,
                "explained_variance": evs[lr],
                "chosen": lr == best,
                "inside": inside,
                **columns,
            }
            for lr in sorted(evs)
        ]
    )


def ladder_table(
    acts,
    arms: Sequence[Arm],
    rungs: Sequence[int],
    seeds: Sequence[int],
    store,
    rows: RungRows,
    batch_size: int,
    decay_fraction: float = 0.2,
    warmup_tokens: int | None = None,
    label_column: str = "label",
    progress: bool = True,
) -> pd.DataFrame:
    """Train every (arm, seed) ladder (:func:`train_arms`) and tabulate ``rows`` of every arm at
    every rung: columns ``label_column``, ``tokens`` and the callback's."""
    ladders = train_arms(acts, arms, rungs, seeds, store, batch_size, decay_fraction, warmup_tokens, progress)
    out = []
    for arm in arms:
        for i, tokens in enumerate(rungs):
            for row in rows(arm.label, [lad.saes[i] for lad in ladders[arm.label]], list(seeds)):
                if "seed" not in row:
                    raise ValueError(f"every row of the rung callback needs a 'seed'; got columns {sorted(row)}")
                out.append({label_column: arm.label, "tokens": int(tokens), **row})
    return pd.DataFrame(out)


def paired_gap(
    table: pd.DataFrame,
    a: str,
    b: str,
    quantity: str,
    by: str = "label",
    keys: Sequence[str] = ("tokens", "seed"),
    name: str = "gap",
) -> pd.DataFrame:
    """Per ``keys`` (rung and seed, plus e.g. ``k``): ``quantity`` of model ``a`` minus that of
    model ``b`` (rows told apart by column ``by``), as column ``name``, next to both values
    (``"<quantity> <a>"``, ``"<quantity> <b>"``). Keys where either model is missing are dropped."""
    missing = ({by, quantity} | set(keys)) - set(table.columns)
    if missing:
        raise ValueError(f"the ladder table lacks columns {sorted(missing)}; it has {sorted(table.columns)}")
    for m in (a, b):
        if not (table[by] == m).any():
            raise ValueError(f"{by}={m!r} is not in the ladder table; it has {sorted(set(table[by]))}")
    wide = table[table[by].isin([a, b])].pivot_table(index=list(keys), columns=by, values=quantity, aggfunc="first")
    wide = wide.dropna(subset=[a, b])
    out = pd.DataFrame({f"{quantity} {a}": wide[a], f"{quantity} {b}": wide[b], name: wide[a] - wide[b]})
    return out.reset_index()


def _group_text(by: str, group) -> str:
    return str(group) if isinstance(group, str) else f"{by}={group}"


def convergence(
    table: pd.DataFrame,
    quantity: str,
    labels: Sequence | None = None,
    up_to: int | None = None,
    by: str = "label",
    name: str | None = None,
) -> Convergence | None:
    """The convergence gate of column ``quantity`` for a verdict that reads it: per group of
    column ``by`` (``labels``; all groups of the table by default) on the rungs ≤ ``up_to`` (the
    budget the verdict's SAEs were trained for; all rungs by default). A verdict over several
    groups has converged only if each has: the first group that has not is returned, else the one
    that converged last. None when the table is empty or has fewer than two such rungs (no ladder
    to gate on: the verdict keeps "no ladder"). ``name`` labels the quantity (default: the column)."""
    if table.empty:
        return None
    missing = {by, "tokens", "seed", quantity} - set(table.columns)
    if missing:
        raise ValueError(f"the ladder table lacks columns {sorted(missing)}; it has {sorted(table.columns)}")
    groups = list(labels) if labels is not None else list(dict.fromkeys(table[by]))
    unknown = set(groups) - set(table[by])
    if unknown:
        raise ValueError(f"{by} {sorted(unknown)} are not in the ladder table; it has {sorted(set(table[by]))}")
    found = []
    for group in groups:
        t = table[(table[by] == group) & ((table.tokens <= up_to) if up_to is not None else True)]
        values = t.pivot_table(index="tokens", columns="seed", values=quantity, dropna=False).sort_index()
        if len(values) < 2:
            return None
        found.append(gate(f"{name or quantity}, {_group_text(by, group)}", list(values.index), values.to_numpy()))
    return weakest(found)


def weakest(found: Sequence[Convergence]) -> Convergence:
    """The gate of a verdict that reads several gated quantities or groups: converged only if each
    has, so the first that has not is returned, else the one that levelled off last."""
    not_converged = [c for c in found if not c.converged]
    if not_converged:
        return not_converged[0]
    return max(found, key=lambda c: c.converged_at or 0)


def gate_verdict(
    verdict: Verdict,
    table: pd.DataFrame,
    quantity: str,
    labels: Sequence | None = None,
    up_to: int | None = None,
    by: str = "label",
    name: str | None = None,
) -> Verdict:
    """``verdict.gated`` by the convergence of the quantity it reads (:func:`convergence`), or the
    verdict unchanged when there is no ladder to gate on (its "converged at" says "no ladder")."""
    conv = convergence(table, quantity, labels, up_to, by, name)
    return verdict if conv is None else verdict.gated(conv)


def read_at_top(
    rule_at: Callable[[int], Verdict],
    before: Verdict,
    table: pd.DataFrame,
    quantity: str,
    budget: int,
    labels: Sequence | None = None,
    by: str = "label",
    name: str | None = None,
    *,
    until: str,
) -> Verdict:
    """``rule_at(tokens)``, a rule's verdict on the ladder's rows at one rung, read at the top
    rung and gated on ``quantity`` over the whole ladder (:func:`convergence`); ``before``, the same
    rule where the profile's budget (``budget`` tokens) reads it, gated on the rungs up to there,
    goes into ``previous`` with why it changed and the date the reading changed (``until``, a record
    per study; :func:`read_gated_at_top`)."""
    gate_up_to = partial(convergence, table, quantity, labels, by=by, name=name)  # up_to → the gate on the rungs ≤ up_to
    return read_gated_at_top(rule_at, before, gate_up_to, budget, until=until)


def read_gated_at_top(
    rule_at: Callable[[int], Verdict],
    before: Verdict,
    gate_up_to: Callable[[int | None], Convergence | None],
    budget: int,
    *,
    until: str,
) -> Verdict:
    """:func:`read_at_top` for any gate: ``gate_up_to(tokens)`` is the verdict's gate on the rungs
    up to ``tokens`` (None: the whole ladder; None returned: no ladder to gate on). The rule at the
    rung under the top is named in ``ours``: whether the last doubling changed what the rule says,
    which the gate (a change against the seed spread) does not tell. Without a ladder, ``before``
    stands."""
    conv = gate_up_to(None)
    if conv is None:
        return before
    at_budget = gate_up_to(budget)
    before = before if at_budget is None else before.gated(at_budget)
    (under_top, top), read, below = conv.rungs, rule_at(conv.rungs[1]), rule_at(conv.rungs[0])
    seeds = f" ({read.n} seeds)" if read.n else ""
    earlier = f"{read.previous}; " if read.previous else ""
    lo, hi = below.interval or (None, None)
    stat = f" {below.statistic:+.3g} [{lo:+.3g}, {hi:+.3g}]" if below.statistic is not None and lo is not None else ""
    under = f"; at {under_top:,} tokens the rule alone says {below.outcome}{stat}"
    return replace(
        read,
        ours=f"{read.ours}; read on the ladder at {top:,} tokens{seeds}{under}",
        previous=f"{earlier}until {until} read at the profile's budget ({budget:,} tokens"
        f"{f', {before.n} seeds' if before.n else ''}) and gated up to there: "
        f"{before.outcome} — {before.ours}. Changed (issue 18) so that a verdict is read where its quantity has "
        "levelled off, or at the ladder's top reported as not converged",
    ).gated(conv)


def gate_table(table: pd.DataFrame, quantities: Mapping[str, str], up_to: int | None = None, by: str = "label") -> pd.DataFrame:
    """The gate of every quantity (column → name) and group of a ladder table: what it read,
    whether it converged and from which rung (a notebook's convergence summary)."""
    rows = []
    if table.empty:
        return pd.DataFrame(rows)
    for q, name in quantities.items():
        for group in dict.fromkeys(table[by]):
            c = convergence(table, q, [group], up_to, by, name)
            if c is not None:
                rows.append(
                    {
                        "quantity": q,
                        by: group,
                        "converged": c.converged,
                        "converged_at": c.converged_at,
                        "gate": c.describe(),
                    }
                )
    out = pd.DataFrame(rows)
    return out.astype({"converged_at": "Int64"}) if len(out) else out  # token counts, not floats (None → <NA>)
