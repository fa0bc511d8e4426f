"""Study 5: cross-layer feature flow and multi-layer steering (notebook 05).

The grid (one TopK SAE per position of a window of layers and per seed), the checks of the
profile section, the derived tables (groups per layer, deactivation summary, steering
conditions and scores) and the verdict rules the notebook writes to ``findings_flow.md``.
Definitions live in :mod:`sae_studies.analyses.flow` and :mod:`sae_studies.analyses.steering`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import corpus
from ..analyses import flow, steering
from ..analyses.seed_stability import NULL_KINDS, null_decoders
from ..checks import check_choice, check_cosine_threshold, check_int, check_positive_int, check_unit_interval
from ..config import SAEConfig
from ..saes import registry
from ..study_config import Study05Config
from .budget_ladders import check_ladder

#: Published numbers (Laptev et al. 2025, Gemma-2-2B, 1,894 features): deactivation of the
#: matched predecessor, mean activation change and success rate.
PAPER_DEACTIVATION = {"top-1 cosine": (0.75, 0.65), "exhaustive": (0.83, 0.73)}


# --------------------------------------------------------------------------------------------
# checks and the grid
# --------------------------------------------------------------------------------------------


def window_layers(C: Study05Config, n_layers: int) -> list[int]:
    """The window ``first_layer..last_layer`` (``last_layer=None``: the model's last layer)."""
    last = n_layers - 1 if C.last_layer is None else C.last_layer
    first = check_int("study05.first_layer", C.first_layer, 0, n_layers - 1, f" (the model has {n_layers} layers)")
    last = check_int("study05.last_layer", last, first, n_layers - 1, f" (from first_layer to the model's last, {n_layers - 1})")
    return flow.check_window(range(first, last + 1), n_layers)


def steer_layer(C: Study05Config, layers: Sequence[int]) -> int:
    """The layer whose residual SAE gives the seed features (``None``: the middle of the window)."""
    if C.steer_layer is None:
        return layers[len(layers) // 2]
    return check_int(
        "study05.steer_layer", C.steer_layer, layers[0], layers[-1], f" (inside the window {layers[0]}..{layers[-1]})"
    )


def check_study05(
    C: Study05Config,
    n_layers: int,
    sae_k: int,
    d_model: int,
    corpus_source: str = "fortunes",
    warmup_fraction: float = SAEConfig.lr_warm_up_fraction,
) -> list[int]:
    """Every field of the section, before any work; returns the window of layers. The steering
    themes are the fortune corpus's categories, so the corpus must be the fortunes.
    ``warmup_fraction`` is the profile's ``sae.lr_warm_up_fraction`` (the ladder's warm-up)."""
    if corpus_source != "fortunes":
        raise ValueError(
            f"study 5 steers toward the fortune corpus's categories: corpus.source must be 'fortunes'; got {corpus_source!r}"
        )
    layers = window_layers(C, n_layers)
    steer_layer(C, layers)
    registry.get(C.architecture).spec(C.expansion_factor * d_model, C.k or sae_k)
    if not C.seeds or len(set(C.seeds)) != len(C.seeds):
        raise ValueError(f"study05.seeds must be distinct and non-empty; got {list(C.seeds)}")
    check_int("study05.match_k", C.match_k, 5, hint=" (the random-top-5 comparison needs 5)")
    check_choice("study05.null_kind", C.null_kind, NULL_KINDS)
    if not 0 < C.null_quantile < 1:
        raise ValueError(f"study05.null_quantile must be in (0, 1); got {C.null_quantile!r}")
    check_cosine_threshold("study05.graph_resid_threshold", C.graph_resid_threshold)
    check_cosine_threshold("study05.graph_module_threshold", C.graph_module_threshold)
    if C.convergence_tokens:
        check_ladder("study05", C, C.batch_size, warmup_fraction)
    for name in (
        "deactivation_windows",
        "deactivation_features",
        "deactivation_windows_per_feature",
        "seeds_per_theme",
        "removal_prompts",
        "samples_per_prompt",
        "max_new_tokens",
        "generation_batch_size",
        "anchor_windows",
        "n_top_activations",
        "repetition_n",
    ):
        check_positive_int(f"study05.{name}", getattr(C, name))
    if C.classifier_entries is not None:
        check_positive_int("study05.classifier_entries", C.classifier_entries)
    for theme in C.themes:
        check_choice("each of study05.themes", theme, corpus.CATEGORIES)
    for sch in C.schedules:
        check_choice("each of study05.schedules", sch, steering.SCHEDULES)
    if not C.scales or any(s <= 0 for s in C.scales) or list(C.scales) != sorted(set(C.scales)):
        raise ValueError(f"study05.scales must be positive and strictly increasing; got {list(C.scales)}")
    if any(s >= 0 for s in C.removal_scales):
        raise ValueError(f"study05.removal_scales must be negative (steering away); got {list(C.removal_scales)}")
    check_unit_interval("study05.top_p", C.top_p)
    check_unit_interval("study05.judge_ceiling", C.judge_ceiling)
    check_int(
        "study05.seed_feature_sae_seeds", C.seed_feature_sae_seeds, 1, len(C.seeds), " (at most the number of study05.seeds)"
    )
    check_unit_interval("study05.max_token_share", C.max_token_share)
    if not C.prompts:
        raise ValueError("study05.prompts must hold at least one prompt")
    return layers


def sae_config(sae: SAEConfig, C: Study05Config) -> SAEConfig:
    return dataclasses.replace(sae, train_tokens=C.train_tokens, lr=C.lr if C.lr is not None else sae.lr)


def position_seed(seed: int, position: flow.Position) -> int:
    """The SAE seed of one position: distinct per position. SAEs of the same width trained with
    one seed start from the same decoder (tied init), and short runs keep much of it: with a
    shared seed, 55-98 % of the default model's best cross-layer matches were the same latent
    index — the matching found the initialisation, not the features."""
    kind, layer = position
    return 1000 * seed + 10 * (layer + 1) + flow.SOURCES.index(kind)


def train_window(train_acts, layers, C: Study05Config, d_model: int, k: int, sae_cfg: SAEConfig, store, runner=None):
    """``{seed: {position: SAE}}``: one SAE per position of the window and seed (cached), each
    initialised with :func:`position_seed`; the grid runs on the sweep `runner` (in process by default)."""
    from ..sweep import SAEJob, train_all

    spec = registry.get(C.architecture).spec(C.expansion_factor * d_model, C.k or k)
    cells = [(s, p) for s in C.seeds for p in flow.window_positions(layers)]
    jobs = [
        SAEJob(train_acts[flow.position_hook(pos)], spec.with_seed(position_seed(seed, pos)), sae_cfg, C.batch_size)
        for seed, pos in cells
    ]
    out: dict = {}
    for (seed, pos), (sae, _) in zip(cells, train_all(jobs, store, runner, "flow SAEs")):
        out.setdefault(seed, {})[pos] = sae
    return out


def decoders_of(saes: Mapping) -> dict:
    return {pos: sae.W_dec.detach() for pos, sae in saes.items()}


def null_sources(decoders: Mapping, covariances: Mapping, kind: str, seed: int) -> dict:
    """A dictionary without learned structure per source position: ``null_decoders(kind)`` with
    that position's activation covariance and the same width, drawn on the CPU (the same draws on
    every machine) and placed on the device of the decoder it stands in for."""
    gen = torch.Generator().manual_seed(seed)
    return {
        pos: null_decoders(kind, 1, w.shape[0], covariances[pos], generator=gen)[0].to(w.device) for pos, w in decoders.items()
    }


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def group_table(
    matches: flow.FlowMatches, thresholds: Mapping[tuple[str, int], float], alive: Mapping[int, np.ndarray] | None = None
) -> pd.DataFrame:
    """Per residual feature: its three scores, thresholds, group and module; only features in
    ``alive[layer]`` (a boolean mask) when given."""
    table = matches.table()
    parts = []
    for layer, part in table.groupby("layer"):
        t = {kind: thresholds[(kind, layer)] for kind in flow.SOURCES}
        g = flow.classify({kind: part[f"s_{kind}"].to_numpy() for kind in flow.SOURCES}, t)
        part = part.assign(
            group=g["group"].to_numpy(), module=g["module"].to_numpy(), **{f"t_{kind}": t[kind] for kind in flow.SOURCES}
        )
        if alive is not None:
            part = part[np.asarray(alive[layer])[part["feature"].to_numpy()]]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def group_fractions(groups: pd.DataFrame, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """Share of features in each group (columns GROUPS) per ``by``."""
    frac = groups.groupby(list(by))["group"].value_counts(normalize=True).unstack(fill_value=0.0)
    return frac.reindex(columns=list(flow.GROUPS), fill_value=0.0)


def deactivation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean change and success per method and seed, with the features counted."""
    return (
        table.groupby(["seed", "method"])
        .agg(change=("change", "mean"), success=("success", "mean"), n_features=("feature", "nunique"))
        .reset_index()
    )


def mean_se(df: pd.DataFrame, by: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    """Mean, standard error (sd / √n) and n of each column per group (NaN keys, e.g. the s of a
    removal, are groups too)."""
    g = df.groupby(list(by), dropna=False)[list(cols)]
    mean, sd, n = g.mean(), g.std(ddof=1), g.count()
    out = mean.copy()
    for c in cols:
        out[f"{c}_se"] = sd[c] / np.sqrt(n[c])
        out[f"{c}_n"] = n[c]
    return out.reset_index()


# --------------------------------------------------------------------------------------------
# steering grid
# --------------------------------------------------------------------------------------------


def steering_conditions(C: Study05Config) -> pd.DataFrame:
    """Every steered condition per theme: ``direction`` toward (add, s > 0) or away (negative s,
    or removal of the feature's contribution), ``span`` single (seed layer) or multi (flow chain),
    ``schedule`` and ``s``. The unsteered baseline (s = 0) is its own row per direction."""
    rows = [{"direction": "toward", "span": "none", "schedule": "none", "s": 0.0}]
    rows += [{"direction": "toward", "span": "single", "schedule": "constant", "s": s} for s in C.scales]
    rows += [{"direction": "toward", "span": "multi", "schedule": sch, "s": s} for sch in C.schedules for s in C.scales]
    rows += [{"direction": "away", "span": "none", "schedule": "none", "s": 0.0}]
    for span in ("single", "multi"):
        rows += [{"direction": "away", "span": span, "schedule": "constant", "s": s} for s in C.removal_scales]
        rows += [{"direction": "away", "span": span, "schedule": "remove", "s": np.nan}]
    return pd.DataFrame(rows)


def condition_plan(
    cond: Mapping, chain: Mapping[int, int], seed_layer: int, saes: Mapping, norms: Mapping[int, float], C: Study05Config
) -> steering.SteeringPlan | None:
    """The steering plan of one condition for one seed feature (None for the baseline)."""
    if cond["span"] == "none":
        return None
    layers = [seed_layer] if cond["span"] == "single" else sorted(chain)
    if cond["schedule"] == "remove":
        return steering.SteeringPlan("remove", removals={layer: (saes[("resid", layer)], chain[layer]) for layer in layers})
    strengths = steering.layer_strengths(layers, cond["s"], cond["schedule"], seed_layer, C.alpha, C.linear_end)
    decoders = {layer: saes[("resid", layer)].W_dec for layer in layers}
    return steering.add_plan(chain, decoders, norms, strengths)


def steering_jobs(
    conditions: pd.DataFrame,
    seeds_of: Mapping[str, Sequence[int]],
    toward_prompts: Sequence[int],
    away_prompts: Mapping[str, Sequence[int]],
    samples: int,
) -> pd.DataFrame:
    """One row per generation: theme, ``sae_seed`` and seed ``feature`` (``seeds_of[theme]`` holds
    (SAE seed, feature) pairs, or plain features: SAE seed None), the condition's columns,
    ``prompt`` (an index into the prompt list: neutral prompts toward a theme, the theme's own
    away from it) and ``sample``; ``cell`` numbers the (theme, feature, condition) cells."""
    rows, cell = [], 0
    for theme, feats in seeds_of.items():
        for item in feats:
            sae_seed, f = item if isinstance(item, tuple) else (None, item)
            for c in conditions.to_dict("records"):
                prompts = toward_prompts if c["direction"] == "toward" else away_prompts[theme]
                rows += [
                    {"theme": theme, "sae_seed": sae_seed, "feature": int(f), **c, "prompt": int(p), "sample": k, "cell": cell}
                    for p in prompts
                    for k in range(samples)
                ]
                cell += 1
    return pd.DataFrame(rows)


def generate_all(
    model,
    jobs: pd.DataFrame,
    plans: Mapping[int, steering.SteeringPlan | None],
    prompts: Sequence[Sequence[int]],
    C: Study05Config,
    pad_id: int,
) -> list[list[int]]:
    """Continuations for every job row, ``plans[cell]`` its plan (None: unsteered), batched across
    conditions. Row seeds are ``generation_seed + 1000·prompt + sample``, so every condition sees
    the same random draws for the same (prompt, sample); unsteered rows that share a prompt and
    sample (the baselines of different themes) are generated once."""
    keys = [(None if plans[c] is None else c, p, k) for c, p, k in zip(jobs["cell"], jobs["prompt"], jobs["sample"])]
    unique = list(dict.fromkeys(keys))
    order = sorted(range(len(unique)), key=lambda i: len(prompts[unique[i][1]]))  # similar lengths pad less
    done: dict[tuple, list[int]] = {}
    for b in tqdm(range(0, len(order), C.generation_batch_size), desc="generating", leave=False):
        batch = [unique[i] for i in order[b : b + C.generation_batch_size]]
        seeds = [C.generation_seed + 1000 * p + k for _, p, k in batch]
        hooks = steering.batch_hooks([None if c is None else plans[c] for c, _, _ in batch])
        conts = steering.sample(
            model, [prompts[p] for _, p, _ in batch], C.max_new_tokens, C.temperature, C.top_p, seeds, pad_id, hooks
        )
        done.update(zip(batch, conts))
    return [done[key] for key in keys]


def best_vs_baseline(curves: pd.DataFrame) -> pd.DataFrame:
    """Per theme: the best steered combined score (over every condition) and the baseline's,
    each with its standard error (``curves`` from :func:`mean_se` by theme and condition)."""
    rows = []
    for theme, part in curves.groupby("theme"):
        base = part[part["span"] == "none"].iloc[0]
        best = part[part["span"] != "none"].sort_values("combined").iloc[-1]
        rows.append(
            {
                "theme": theme,
                "combined": best["combined"],
                "combined_se": best["combined_se"],
                "base": base["combined"],
                "base_se": base["combined_se"],
                "base_theme": base["theme_score"],
                "best_condition": f"{best['span']}/{best['schedule']}"
                + ("" if best["schedule"] == "remove" else f"/s={best['s']:g}"),
            }
        )
    return pd.DataFrame(rows)


def pick_seed_features(
    enrichment: Mapping[int, np.ndarray],
    token_share: Mapping[int, np.ndarray],
    theme_index: int,
    n: int,
    n_sae_seeds: int,
    max_token_share: float,
) -> list[tuple[int, int, bool]]:
    """The steering seed features of one theme, by a stated rule: ``(sae_seed, feature,
    is_token_feature)`` for ``n`` features drawn in turn from the first ``n_sae_seeds`` SAE seeds
    of ``enrichment`` (so each contributes; ``enrichment[s]``: [categories, F] standardised mean
    difference), each seed's candidates in order of enrichment for the theme (positive only).
    Non-token features come first: a feature whose top activations fall on one token with share
    ≥ ``max_token_share`` (``token_share[s]``; NaN, too few firings to tell, counts as a token
    feature) is taken only when too few others are enriched — punctuation or digit features
    (':' for limerick) steer a surface form, not a theme."""
    seeds = list(enrichment)[:n_sae_seeds]
    if not seeds:
        raise ValueError("pick_seed_features needs the enrichment of at least one SAE seed")
    ranked = {}
    for s in seeds:
        e = np.asarray(enrichment[s])[theme_index]
        order = [int(f) for f in np.argsort(-e, kind="stable") if e[f] > 0]
        share = np.asarray(token_share[s], float)
        ranked[s] = [(f, not (np.isfinite(share[f]) and share[f] < max_token_share)) for f in order]
    picked: list[tuple[int, int, bool]] = []
    for token_pass in (False, True):  # every non-token feature of every seed before any token feature
        queues = {s: [f for f, t in ranked[s] if t == token_pass] for s in seeds}
        while len(picked) < n and any(queues.values()):
            for s in seeds:
                if queues[s] and len(picked) < n:
                    picked.append((s, queues[s].pop(0), token_pass))
    return picked


# --------------------------------------------------------------------------------------------
# prompts and scoring (what the notebook calls; figures: flow_plots)
# --------------------------------------------------------------------------------------------


def theme_scorers(run, C: Study05Config, train_entries: Sequence[corpus.Entry]):
    """Study 5's two offline scorers: ``(clf, anchors)`` — the theme classifier fitted on the
    training entries (a fixed random ``classifier_entries`` of them when set) and the coherence
    anchors (the LM's loss on ``anchor_windows`` validation windows, real and shuffled)."""
    fit_on = (
        train_entries
        if C.classifier_entries is None
        else [train_entries[i] for i in np.random.default_rng(0).permutation(len(train_entries))[: C.classifier_entries]]
    )
    clf = steering.ThemeClassifier(C.classifier_max_features, C.classifier_c).fit(
        [e.text for e in fit_on], [e.category for e in fit_on]
    )
    anchors = steering.coherence_anchors(
        run.model, run.eval_contexts(C.anchor_windows * run.loaded.n_ctx), n_prefix=run.loaded.n_prefix
    )
    return clf, anchors


def removal_prompt_texts(entries: Sequence[corpus.Entry], theme: str, n: int, words: int, seed: int = 0) -> list[str]:
    """``n`` prompts for steering away from ``theme``: the first ``words`` words of validation
    entries of that theme (drawn with ``seed`` among entries that have more words than that)."""
    check_choice("theme", theme, corpus.CATEGORIES)
    texts = [" ".join(e.text.split()[:words]) for e in entries if e.category == theme and len(e.text.split()) > words]
    if not texts:
        raise ValueError(f"no validation entry of theme {theme!r} has more than {words} words")
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]


def score_generations(
    jobs: pd.DataFrame,
    continuations,
    prompts,
    classifier: steering.ThemeClassifier,
    model,
    anchors: Mapping[str, float],
    tokenizer,
    C: Study05Config,
) -> pd.DataFrame:
    """Per generation: ``text`` (up to the first special token: end-of-text, or a chat token of
    an instruction-tuned model), ``theme_score`` (classifier
    probability of the row's theme), ``nll`` of the continuation (to and with its end-of-text)
    under the unsteered model, ``fluency``, ``repetition``, ``coherence`` = fluency × (1 −
    repetition) and ``combined`` (theme × coherence toward a theme, (1 − theme) × coherence away
    from it)."""
    eot = tokenizer.eos_token_id
    stops = {eot, *tokenizer.all_special_ids} - {None}
    cut = [steering.cut_at(c, stops) for c in continuations]
    scored = [c[: len(k) + 1] if len(k) < len(c) else k for c, k in zip(continuations, cut)]  # keep the stop token
    texts = [tokenizer.decode(k) for k in cut]
    out = jobs.copy()
    out["text"] = texts
    out["n_tokens"] = [len(k) for k in cut]
    proba = classifier.proba(texts)
    out["theme_score"] = [proba.at[i, t] for i, t in enumerate(out["theme"])]
    out["nll"] = steering.continuation_nll(model, [prompts[p] for p in out["prompt"]], scored, pad_id=eot or 0)
    out["fluency"] = steering.fluency(out["nll"].to_numpy(), anchors["real"], anchors["shuffled"])
    out["repetition"] = [steering.repetition(k, C.repetition_n) for k in cut]
    out["coherence"] = out["fluency"] * (1 - out["repetition"])
    toward = out["direction"] == "toward"
    out["combined"] = np.where(toward, out["theme_score"], 1 - out["theme_score"]) * out["coherence"]
    return out
