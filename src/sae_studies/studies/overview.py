"""Study 0: what the language model is — its corpus, loss, samples, activations, a first SAE.

Notebook 00 reads these tables for whichever model the profile names (the embedded model, or
SmolLM2 on the `smollm2` profile), so the two can be compared side by side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import activations, corpus, lm
from ..analyses import quality
from ..saes import registry


def corpus_table(entries: list[corpus.Entry], tokenizer) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_entry, per_category)``: each entry's category and token count, and per category the
    number of entries, tokens, median length and share of tokens."""
    lengths = [len(ids) for ids in tokenizer([e.text for e in entries], add_special_tokens=False)["input_ids"]]
    per_entry = pd.DataFrame({"category": [e.category for e in entries], "tokens": lengths})
    stats = per_entry.groupby("category").agg(
        entries=("tokens", "size"), tokens=("tokens", "sum"), median_len=("tokens", "median")
    )
    stats["share_of_tokens"] = stats["tokens"] / stats["tokens"].sum()
    return per_entry, stats


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy (nats) of the token frequencies: the loss of a model that ignores context."""
    counts = np.bincount(tokens).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def activation_table(acts: dict[str, activations.ActivationSet], n_rows: int = 65_536) -> pd.DataFrame:
    """`activations.activation_statistics` of every hook, with its layer and kind, and its
    massive-activation dimensions (`stability_nulls.massive_dimensions`: the dimensions that make
    a covariance-drawn null overstate chance, which study 1's chosen null leaves out)."""
    from .stability_nulls import massive_dimensions

    rows = []
    for hook, a in acts.items():
        layer, kind = activations.parse_hook(hook)
        dims = massive_dimensions(a.tensor(min(n_rows, len(a))))
        massive = {"n_massive": len(dims), "massive_dims": " ".join(map(str, dims))}
        rows.append({**activations.activation_statistics(a, n_rows), **massive, "layer": layer, "kind": kind})
    return pd.DataFrame(rows)


def sanity_table(run, layer: int, ks: list[int]) -> pd.DataFrame:
    """TopK SAEs (``sae.expansion_factor × d``, the profile's SAE settings) at the residual stream
    after ``layer``, one per k: held-out EV, L0, dead fraction, CE and loss recovered."""
    from ..sweep import SAEJob

    P = run.profile
    hook = activations.hook_name(layer)
    train_acts = run.activations([hook])[hook]
    eval_x = run.activations([hook], split="val")[hook].tensor()
    splicer = run.splicer(hook)  # clean and zero-ablation CE computed once for every k
    d_sae = P.sae.expansion_factor * train_acts.d
    jobs = [SAEJob(train_acts, registry.get("topk").spec(d_sae, k), P.sae, P.activations.batch_size) for k in ks]
    rows = []
    for k, (sae, art) in zip(ks, run.train(jobs, desc="TopK SAEs")):
        rows.append(
            {
                "k": k,
                **quality.sae_report(sae, eval_x, splicer),
                "train_tokens_per_s": art.manifest["summary"]["tokens_per_second"],
            }
        )
    return pd.DataFrame(rows)


def validation_loss(loaded: lm.LoadedModel, n_tokens: int) -> float:
    """Mean next-token CE (nats/token) on the first ``n_tokens`` validation tokens (their context
    windows, BOS in front for models that need one)."""
    return lm.evaluate_loss(loaded.model, loaded.contexts("val", n_tokens))
