"""Steering generation with SAE features, and scoring it offline.

Steering adds, at every token, ``c_l · v̂_l`` to the residual stream after each steered layer
``l`` (``blocks.l.hook_resid_post``), with ``v̂_l`` a unit decoder direction and
``c_l = s_l · n_l``: ``s_l`` is the steering strength in units of ``n_l``, the median norm of that
residual stream over harvested tokens (so ``s = 1`` adds a vector as long as a typical residual
state). Removal (``mode="remove"``) subtracts the feature's own contribution at every token
instead, ``h ← h − a_f(h)·u_f`` (the deactivation edit with ``r = 0``).

Schedules over the layers ``l_0 < … < l_n`` of a multi-layer plan (:func:`layer_strengths`):
constant ``s_l = s``; exponential ``s_l = s·e^{α(l − l_seed)}`` (α = −0.05 published; counted
from the seed's layer so the seed always gets ``s``); linear from ``s`` at ``l_0`` to
``s·linear_end`` at ``l_n``.

Scorers (no external service):
- theme: probability of the target theme under a TF-IDF + logistic-regression classifier
  trained on the corpus's training entries (:class:`ThemeClassifier`);
- fluency: ``clip((L_shuffled − NLL) / (L_shuffled − L_real), 0, 1)``, with NLL the mean
  negative log-likelihood (nats/token, the log perplexity) of the continuation under the
  unsteered model, ``L_real`` that of real validation text (fluency 1) and ``L_shuffled`` that
  of the same text with its tokens shuffled within each window (fluency 0)
  (:func:`coherence_anchors`, :func:`fluency`);
- repetition: share of repeated n-grams, ``1 − |distinct n-grams| / |n-grams|``;
- coherence = fluency × (1 − repetition): a model finds its own loops predictable (a run of tabs
  has a low perplexity), which a judge of coherence would not accept.
The combined score is theme × coherence (``(1 − theme) × coherence`` when removing a theme).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..checks import check_choice, check_int, check_probability
from ..devices import device_of, to_device, to_numpy

SCHEDULES = ("constant", "exponential", "linear")
MODES = ("add", "remove")


# --------------------------------------------------------------------------------------------
# steering plans and hooks
# --------------------------------------------------------------------------------------------


def layer_strengths(
    layers: Sequence[int],
    s: float,
    schedule: str,
    seed_layer: int | None = None,
    alpha: float = -0.05,
    linear_end: float = 0.25,
) -> dict[int, float]:
    """``{layer: s_l}`` for a schedule (definitions in the module docstring)."""
    check_choice("schedule", schedule, SCHEDULES)
    layers = sorted(int(x) for x in layers)
    if not layers:
        raise ValueError("layers must hold at least one layer")
    seed_layer = layers[0] if seed_layer is None else seed_layer
    if schedule == "constant":
        return {layer: float(s) for layer in layers}
    if schedule == "exponential":
        return {layer: float(s * math.exp(alpha * (layer - seed_layer))) for layer in layers}
    span = max(1, layers[-1] - layers[0])
    return {layer: float(s * (1 + (linear_end - 1) * (layer - layers[0]) / span)) for layer in layers}


@dataclass(frozen=True)
class SteeringPlan:
    """What a steered generation does at each layer.

    ``directions[l]`` is a unit vector ``[d]`` and ``coefficients[l]`` the number it is multiplied
    by (``s_l · n_l``) for ``mode="add"``; for ``mode="remove"``, ``removals[l]`` is
    ``(sae, feature)`` whose contribution is subtracted at every token."""

    mode: str = "add"
    directions: Mapping[int, Tensor] = field(default_factory=dict)
    coefficients: Mapping[int, float] = field(default_factory=dict)
    removals: Mapping[int, tuple[object, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if set(self.directions) != set(self.coefficients):
            raise ValueError(
                f"directions and coefficients must name the same layers; got "
                f"{sorted(self.directions)} and {sorted(self.coefficients)}"
            )

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions if self.mode == "add" else self.removals)

    def hooks(self) -> list[tuple[str, Callable]]:
        """TransformerLens forward hooks that apply the plan to every row of a batch."""
        return batch_hooks([self])


def batch_hooks(plans: Sequence[SteeringPlan | None]) -> list[tuple[str, Callable]]:
    """Forward hooks that apply ``plans[i]`` to row ``i`` of the batch (None: unsteered row), so
    generations under different plans share one batch. One plan applies to every row. Layer −1 is
    the embedding (``blocks.0.hook_resid_pre``). Directions and SAEs may live on any device: the
    hooks move what they add to the residual stream's device, and the stream to a removal SAE's."""
    from .features import feature_contributions
    from .flow import position_hook

    plans = list(plans)
    if not plans:
        raise ValueError("plans must hold at least one plan (None for an unsteered row)")
    layers = sorted({layer for p in plans if p is not None for layer in p.layers})
    broadcast = len(plans) == 1
    units: dict[int, Tensor] = {}  # contribution directions, one decode per SAE
    out = []
    for layer in layers:
        adds = [
            (i, p.coefficients[layer] * p.directions[layer])
            for i, p in enumerate(plans)
            if p is not None and p.mode == "add" and layer in p.directions
        ]
        groups: dict[tuple[int, int], tuple[object, int, list[int]]] = {}
        for i, p in enumerate(plans):
            if p is not None and p.mode == "remove" and layer in p.removals:
                sae, f = p.removals[layer]
                groups.setdefault((id(sae), f), (sae, f, []))[2].append(i)
        removes = []
        for sae, f, rows in groups.values():
            if id(sae) not in units:
                units[id(sae)] = feature_contributions(sae)
            removes.append((sae, f, units[id(sae)][f], slice(None) if broadcast else torch.as_tensor(rows)))
        rows_add = torch.as_tensor([i for i, _ in adds], dtype=torch.long)
        vec_add = torch.stack([v for _, v in adds])[:, None, :] if adds else None

        def hook(x, hook, vec=vec_add, rows=rows_add, removes=removes):
            if vec is not None:
                v = vec.to(device=x.device, dtype=x.dtype)
                x = x + v if broadcast else x.index_add(0, rows.to(x.device), v.expand(-1, x.shape[1], -1))
            for sae, f, u, sel in removes:
                x = x.clone()
                sel = sel if isinstance(sel, slice) else sel.to(x.device)
                a = sae.encode(to_device(x[sel], sae))[..., f : f + 1].to(device=x.device, dtype=x.dtype)
                x[sel] = x[sel] - a * u.to(device=x.device, dtype=x.dtype)
            return x

        out.append((position_hook(("resid", layer)), hook))
    return out


def add_plan(
    chain: Mapping[int, int], decoders: Mapping[int, Tensor], norms: Mapping[int, float], strengths: Mapping[int, float]
) -> SteeringPlan:
    """An additive plan: at each layer of ``strengths``, the unit decoder row ``chain[l]`` of
    ``decoders[l]`` times ``strengths[l] · norms[l]``."""
    missing = [layer for layer in strengths if layer not in chain or layer not in decoders or layer not in norms]
    if missing:
        raise ValueError(f"no chain feature, decoder or residual norm for layers {missing}")
    dirs, coefs = {}, {}
    for layer, s in strengths.items():
        w = decoders[layer]
        check_int(f"feature at layer {layer}", chain[layer], 0, w.shape[0] - 1, f" (the SAE has {w.shape[0]} features)")
        row = w[chain[layer]].detach().float()
        dirs[layer] = row / row.norm().clamp_min(1e-12)
        coefs[layer] = float(s) * float(norms[layer])
    return SteeringPlan("add", dirs, coefs)


# --------------------------------------------------------------------------------------------
# batched, seeded sampling with a KV cache
# --------------------------------------------------------------------------------------------


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Logits outside the smallest set of tokens whose probability reaches ``top_p`` set to -inf
    (the most likely token always stays)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches top_p
    sorted_logits = sorted_logits.masked_fill(drop, -math.inf)
    return torch.full_like(logits, -math.inf).scatter(-1, order, sorted_logits)


@torch.no_grad()
def sample(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seeds: int | Sequence[int] = 0,
    pad_id: int = 0,
    hooks: Sequence[tuple[str, Callable]] = (),
) -> list[list[int]]:
    """Continuations of token-id prompts, all at once: left-padded, with a KV cache, seeded.

    ``temperature = 0`` is greedy. Each row draws from its own ``torch.Generator`` seeded with
    ``seeds[i]`` (one int: ``seed + i``), so a continuation depends on its prompt, its seed and
    the hooks only — not on the batch it shares or on global random state; the same seed under
    two steering plans gives paired samples. ``hooks`` (e.g. :func:`batch_hooks`) are active on
    every forward pass, prompt included."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    check_int("max_new_tokens", max_new_tokens, 1)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token-id lists")
    check_probability("top_p", top_p)
    n, width = len(prompts), max(len(p) for p in prompts)
    device = model.cfg.device
    tokens = torch.full((n, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    seeds = [int(seeds) + i for i in range(n)] if isinstance(seeds, (int, np.integer)) else [int(x) for x in seeds]
    if len(seeds) != n:
        raise ValueError(f"seeds must give one seed per prompt ({n}); got {len(seeds)}")
    gens = [torch.Generator(device="cpu").manual_seed(x) for x in seeds]
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, n)
    out = []
    with model.hooks(fwd_hooks=list(hooks)):
        logits = model(tokens, attention_mask=mask, past_kv_cache=cache)[:, -1]
        for step in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = top_p_filter(logits.float() / temperature, top_p).softmax(-1).cpu()
                nxt = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)]).to(device)
            out.append(nxt)
            if step + 1 < max_new_tokens:
                logits = model(
                    nxt[:, None], attention_mask=torch.ones((n, 1), dtype=torch.long, device=device), past_kv_cache=cache
                )[:, -1]
    return torch.stack(out, 1).tolist()


def cut_at(tokens: Sequence[int], stop_ids: int | Sequence[int] | None) -> list[int]:
    """The tokens before the first of ``stop_ids`` (all of them when none occurs)."""
    stops = set() if stop_ids is None else {stop_ids} if isinstance(stop_ids, (int, np.integer)) else set(stop_ids)
    tokens = list(tokens)
    return next((tokens[:i] for i, t in enumerate(tokens) if t in stops), tokens)


# --------------------------------------------------------------------------------------------
# scorers
# --------------------------------------------------------------------------------------------


class ThemeClassifier:
    """TF-IDF (word 1-2-grams, sublinear tf) + multinomial logistic regression with balanced
    class weights, so a theme's probability is not its share of the corpus."""

    def __init__(self, max_features: int = 50_000, C: float = 4.0, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=max_features, min_df=2),
            LogisticRegression(C=C, class_weight="balanced", max_iter=300, tol=1e-3, random_state=seed),
        )
        self.classes: list[str] = []

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> ThemeClassifier:
        self.pipeline.fit(list(texts), list(labels))
        self.classes = [str(c) for c in self.pipeline.classes_]
        return self

    def proba(self, texts: Sequence[str]) -> pd.DataFrame:
        """[n texts × themes] probabilities."""
        if not self.classes:
            raise RuntimeError("fit the classifier before asking for probabilities")
        return pd.DataFrame(self.pipeline.predict_proba(list(texts)), columns=self.classes)

    def theme_score(self, texts: Sequence[str], theme: str) -> np.ndarray:
        check_choice("theme", theme, self.classes)
        return self.proba(texts)[theme].to_numpy()

    def report(self, texts: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
        """Held-out accuracy, balanced accuracy (mean per-class recall) and each class's recall."""
        from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

        pred = self.pipeline.predict(list(texts))
        recall = recall_score(labels, pred, labels=self.classes, average=None, zero_division=0)
        return {
            "accuracy": float(accuracy_score(labels, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
            "n": len(labels),
            "recall": dict(zip(self.classes, map(float, recall))),
        }


def repetition(tokens: Sequence[int], n: int = 2) -> float:
    """``1 − |distinct n-grams| / |n-grams|`` (0 with fewer than two n-grams)."""
    check_int("n", n, 1)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if len(grams) < 2 else 1.0 - len(set(grams)) / len(grams)


@torch.no_grad()
def continuation_nll(
    model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], batch_size: int = 64, pad_id: int = 0
) -> np.ndarray:
    """Mean negative log-likelihood (nats/token) of each continuation given its prompt under
    ``model`` (no hooks: the unsteered model). NaN for an empty continuation."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    out = np.full(len(prompts), np.nan)
    order = [i for i in range(len(prompts)) if len(continuations[i]) > 0]
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        seqs = [list(prompts[i]) + list(continuations[i]) for i in idx]
        width = max(map(len, seqs))
        toks = torch.full((len(idx), width), pad_id, dtype=torch.long)  # right-padded: causal, pads come last
        for r, s in enumerate(seqs):
            toks[r, : len(s)] = torch.as_tensor(s)
        logp = model(toks.to(model.cfg.device)).float().log_softmax(-1).cpu()
        for r, i in enumerate(idx):
            p, c = len(prompts[i]), len(continuations[i])
            tgt = torch.as_tensor(list(continuations[i]))
            out[i] = -logp[r, p - 1 : p - 1 + c].gather(1, tgt[:, None]).mean().item()
    return out


@torch.no_grad()
def coherence_anchors(model, contexts: np.ndarray, seed: int = 0, batch_size: int = 32, n_prefix: int = 0) -> dict[str, float]:
    """Mean next-token NLL (nats/token) of real windows (``real``) and of the same windows with
    their tokens shuffled (``shuffled``): the two ends of the fluency scale. The first
    ``n_prefix`` positions (a BOS token) stay in place."""
    rng = np.random.default_rng(seed)
    shuffled = np.stack([np.concatenate([w[:n_prefix], rng.permutation(w[n_prefix:])]) for w in contexts])
    res = {}
    for name, ctx in (("real", contexts), ("shuffled", shuffled)):
        total = 0.0
        for i in range(0, len(ctx), batch_size):
            toks = torch.as_tensor(ctx[i : i + batch_size], dtype=torch.long, device=model.cfg.device)
            total += model(toks, return_type="loss", loss_per_token=True).double().sum().item()
        res[name] = total / (len(ctx) * (ctx.shape[1] - 1))
    return res


def fluency(nll: np.ndarray, real: float, shuffled: float) -> np.ndarray:
    """``clip((shuffled − nll) / (shuffled − real), 0, 1)``; NaN stays NaN."""
    if not shuffled > real:
        raise ValueError(f"the shuffled-text NLL ({shuffled}) must exceed the real-text NLL ({real})")
    return np.clip((shuffled - np.asarray(nll, dtype=float)) / (shuffled - real), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# seed features for a theme
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def theme_enrichment(
    encode: Callable[[Tensor], Tensor], x: Tensor, categories: np.ndarray, n_categories: int, batch_size: int = 4096
) -> np.ndarray:
    """``[categories, F]`` standardised mean difference of each latent's activation on a
    category's tokens against all other tokens: ``(μ_c − μ_rest) / σ`` with σ the latent's
    standard deviation over all tokens (rows with category < 0, separators, are skipped; 0 where
    σ = 0). Batches of ``x`` move to ``encode``'s device (``devices.device_of``; a plain function:
    where ``x`` is), sums accumulate there; the result is a numpy array."""
    categories = np.asarray(categories)
    if len(categories) != len(x):
        raise ValueError(f"categories has {len(categories)} rows but x has {len(x)}")
    dev = device_of(encode)
    sums = cnt = sq = None
    for i in range(0, len(x), batch_size):
        cat = torch.as_tensor(categories[i : i + batch_size], dtype=torch.long)
        keep = cat >= 0
        xb = x[i : i + batch_size][keep.to(x.device)]
        z = encode(to_device(xb, dev) if dev is not None else xb).double()
        cat = cat[keep].to(z.device)
        if sums is None:
            sums = torch.zeros(n_categories, z.shape[1], dtype=torch.float64, device=z.device)
            cnt = torch.zeros(n_categories, dtype=torch.float64, device=z.device)
            sq = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
        sums.index_add_(0, cat, z)
        cnt += torch.bincount(cat, minlength=n_categories).double()
        sq += z.pow(2).sum(0)
    n = cnt.sum()
    total = sums.sum(0)
    mean = total / n
    sd = (sq / n - mean.pow(2)).clamp_min(0).sqrt()
    mu_c = sums / cnt.clamp_min(1)[:, None]
    mu_rest = (total - sums) / (n - cnt).clamp_min(1)[:, None]
    d = torch.where(sd > 0, (mu_c - mu_rest) / sd.clamp_min(1e-12), torch.zeros_like(mu_c))
    return to_numpy(d)
