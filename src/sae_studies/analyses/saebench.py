"""SAEBench's offline metrics on this repository's data: sparse probing and feature absorption.

SAEBench (PyPI ``sae-bench`` 0.6.0) is where the field compares SAE architectures. Its evaluation
drivers (``evals/absorption/main.py``, ``evals/sparse_probing/main.py``) download models and
datasets from the hub and import packages this project does not pin (``tabulate``, ``datasets``,
``sae-probes``, numpy < 2), so they cannot run here. This module implements the two metrics
following SAEBench's definitions, on the held-out activations the studies already harvest:

* **Sparse probing** — follows ``sae_bench/evals/sparse_probing/probe_training.py``
  (``get_top_k_mean_diff_mask``, ``train_sklearn_probe``): per binary task, keep the k latents
  with the largest |mean(positive) − mean(negative)| on the training split, fit an L2 logistic
  regression (C = 1, max_iter = 1000) on them, report test accuracy. The tasks are the corpus
  categories, one against the rest, on balanced sets; a "text" is a run of held-out tokens of one
  category inside a context window, its code the mean over the run (SAEBench mean-pools a text).
* **Feature absorption** (Chanin et al. 2024) — follows
  ``sae_bench/evals/absorption/feature_absorption_calculator.py`` (the per-word absorption
  fraction and full-absorption test, copied rule for rule in :func:`absorption_fraction` and
  :func:`is_full_absorption`) and ``feature_absorption.py`` / ``main.py`` (words scored: those of
  the letter whose LM probe fires; a letter's score = sum over those words / their number; the
  SAE's score = mean over letters). Departures, because the embedded LM is not an in-context
  speller: examples are the vocabulary words' occurrences in held-out text (not SAEBench's ICL
  prompt ``"{word}:"``), and a letter's main latents are chosen by class-mean difference, kept
  while each raises the F1 of a logistic probe on them by ``f1_jump`` (SAEBench: an L1 probe's
  top weights, same F1-jump rule).

``tests/test_saebench.py`` checks both against SAEBench's own functions on small cases when the
package is importable (``pip install --no-deps sae-bench==0.6.0``), and against hand-computed
cases always.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from ..checks import check_int

LETTERS = "abcdefghijklmnopqrstuvwxyz"
EPS = 1e-8

__all__ = [
    "text_runs",
    "pool_runs",
    "pooled_texts",
    "top_k_mean_diff",
    "sparse_probe_accuracy",
    "sparse_probing",
    "alpha_words",
    "WordExamples",
    "word_examples",
    "LetterProbes",
    "letter_probes",
    "absorption_fraction",
    "is_full_absorption",
    "main_latents",
    "absorption",
]


# ----------------------------------------------------------------------------------------------
# sparse probing
# ----------------------------------------------------------------------------------------------


def text_runs(categories: np.ndarray, n_ctx: int, min_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, ends, labels)`` of every maximal run of ≥ ``min_tokens`` consecutive rows with
    one category (≥ 0; separators are < 0) inside a context window of ``n_ctx`` rows: the texts
    of sparse probing."""
    check_int("n_ctx", n_ctx, 1)
    check_int("min_tokens", min_tokens, 1)
    cats = np.asarray(categories)
    starts, ends, labels = [], [], []
    for start in range(0, len(cats) - n_ctx + 1, n_ctx):
        c = cats[start : start + n_ctx]
        bounds = np.flatnonzero(np.diff(c)) + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, n_ctx]):
            if c[a] >= 0 and b - a >= min_tokens:
                starts.append(start + a)
                ends.append(start + b)
                labels.append(int(c[a]))
    return np.asarray(starts, dtype=int), np.asarray(ends, dtype=int), np.asarray(labels, dtype=int)


@torch.no_grad()
def pool_runs(
    encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """``[T, F]`` mean code of ``x[start:end]`` for every run (encoded once per covering batch of rows)."""
    out = []
    if len(starts) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lo = 0
    while lo < len(starts):
        first = starts[lo]
        hi = lo
        while hi < len(starts) and ends[hi] - first <= 8192:
            hi += 1
        hi = max(hi, lo + 1)
        z = encode(x[first : ends[hi - 1]]).float()
        out.extend(z[a - first : b - first].mean(0).numpy() for a, b in zip(starts[lo:hi], ends[lo:hi]))
        lo = hi
    return np.stack(out).astype(np.float32)


def pooled_texts(
    codes: torch.Tensor | np.ndarray, categories: np.ndarray, n_ctx: int, min_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(X [T, F], labels [T])``: the mean code of every text of :func:`text_runs`."""
    z = codes if isinstance(codes, torch.Tensor) else torch.as_tensor(np.asarray(codes))
    if len(categories) != len(z):
        raise ValueError(f"categories has {len(categories)} rows, codes {len(z)}: one category per row")
    starts, ends, labels = text_runs(categories, n_ctx, min_tokens)
    if len(starts) == 0:
        return np.zeros((0, z.shape[1]), dtype=np.float32), labels
    return pool_runs(lambda b: b, z, starts, ends), labels


def top_k_mean_diff(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` columns with the largest |mean over y = 1 − mean over y = 0|
    (SAEBench's ``get_top_k_mean_diff_mask``, as indices)."""
    check_int("k", k, 1)
    diff = np.abs(x[y == 1].mean(0) - x[y == 0].mean(0))
    return np.argsort(-diff, kind="stable")[:k]


def sparse_probe_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int | None
) -> float:
    """Test accuracy of an L2 logistic probe (C = 1, max_iter = 1000) on the top-``k`` mean-difference
    columns (all columns when ``k`` is None)."""
    cols = np.arange(x_train.shape[1]) if k is None else top_k_mean_diff(x_train, y_train, k)
    probe = LogisticRegression(C=1.0, max_iter=1000)  # L2, as SAEBench
    probe.fit(x_train[:, cols], y_train)
    return float(accuracy_score(y_test, probe.predict(x_test[:, cols])))


def sparse_probing(
    x: np.ndarray, labels: np.ndarray, ks: Sequence[int], max_texts: int, test_fraction: float, seed: int = 0
) -> pd.DataFrame:
    """One row per (category, k): test accuracy of the k-sparse probe for that category against
    the rest, on a balanced set of at most ``max_texts`` texts per class (seeded draw), split into
    balanced train and test sets (``test_fraction`` of each class held out).
    Categories with fewer than 4 texts on either side are skipped."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(labels):
        pos, neg = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        n = min(len(pos), len(neg), max_texts)
        if n < 4:
            continue
        # balanced train and test sets (as SAEBench's): the split is made within each class, so a
        # probe that only learned the majority of its training set scores 0.5, not below it
        n_test = max(1, int(round(n * test_fraction)))
        p, q = rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)
        tr = np.r_[p[n_test:], q[n_test:]]
        te = np.r_[p[:n_test], q[:n_test]]
        y_tr = np.r_[np.ones(n - n_test, dtype=int), np.zeros(n - n_test, dtype=int)]
        y_te = np.r_[np.ones(n_test, dtype=int), np.zeros(n_test, dtype=int)]
        for k in ks:
            acc = sparse_probe_accuracy(x[tr], y_tr, x[te], y_te, k)
            rows.append({"category": int(c), "k": k, "accuracy": acc, "n_texts": 2 * n})
    return pd.DataFrame(rows, columns=["category", "k", "accuracy", "n_texts"])


# ----------------------------------------------------------------------------------------------
# absorption
# ----------------------------------------------------------------------------------------------


def alpha_words(tokenizer) -> dict[int, str]:
    """Token id → word for every vocabulary token made only of ASCII letters after an optional
    leading space (SAEBench's ``vocab.get_alpha_tokens``), lower-cased, space stripped."""
    out = {}
    for token, idx in tokenizer.get_vocab().items():
        word = tokenizer.convert_tokens_to_string([token])
        if word.startswith(" "):
            word = word[1:]
        if word and all(ch.isascii() and ch.isalpha() for ch in word):
            out[int(idx)] = word.lower()
    return out


@dataclass(frozen=True)
class WordExamples:
    """Rows of a held-out activation set that hold a vocabulary word, with its word and letter."""

    rows: np.ndarray
    word: np.ndarray
    """Token id of the word at each row."""
    letter: np.ndarray
    """Index of the word's first letter in LETTERS."""
    train: np.ndarray
    """Boolean: the row's word is in the training half (split by word, never within one)."""


def word_examples(tokens: np.ndarray, words: dict[int, str], max_occurrences: int, seed: int = 0) -> WordExamples:
    """Up to ``max_occurrences`` rows per word (first occurrences), words split in halves by a seeded draw."""
    check_int("max_occurrences", max_occurrences, 1)
    tokens = np.asarray(tokens)
    rows = []
    for tid in sorted(words):
        rows.extend(np.flatnonzero(tokens == tid)[:max_occurrences])
    rows = np.asarray(sorted(rows), dtype=int)
    ids = tokens[rows]
    present = np.unique(ids)
    rng = np.random.default_rng(seed)
    train_words = set(rng.choice(present, len(present) // 2, replace=False).tolist()) if len(present) else set()
    letter = np.array([LETTERS.index(words[int(t)][0]) for t in ids], dtype=int)
    return WordExamples(rows, ids, letter, np.isin(ids, list(train_words)))


@dataclass(frozen=True)
class LetterProbes:
    """One logistic probe per letter on the LM's activations: its unit direction and test F1."""

    letters: list[int]
    directions: dict[int, np.ndarray]
    f1: dict[int, float]
    test_scores: dict[int, np.ndarray]
    """The probe's decision value on every test row (> 0: the probe says this letter)."""


def letter_probes(x: np.ndarray, ex: WordExamples, min_f1: float, min_words: int) -> LetterProbes:
    """Fit a balanced logistic probe per letter (one against the rest) on the training words'
    rows; keep letters whose test F1 ≥ ``min_f1`` with ≥ ``min_words`` test words (SAEBench's
    ``min_GT_probe_f1``)."""
    tr, te = ex.train, ~ex.train
    letters, dirs, f1s, scores = [], {}, {}, {}
    for c in np.unique(ex.letter):
        y_tr, y_te = ex.letter[tr] == c, ex.letter[te] == c
        if y_tr.sum() < 2 or (~y_tr).sum() < 2 or len(np.unique(ex.word[te][y_te])) < min_words:
            continue
        probe = LogisticRegression(max_iter=1000, class_weight="balanced").fit(x[tr], y_tr)
        s = probe.decision_function(x[te])
        f1 = float(f1_score(y_te, s > 0))
        if f1 >= min_f1:
            letters.append(int(c))
            w = probe.coef_[0]
            dirs[int(c)] = w / np.linalg.norm(w)
            f1s[int(c)] = f1
            scores[int(c)] = s
    return LetterProbes(letters, dirs, f1s, scores)


def absorption_fraction(
    sae_acts: np.ndarray,
    act_probe_proj: float,
    cos_sims: np.ndarray,
    main_ids: Sequence[int],
    cos_threshold: float = 0.1,
    proportion_threshold: float = 0.4,
    max_absorbing: int = 3,
) -> float:
    """SAEBench's absorption fraction of one word (``FeatureAbsorptionCalculator``): the share of
    the probe projection that up to ``max_absorbing`` probe-aligned non-main latents carry
    instead of the main latents; 0 when the main latents carry it all or the absorbers carry less
    than ``proportion_threshold`` of it, 1 when the main latents carry nothing."""
    proj = np.asarray(sae_acts, dtype=np.float64) * np.asarray(cos_sims, dtype=np.float64)
    main_ids = list(main_ids)
    main = float(proj[main_ids].sum())
    mask = np.ones(len(proj), dtype=bool)
    mask[main_ids] = False
    mask &= np.asarray(cos_sims) >= cos_threshold
    mask &= proj > 0
    top = np.sort(proj[mask])[::-1][:max_absorbing]
    total = float(top.sum())
    if main >= act_probe_proj or total / act_probe_proj < proportion_threshold:
        return 0.0
    if main <= 0.0:
        return 1.0
    absorbed = min(total, act_probe_proj - main)
    return float(np.clip(absorbed / (absorbed + main), 0.0, 1.0))


def is_full_absorption(
    sae_acts: np.ndarray,
    act_probe_proj: float,
    cos_sims: np.ndarray,
    main_ids: Sequence[int],
    cos_threshold: float = 0.025,
    proportion_threshold: float = 0.4,
) -> bool:
    """SAEBench's full absorption of one word: no main latent fires, the top probe-projecting
    latent has cosine ≥ ``cos_threshold`` with the probe, the probe projection is ≥ 0 and that
    latent carries ≥ ``proportion_threshold`` of it."""
    acts = np.asarray(sae_acts, dtype=np.float64)
    proj = acts * np.asarray(cos_sims, dtype=np.float64)
    if not all(acts[i] < EPS for i in main_ids):
        return False
    top = int(np.argmax(proj))
    if cos_sims[top] < cos_threshold or act_probe_proj < 0:
        return False
    return bool(proj[top] / act_probe_proj >= proportion_threshold)


def main_latents(codes: np.ndarray, y: np.ndarray, max_k: int, f1_jump: float) -> list[int]:
    """A letter's main latents: latents ranked by class-mean difference (signed: latents that fire
    *for* the letter, as SAEBench's k-sparse probe takes its top positive weights), the j-th kept while a
    logistic probe on the first j has a training F1 above the best so far by ≥ ``f1_jump``
    (SAEBench's feature-split rule, ``add_feature_splits_to_metrics_df``); at least one."""
    check_int("max_k", max_k, 1)
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-(codes[y].mean(0) - codes[~y].mean(0)), kind="stable")[:max_k]
    kept, best = [int(order[0])], -np.inf
    for j in range(1, len(order) + 1):
        cols = order[:j]
        if len(np.unique(y)) < 2:
            break
        probe = LogisticRegression(max_iter=1000, class_weight="balanced").fit(codes[:, cols], y)
        score = float(f1_score(y, probe.predict(codes[:, cols])))
        if score > best + f1_jump:
            kept, best = [int(i) for i in cols], score
    return kept


@torch.no_grad()
def absorption(
    encode: Callable[[torch.Tensor], torch.Tensor],
    w_dec: torch.Tensor,
    x: torch.Tensor,
    ex: WordExamples,
    probes: LetterProbes,
    max_k: int = 3,
    f1_jump: float = 0.03,
) -> pd.DataFrame:
    """Per letter: ``mean_absorption_fraction`` and ``full_absorption_rate`` (sums over the test
    words the letter's probe gets right, divided by their number, as SAEBench's ``main.py``),
    the number of main latents and of scored words. ``x`` is the held-out activations the rows
    of ``ex`` index; ``encode`` the SAE's encoder (e.g. a HierarchicalTopK prefix)."""
    xs = x[torch.as_tensor(ex.rows)]
    codes = torch.cat([encode(b) for b in xs.split(4096)]).double().numpy()
    tr, te = ex.train, ~ex.train
    dec = torch.nn.functional.normalize(w_dec.detach().double(), dim=-1).numpy()
    rows = []
    for c in probes.letters:
        main = main_latents(codes[tr], ex.letter[tr] == c, max_k, f1_jump)
        direction = probes.directions[c]
        cos = dec @ direction
        scored = np.flatnonzero((ex.letter[te] == c) & (probes.test_scores[c] > 0))
        if len(scored) == 0:
            continue
        proj = xs[te].double().numpy()[scored] @ direction
        z = codes[te][scored]
        fractions = [absorption_fraction(z[i], proj[i], cos, main) for i in range(len(scored))]
        full = [is_full_absorption(z[i], proj[i], cos, main) for i in range(len(scored))]
        rows.append(
            {
                "letter": LETTERS[c],
                "mean_absorption_fraction": float(np.mean(fractions)),
                "full_absorption_rate": float(np.mean(full)),
                "n_main": len(main),
                "n_scored": len(scored),
            }
        )
    return pd.DataFrame(rows, columns=["letter", "mean_absorption_fraction", "full_absorption_rate", "n_main", "n_scored"])
