import numpy as np
import pytest
import torch

from sae_studies import corpus, lm, tokens


def test_bpe_round_trips_text():
    texts = ["The quick brown fox.\n\t-- Anon", "Murphy's Law: anything that can go wrong, will."] * 20
    tok = tokens.train_bpe(texts, vocab_size=300)
    for t in texts[:2]:
        assert tok.decode(tok.encode(t).ids) == t


def test_token_stream_separates_entries_with_eot(micro_run):
    loaded = micro_run.loaded
    stream = loaded.streams["val"]
    eot = loaded.tokenizer.eos_token_id
    assert stream.tokens.dtype == np.int32 and len(stream.tokens) == len(stream.categories)
    is_eot = stream.tokens == eot
    assert (stream.categories[is_eot] == -1).all()
    assert ((stream.categories[~is_eot] >= 0) & (stream.categories[~is_eot] < len(corpus.CATEGORIES))).all()
    _, val = corpus.train_val_split(corpus.load_fortunes(), micro_run.profile.corpus.val_fraction)
    assert is_eot.sum() == len(val)


def test_unknown_model_name_fails_with_close_matches():
    with pytest.raises(ValueError, match="gpt2"):
        lm.check_model_name("gtp2")
    lm.check_model_name("gpt2")  # a TransformerLens name is accepted (not loaded)
    lm.check_model_name("embedded")


def test_embedded_model_learns_and_reloads_identically(micro_run):
    loaded = micro_run.loaded
    curve = loaded.curve
    assert curve.train_loss.iloc[-5:].mean() < curve.train_loss.iloc[:5].mean() - 0.5
    again = lm.load_model(micro_run.profile.lm, micro_run.profile.corpus, micro_run.store)
    x = torch.as_tensor(loaded.streams["val"].contexts(64)[:2], dtype=torch.long)
    assert torch.equal(loaded.model(x), again.model(x))
    assert micro_run.model.cfg.n_layers >= 4


def test_embedded_model_generates_with_its_tokenizer(micro_run):
    out = micro_run.model.generate("I think", max_new_tokens=5, do_sample=False, verbose=False)
    assert out.startswith("I think") and len(out) > len("I think")


def test_lr_schedule_warms_up_then_decays():
    cfg = lm.LMConfig(lr=1.0, warmup_steps=10)
    lrs = [lm.lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_any_prefix_of_a_split_mixes_categories(micro_run):
    for split in ("train", "val"):
        head = micro_run.loaded.streams[split].categories[:4096]
        assert len(set(head[head >= 0].tolist())) >= 3, split
