"""SAEBench's metrics (analyses.saebench): hand-computed cases, and agreement with SAEBench's own
functions on small cases where the package imports (``pip install --no-deps sae-bench==0.6.0``)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sae_studies.analyses import saebench as B


def test_pooled_texts_splits_runs_inside_windows():
    codes = torch.arange(8, dtype=torch.float32)[:, None]
    cats = np.array([0, 0, 1, 1, 1, -1, 2, 2])
    x, y = B.pooled_texts(codes, cats, n_ctx=4, min_tokens=2)
    # window 1: [0,0] -> mean 0.5, [1,1] -> 2.5; window 2: [1] too short, [-1] skipped, [2,2] -> 6.5
    assert y.tolist() == [0, 1, 2]
    assert np.allclose(x[:, 0], [0.5, 2.5, 6.5])


def test_top_k_mean_diff_picks_the_separating_column():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.r_[np.ones(50), np.zeros(50)].astype(int))
    x = rng.normal(size=(100, 6))
    x[:, 4] += 4 * y
    assert B.top_k_mean_diff(x, y, 1).tolist() == [4]
    acc = B.sparse_probe_accuracy(x[:80], y[:80], x[80:], y[80:], 1)
    assert acc > 0.9


def test_sparse_probing_balanced_rows_per_category():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 5)) + np.eye(5)[labels] * 8
    table = B.sparse_probing(x, labels, ks=(1, 2), max_texts=50, test_fraction=0.2)
    assert set(table.category) == {0, 1, 2} and set(table.k) == {1, 2}
    assert (table.n_texts == 100).all() and (table.accuracy > 0.9).all()
    # no signal: a balanced test set puts a probe at chance (0.5), never systematically below it
    noise = B.sparse_probing(rng.normal(size=(300, 5)), labels, ks=(1,), max_texts=10, test_fraction=0.2)
    assert noise.accuracy.mean() == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ValueError, match="test_fraction"):
        B.sparse_probing(x, labels, ks=(1,), max_texts=50, test_fraction=1.0)


def test_absorption_fraction_hand_computed():
    cos = np.array([0.9, 0.5, 0.2, 0.05])
    # main latent 0 silent, latent 1 carries 0.5 * 2 = 1.0 of a projection of 1.0: fully absorbed
    assert B.absorption_fraction(np.array([0.0, 2.0, 0.0, 0.0]), 1.0, cos, [0]) == 1.0
    assert B.is_full_absorption(np.array([0.0, 2.0, 0.0, 0.0]), 1.0, cos, [0])
    # main carries 0.9 * 0.5 = 0.45 of 1.0; absorbers 1.0 >= 0.4: absorbed min(1.0, 0.55) / (0.55 + 0.45)
    assert B.absorption_fraction(np.array([0.5, 2.0, 0.0, 0.0]), 1.0, cos, [0]) == pytest.approx(0.55)
    assert not B.is_full_absorption(np.array([0.5, 2.0, 0.0, 0.0]), 1.0, cos, [0])
    # main carries everything: no absorption; latent 3 is below the cosine threshold
    assert B.absorption_fraction(np.array([2.0, 0.0, 0.0, 9.0]), 1.0, cos, [0]) == 0.0


def test_absorption_finds_an_absorbing_latent():
    """A letter whose main latent is silent on half its words, where a second latent along the
    same direction fires instead: absorption about one half there, none for a clean letter."""
    rng = np.random.default_rng(0)
    d, n_words = 8, 40
    words = {i: ("a" if i < n_words else "b") + "x" * (1 + i % 3) for i in range(2 * n_words)}
    tokens = np.repeat(np.arange(2 * n_words), 2)
    ex = B.word_examples(tokens, words, max_occurrences=2, seed=0)
    letter = ex.letter
    x = rng.normal(scale=0.1, size=(len(tokens), d))
    x[letter == 0, 0] += 2.0
    x[letter == 1, 1] += 2.0
    absorbed_word = (letter == 0) & (ex.word % 2 == 1)
    x = torch.tensor(x, dtype=torch.float32)
    probes = B.letter_probes(x.numpy(), ex, min_f1=0.6, min_words=2)
    w_dec = torch.eye(d)[:3]  # latent 0: letter a, latent 1: letter b, latent 2: a's absorber (also e0)
    w_dec[2] = torch.nn.functional.normalize(torch.tensor([1.0, 0, 0, 0, 0, 0, 0.2, 0]), dim=0)
    absorbed = torch.tensor(absorbed_word)

    def encode_rows(xb):  # called on the example rows in order: the absorbed rows move latent 0 to latent 2
        z = torch.relu(xb @ torch.eye(d)[:3].T - 0.5)
        mask = encode_rows.mask[: len(xb)]
        encode_rows.mask = encode_rows.mask[len(xb) :]
        z[mask, 2], z[mask, 0] = z[mask, 0], 0.0
        return z

    encode_rows.mask = absorbed
    table = B.absorption(encode_rows, w_dec, x, ex, probes, max_k=1, f1_jump=0.03).set_index("letter")
    assert table.loc["b", "mean_absorption_fraction"] == 0.0
    assert 0.3 < table.loc["a", "mean_absorption_fraction"] < 0.7
    assert table.loc["a", "full_absorption_rate"] == pytest.approx(table.loc["a", "mean_absorption_fraction"])


def test_sparse_probe_matches_saebench():
    pt = pytest.importorskip("sae_bench.evals.sparse_probing.probe_training")
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    x = (rng.normal(size=(120, 10)) + np.outer(y, np.linspace(0, 2, 10))).astype(np.float32)
    xt, yt = torch.tensor(x), torch.tensor(y)
    mask = pt.get_top_k_mean_diff_mask(xt[:100], yt[:100], 3)
    assert sorted(np.flatnonzero(~mask.numpy())) == sorted(B.top_k_mean_diff(x[:100], y[:100], 3))
    _, acc = pt.train_sklearn_probe(
        pt.apply_topk_mask_reduce_dim(xt[:100], mask), yt[:100], pt.apply_topk_mask_reduce_dim(xt[100:], mask), yt[100:]
    )
    assert B.sparse_probe_accuracy(x[:100], y[:100], x[100:], y[100:], 3) == pytest.approx(acc)


def test_absorption_fraction_matches_saebench():
    calc_mod = pytest.importorskip("sae_bench.evals.absorption.feature_absorption_calculator")
    rng = np.random.default_rng(3)
    d, F, n = 6, 12, 10
    acts = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    w_dec = torch.tensor(rng.normal(size=(F, d)), dtype=torch.float32)
    w_enc = w_dec.T.clone()
    probe = torch.tensor(rng.normal(size=d), dtype=torch.float32)
    hook = "blocks.0.hook_resid_post"

    class FakeModel:
        tokenizer = None

        def run_with_cache(self, prompts, names_filter):
            idx = [int(p.split("w")[-1].split(":")[0]) for p in prompts]
            return None, {hook: torch.stack([acts[i] for i in idx])[:, None, :].repeat(1, 2, 1)}

        def to_tokens(self, text):
            return torch.zeros(1, 2)

    sae = SimpleNamespace(W_dec=w_dec, device="cpu", encode=lambda x: torch.relu(x @ w_enc - 0.3))
    calc = calc_mod.FeatureAbsorptionCalculator(FakeModel(), icl_word_list=[], max_icl_examples=0, word_token_pos=0)
    main = [0, 1]
    res = calc.calculate_absorption(sae, [f"w{i}" for i in range(n)], probe, main, layer=0, show_progress=False)
    unit = probe / probe.norm()
    cos = torch.nn.functional.cosine_similarity(unit, w_dec, dim=-1).numpy()
    for i, r in enumerate(res.word_results):
        z = sae.encode(acts[i : i + 1])[0].numpy()
        proj = float(acts[i] @ unit)
        assert B.absorption_fraction(z, proj, cos, main) == pytest.approx(r.absorption_fraction, abs=1e-5)
        assert B.is_full_absorption(z, proj, cos, main) == r.is_full_absorption
