"""Steering plans and hooks, the batched seeded sampler, and the offline scorers (analyses.steering)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_studies import train
from sae_studies.analyses import steering
from sae_studies.saes import registry

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def llama_like():
    """A tiny random Llama-shaped model (rotary, RMS norm, gated MLP, grouped KV heads) like SmolLM2."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        n_key_value_heads=2,
        d_mlp=64,
        n_ctx=64,
        d_vocab=50,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        rotary_dim=8,
        final_rms=True,
        seed=0,
        default_prepend_bos=False,
    )
    return HookedTransformer(cfg).eval()


# ------------------------------------------------------------------ schedules and plans


def test_layer_strengths_known_values():
    assert steering.layer_strengths([1, 2, 3], 2.0, "constant") == {1: 2.0, 2: 2.0, 3: 2.0}
    exp = steering.layer_strengths([0, 1, 2, 3], 2.0, "exponential", seed_layer=2, alpha=-0.05)
    assert exp[2] == 2.0 and exp[3] == pytest.approx(2 * math.exp(-0.05)) and exp[0] == pytest.approx(2 * math.exp(0.1))
    lin = steering.layer_strengths([0, 1, 2], 4.0, "linear", linear_end=0.25)
    assert lin == pytest.approx({0: 4.0, 1: 2.5, 2: 1.0})
    assert steering.layer_strengths([2], 3.0, "linear") == {2: 3.0}
    with pytest.raises(ValueError, match=r"schedule must be one of \['constant', 'exponential', 'linear'\]; got 'cosine'"):
        steering.layer_strengths([0], 1.0, "cosine")


def test_add_plan_adds_the_vector_at_every_token(micro_run):
    model = micro_run.model
    d = model.cfg.d_model
    w = torch.randn(5, d)
    plan = steering.add_plan({1: 3}, {1: w}, {1: 2.0}, {1: 0.5})
    expected = 0.5 * 2.0 * w[3] / w[3].norm()
    torch.testing.assert_close(plan.coefficients[1] * plan.directions[1], expected)
    tokens = torch.as_tensor(micro_run.eval_contexts(256)[:2, :10])
    _, clean = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
    with model.hooks(fwd_hooks=plan.hooks()):
        _, steered = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
    torch.testing.assert_close(
        steered["blocks.1.hook_resid_post"] - clean["blocks.1.hook_resid_post"], expected.expand(2, 10, d), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"feature at layer 1 must be an integer in 0..4"):
        steering.add_plan({1: 7}, {1: w}, {1: 2.0}, {1: 0.5})


def test_batch_hooks_apply_each_plan_to_its_row(micro_run):
    model = micro_run.model
    d = model.cfg.d_model
    w = torch.randn(4, d)
    plans = [steering.add_plan({0: 1}, {0: w}, {0: 1.0}, {0: 2.0}), None, steering.add_plan({2: 2}, {2: w}, {2: 1.0}, {2: -1.0})]
    tokens = torch.as_tensor(micro_run.eval_contexts(256)[:3, :8])
    clean = model(tokens)
    with model.hooks(fwd_hooks=steering.batch_hooks(plans)):
        mixed = model(tokens)
    for i, plan in enumerate(plans):
        with model.hooks(fwd_hooks=plan.hooks() if plan else []):
            alone = model(tokens[i : i + 1])
        torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[1], clean[1])


def test_removal_subtracts_the_features_contribution(micro_run):
    from sae_studies import activations
    from sae_studies.analyses.features import feature_contributions

    hook = activations.hook_name(1)
    acts = micro_run.activations([hook])[hook]
    cfg = dataclasses.replace(micro_run.profile.sae, train_tokens=4096)
    sae = train.train_sae(acts, registry.get("topk").spec(4 * acts.d, 4), cfg, micro_run.store, 512)[0]
    x = acts.tensor(64)
    f = int((sae.encode(x) > 0).sum(0).argmax())
    plan = steering.SteeringPlan("remove", removals={1: (sae, f)})
    ((name, fn),) = plan.hooks()
    assert name == hook
    out = fn(x[None], None)[0]
    expected = x - sae.encode(x)[:, f : f + 1] * feature_contributions(sae)[f]
    torch.testing.assert_close(out, expected)
    assert (out != x).any()


# ------------------------------------------------------------------ sampling


def test_top_p_filter_known_sets():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    kept = lambda p: torch.isfinite(steering.top_p_filter(logits, p))[0].tolist()
    assert kept(0.4) == [True, False, False]
    assert kept(0.7) == [True, True, False]
    assert kept(0.8) == [True, True, False]
    assert kept(0.81) == [True, True, True]
    assert kept(1.0) == [True, True, True]


def _prompts(run):
    tok = run.loaded.tokenizer
    bos = tok.bos_token_id
    return [[bos] + tok(t, add_special_tokens=False)["input_ids"] for t in ("I think", "There was a young man from", "You")]


@pytest.mark.parametrize("which", ["micro", "llama"])
def test_batched_left_padded_greedy_equals_one_at_a_time(micro_run, llama_like, which):
    if which == "micro":
        model, prompts = micro_run.model, _prompts(micro_run)
    else:
        model, prompts = llama_like, [[1, 5, 7], [1, 9, 9, 3, 4, 8, 2], [1, 3]]
    batched = steering.sample(model, prompts, 8, temperature=0, pad_id=0)
    for p, b in zip(prompts, batched):
        assert steering.sample(model, [p], 8, temperature=0, pad_id=0)[0] == b
        # and a plain full forward, one token at a time (no cache, no padding)
        seq = list(p)
        for _ in range(8):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert seq[len(p) :] == b


def test_sampling_is_seeded_per_row(micro_run):
    model, prompts = micro_run.model, _prompts(micro_run)
    a = steering.sample(model, prompts, 10, temperature=1.0, top_p=0.9, seeds=[5, 6, 7])
    b = steering.sample(model, prompts, 10, temperature=1.0, top_p=0.9, seeds=[5, 6, 7])
    assert a == b
    # a row's draws do not depend on its batch mates
    alone = steering.sample(model, prompts[1:2], 10, temperature=1.0, top_p=0.9, seeds=[6])
    assert alone[0] == a[1]
    c = steering.sample(model, prompts, 10, temperature=1.0, top_p=0.9, seeds=[8, 9, 10])
    assert c != a
    with pytest.raises(ValueError, match="one seed per prompt"):
        steering.sample(model, prompts, 4, temperature=1.0, seeds=[1])


def test_cut_at():
    assert steering.cut_at([4, 5, 0, 6, 0], 0) == [4, 5]
    assert steering.cut_at([4, 5], 0) == [4, 5]
    assert steering.cut_at([0, 1], 0) == []
    assert steering.cut_at([4, 2, 5, 0], [0, 2]) == [4]


# ------------------------------------------------------------------ scorers


def test_repetition_known_values():
    assert steering.repetition([1, 2, 3, 4], 2) == 0.0
    assert steering.repetition([7, 7, 7, 7, 7], 2) == pytest.approx(0.75)  # 4 bigrams, 1 distinct
    assert steering.repetition([1, 2, 1, 2, 1], 2) == pytest.approx(0.5)
    assert steering.repetition([1], 2) == 0.0


def test_fluency_map():
    c = steering.fluency(np.array([2.0, 3.0, 4.0, 6.0, 1.0, np.nan]), real=3.0, shuffled=5.0)
    np.testing.assert_allclose(c[:5], [1.0, 1.0, 0.5, 0.0, 1.0])
    assert np.isnan(c[5])
    with pytest.raises(ValueError, match="must exceed"):
        steering.fluency(np.array([1.0]), real=5.0, shuffled=5.0)


def test_continuation_nll_matches_model_loss(micro_run):
    model = micro_run.model
    seq = micro_run.eval_contexts(256)[0, :20].tolist()
    prompts, conts = [seq[:5], seq[:9]], [seq[5:20], seq[9:12]]
    nll = steering.continuation_nll(model, prompts, conts)
    per_token = model(torch.tensor([seq]), return_type="loss", loss_per_token=True)[0]  # predicts seq[1:]
    assert nll[0] == pytest.approx(float(per_token[4:19].mean()), abs=1e-5)
    assert nll[1] == pytest.approx(float(per_token[8:11].mean()), abs=1e-5)
    assert np.isnan(steering.continuation_nll(model, [seq[:3]], [[]])[0])


def test_coherence_anchors_order(micro_run):
    a = steering.coherence_anchors(micro_run.model, micro_run.eval_contexts(1024)[:4])
    assert a["shuffled"] > a["real"] > 0


def test_theme_classifier_on_toy_texts():
    texts = [
        "captain kirk spock enterprise",
        "spock logic captain",
        "enterprise warp kirk",
        "there once was a man from nantucket",
        "a young lady from niger",
        "there was a man whose limerick",
    ] * 3
    labels = ["startrek"] * 3 + ["limerick"] * 3
    labels = labels * 3
    clf = steering.ThemeClassifier(max_features=500).fit(texts, labels)
    assert clf.classes == ["limerick", "startrek"]
    p = clf.theme_score(["kirk and spock on the enterprise", "there once was a young man"], "startrek")
    assert p[0] > 0.5 > p[1]
    assert clf.report(texts, labels)["accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"theme must be one of \['limerick', 'startrek'\]; got 'zippy'"):
        clf.theme_score(["x"], "zippy")


def test_theme_enrichment_finds_planted_latent():
    g = torch.Generator().manual_seed(0)
    n, f = 3000, 6
    cats = torch.randint(0, 3, (n,), generator=g).numpy()
    cats[:50] = -1  # separators are skipped
    z = torch.rand(n, f, generator=g)
    z[:, 4] = torch.as_tensor(cats == 2, dtype=torch.float32) * 3.0  # fires only on category 2
    d = steering.theme_enrichment(lambda x: x, z, cats, 3, batch_size=700)
    assert d.shape == (3, f) and int(np.argmax(d[2])) == 4
    keep = cats >= 0
    a, c = z[keep, 1].double().numpy(), cats[keep]
    ref = (a[c == 0].mean() - a[c != 0].mean()) / a.std()
    assert d[0, 1] == pytest.approx(ref, rel=1e-9, abs=1e-9)
