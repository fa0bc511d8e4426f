"""Study 0: the model overview tables (known answers)."""

import numpy as np
import pytest
import torch

from sae_studies import activations, corpus
from sae_studies.studies import overview


def test_unigram_entropy_known_answer():
    assert overview.unigram_entropy(np.array([0, 1, 2, 3])) == pytest.approx(np.log(4))
    assert overview.unigram_entropy(np.array([5, 5, 5])) == pytest.approx(0.0)


def test_corpus_table_counts_tokens_per_category(micro_run):
    entries = [corpus.Entry("a b c", "limerick", "x"), corpus.Entry("a", "limerick", "x"), corpus.Entry("b c", "zippy", "y")]
    per_entry, stats = overview.corpus_table(entries, micro_run.loaded.tokenizer)
    assert list(stats.index) == ["limerick", "zippy"] and stats.loc["limerick", "entries"] == 2
    assert stats.share_of_tokens.sum() == pytest.approx(1.0) and len(per_entry) == 3


def test_activation_statistics_count_the_dimensions_that_hold_the_variance(micro_run, monkeypatch):
    """Variance on 3 of 8 axes (10, 5, 3): two hold 15 / 18 < 90 %, so 90 % needs 3 dimensions; the
    participation ratio is 18² / (100 + 25 + 9)."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(20000, 8)
    x[:, :3] = torch.randn(20000, 3, generator=g) * torch.tensor([10.0, 5.0, 3.0]).sqrt()
    hook = activations.hook_name(1)
    acts = micro_run.activations([hook], split="val")[hook]
    monkeypatch.setattr(type(acts), "tensor", lambda self, n=None: x[:n])
    monkeypatch.setattr(type(acts), "d", property(lambda self: 8))
    stats = activations.activation_statistics(acts, n_rows=20000)
    assert stats["dims_90"] == 3
    assert stats["participation_ratio"] == pytest.approx(18**2 / 134, rel=0.05)


def test_activation_table_names_massive_dimensions():
    """A planted massive dimension (as in real LMs) is named in notebook 00's table."""
    import torch

    from sae_studies.studies import overview

    class FakeActs:
        hook, d = "blocks.2.hook_resid_post", 16

        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(4096, 16, generator=g)
            self.x[:, 5] = 300.0 + torch.randn(4096, generator=g)

        def __len__(self):
            return len(self.x)

        def tensor(self, n=None):
            return self.x[:n]

    table = overview.activation_table({FakeActs.hook: FakeActs()}, n_rows=4096)
    assert table.loc[0, "massive_dims"] == "5" and table.loc[0, "n_massive"] == 1 and table.loc[0, "layer"] == 2
