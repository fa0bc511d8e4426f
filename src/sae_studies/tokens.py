"""Tokenizer and token streams: corpus entries → one stream of token ids per split.

Each entry is followed by the end-of-text token, and every token carries the category id of its
entry (CATEGORIES order; -1 for the separator), so analyses can ask which theme a token came from.
The embedded model's byte-level BPE tokenizer is trained here on the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from . import corpus
from .config import CorpusConfig, as_dict
from .store import Artifact, Store

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.tokens", "sae_studies.corpus")

EOT = "<|endoftext|>"


@dataclass(frozen=True)
class TokenStream:
    tokens: np.ndarray  # int32 [n]
    categories: np.ndarray  # int8 [n], index into CATEGORIES, -1 on separators

    def __len__(self) -> int:
        return len(self.tokens)

    def contexts(self, n_ctx: int) -> np.ndarray:
        """Non-overlapping windows [n // n_ctx, n_ctx] (the tail is dropped)."""
        n = len(self.tokens) // n_ctx
        return self.tokens[: n * n_ctx].reshape(n, n_ctx)

    def context_categories(self, n_ctx: int) -> np.ndarray:
        n = len(self.tokens) // n_ctx
        return self.categories[: n * n_ctx].reshape(n, n_ctx)


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenisation) with one special token, EOT."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def as_hf_tokenizer(tokenizer_file: Path, out_dir: Path) -> None:
    """Save a `tokenizers` file as a HF tokenizer folder. TransformerLens reloads a tokenizer by
    its folder to add BOS handling, and `generate` needs an EOS id, so both are set to EOT."""
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=EOT, bos_token=EOT, pad_token=EOT).save_pretrained(
        out_dir
    )


def embedded_tokenizer(cfg: CorpusConfig, store: Store) -> tuple[PreTrainedTokenizerFast, Artifact]:
    """The BPE tokenizer of the embedded model, trained on the training split and cached."""
    params = {"corpus": cfg.source, "val_fraction": cfg.val_fraction, "vocab_size": cfg.vocab_size}

    def build(tmp: Path) -> dict:
        train, _ = corpus.load(cfg)
        tok = train_bpe([e.text for e in train], cfg.vocab_size)
        tok.save(str(tmp / "tokenizer.json"))
        as_hf_tokenizer(tmp / "tokenizer.json", tmp / "hf")
        return {"vocab_size": tok.get_vocab_size(), "n_train_entries": len(train)}

    art = store.get_or_build("tokenizer", params, build, code=BUILDER_CODE)
    return PreTrainedTokenizerFast.from_pretrained(art.path / "hf"), art


def encode(entries_: list[corpus.Entry], tokenizer: PreTrainedTokenizerFast) -> TokenStream:
    eot = tokenizer.eos_token_id
    if eot is None:
        raise ValueError("the tokenizer has no end-of-text (eos) token to separate entries")
    cat_id = {c: i for i, c in enumerate(corpus.CATEGORIES)}
    ids = tokenizer([e.text for e in entries_], add_special_tokens=False)["input_ids"]
    tokens, cats = [], []
    for entry, seq in zip(entries_, tqdm(ids, desc="tokenising", leave=False)):
        tokens.append(np.asarray(seq + [eot], dtype=np.int32))
        c = np.full(len(seq) + 1, cat_id.get(entry.category, -1), dtype=np.int8)
        c[-1] = -1
        cats.append(c)
    return TokenStream(np.concatenate(tokens), np.concatenate(cats))


def token_streams(
    cfg: CorpusConfig, tokenizer: PreTrainedTokenizerFast, tokenizer_id: str, store: Store
) -> tuple[dict[str, TokenStream], Artifact]:
    """Train and validation token streams, cached per corpus and tokenizer.

    Both streams are shuffled at the entry level with a fixed seed, so that any prefix of them
    (a token budget) mixes all categories instead of reading one category after another.
    """
    params = {"corpus": as_dict(cfg), "tokenizer": tokenizer_id, "entry_order": "shuffled, seed 0"}

    def build(tmp: Path) -> dict:
        rng = np.random.default_rng(0)
        summary = {}
        for split, items in zip(("train", "val"), corpus.load(cfg)):
            items = [items[i] for i in rng.permutation(len(items))]
            stream = encode(items, tokenizer)
            np.save(tmp / f"{split}_tokens.npy", stream.tokens)
            np.save(tmp / f"{split}_categories.npy", stream.categories)
            summary[f"{split}_tokens"] = len(stream)
            summary[f"{split}_entries"] = len(items)
        return summary

    art = store.get_or_build("tokens", params, build, code=BUILDER_CODE)
    streams = {
        split: TokenStream(np.load(art.path / f"{split}_tokens.npy"), np.load(art.path / f"{split}_categories.npy"))
        for split in ("train", "val")
    }
    return streams, art
