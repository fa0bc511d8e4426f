"""The public-domain prose sources a profile may add beside the fortune files (corpus.extra_sources)."""

import dataclasses

import pytest

from sae_studies import corpus, tokens
from sae_studies.config import CorpusConfig, as_dict, load_profile


def test_sotu_is_one_entry_per_address():
    entries = corpus.load_sotu()
    assert len(entries) == 249 and {e.category for e in entries} == {"sotu"}
    first = entries[0]
    assert first.source == "1790-Washington-1" and first.text.startswith("Fellow-Citizens of the Senate")


def test_bible_is_one_entry_per_chapter_without_verse_numbers():
    entries = corpus.load_bible()
    assert len(entries) == 1189 and {e.category for e in entries} == {"bible"}  # the Protestant canon's chapters
    genesis = entries[0]
    assert genesis.source == "WEB 01:001"
    assert genesis.text.startswith("In the beginning God created the heavens and the earth. Now the earth was formless")
    assert " 2. " not in genesis.text  # verse numbers removed
    assert entries[-1].text.endswith("The grace of the Lord Jesus be with all the saints. Amen.")


def test_extra_sources_add_categories_and_keep_the_fortune_ids():
    assert corpus.ALL_CATEGORIES[: len(corpus.CATEGORIES)] == corpus.CATEGORIES
    cfg = dataclasses.replace(CorpusConfig(), extra_sources=("bible",))
    train, val = corpus.load(cfg)
    cats = {e.category for e in train + val}
    assert cats == set(corpus.CATEGORIES) | {"bible"}
    plain_train, _ = corpus.load(CorpusConfig())
    assert len(train) > len(plain_train)


@pytest.mark.parametrize("bad", [("gutenberg",), ("sotu", "sotu")])
def test_unknown_or_repeated_sources_fail(bad):
    with pytest.raises(ValueError, match="corpus.extra_sources"):
        corpus.load(dataclasses.replace(CorpusConfig(), extra_sources=bad))


def test_default_corpus_keys_are_unchanged():
    """Without extra sources the token streams' key parameters are the ones the field's absence
    gave, so every cached artifact of the fortune corpus stays valid; with one they differ."""
    seen = []

    class Recorder:
        def get_or_build(self, kind, params, build, code=()):
            seen.append(params)
            raise StopIteration

    cfg = load_profile("default").corpus
    old = {k: v for k, v in as_dict(cfg).items() if k != "extra_sources"}
    for c in (cfg, dataclasses.replace(cfg, extra_sources=("sotu",))):
        with pytest.raises(StopIteration):
            tokens.token_streams(c, None, "tok", Recorder())
    assert seen[0] == {"corpus": old, "tokenizer": "tok", "entry_order": "shuffled, seed 0"}
    assert seen[1]["corpus"]["extra_sources"] == ("sotu",)
