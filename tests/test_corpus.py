from collections import Counter

from sae_studies import corpus


def test_split_entries_known_answer():
    # underlined "its" as nroff writes it: each letter preceded by "_" and a backspace
    raw = "%% header comment\nfirst\nline\n%\n\n%\n_\x08i_\x08t_\x08s\x07 mine\n%\n"
    assert corpus.split_entries(raw) == ["first\nline", "its mine"]


def test_category_of_files():
    assert corpus.category_of("4.4BSD-limerick") == "limerick"
    assert corpus.category_of("fortunes") == "fortunes"
    assert corpus.category_of("Net2-zippy") == "zippy"
    assert corpus.category_of("fortunes-o") is None
    assert corpus.category_of("fortunes.dat") is None


def test_embedded_corpus_is_deduplicated_labelled_and_split():
    entries = corpus.load_fortunes()
    assert len(entries) > 15_000
    assert set(Counter(e.category for e in entries)) == set(corpus.CATEGORIES)
    folded = [" ".join(e.text.split()).lower() for e in entries]
    assert len(set(folded)) == len(folded)
    assert not any(e.source.endswith("-o") for e in entries)
    train, val = corpus.train_val_split(entries, 0.05)
    assert len(train) + len(val) == len(entries)
    assert 0.04 < len(val) / len(entries) < 0.06
    assert not {e.text for e in train} & {e.text for e in val}
    # the split depends on the text only, not on order
    assert corpus.train_val_split(entries[::-1], 0.05)[1] == val[::-1]
