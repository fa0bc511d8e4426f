"""Study 1: per-feature metrics (ablations, top activations, explanations), the grid helpers and
the pooled-SAE refit, on tiny SAEs and the micro pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sae_studies import activations, train
from sae_studies.analyses import features, pooling, quality
from sae_studies.studies import stability
from sae_studies.study_config import Study01Config

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def tiny(micro_run):
    hook = activations.hook_name(1)
    acts = micro_run.activations([hook])[hook]
    cfg = dataclasses.replace(micro_run.profile.sae, train_tokens=4096)
    spec = train.SAESpec("topk", 4 * acts.d, 4)
    saes = train.train_seeds(acts, spec, [0, 1], cfg, micro_run.store, 512)
    return micro_run, hook, acts, cfg, spec, saes


# ------------------------------------------------------------------ per-feature metrics


def test_feature_contributions_reproduce_decode(tiny):
    _, _, acts, _, _, saes = tiny
    sae = saes[0]
    x = acts.tensor(256)
    z = sae.encode(x)
    u = features.feature_contributions(sae)
    zero = sae.decode(torch.zeros(1, sae.cfg.d_sae))
    torch.testing.assert_close(zero + z @ u, sae.decode(z), rtol=1e-4, atol=1e-4)


def test_marginal_fvu_equals_brute_force(tiny):
    _, _, acts, _, _, saes = tiny
    sae = saes[0]
    x = acts.tensor(512)
    fast = features.marginal_fvu(sae, x, batch_size=200)
    base = features.ablation_explained_variance(sae, x, {})["none"]
    for i in [0, 3, 7, int(np.argmax(fast))]:
        m = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
        m[i] = True
        ev = features.ablation_explained_variance(sae, x, {"one": m})["one"]
        assert fast[i] == pytest.approx(base - ev, rel=1e-4, abs=1e-9)


def test_ablating_everything_and_nothing(tiny):
    _, _, acts, _, _, saes = tiny
    sae = saes[0]
    x = acts.tensor(512)
    f = sae.cfg.d_sae
    evs = features.ablation_explained_variance(
        sae, x, {"all": torch.ones(f, dtype=torch.bool), "none2": torch.zeros(f, dtype=torch.bool)}
    )
    assert evs["none"] == pytest.approx(quality.sae_reconstruction_metrics(sae, x).explained_variance, abs=1e-9)
    assert evs["none2"] == pytest.approx(evs["none"], abs=1e-12)
    # only the decoder bias is left
    b = sae.decode(torch.zeros(1, f)).expand_as(x)
    assert evs["all"] == pytest.approx(quality.explained_variance(x, b), abs=1e-6)
    with pytest.raises(ValueError, match="boolean mask"):
        features.ablation_explained_variance(sae, x, {"bad": torch.ones(f)})


def test_ablation_ce_without_masks_is_the_plain_splice(tiny):
    run, hook, _, _, _, saes = tiny
    sae = saes[0]
    splicer = quality.Splicer(run.model, hook, run.eval_contexts(1024))
    ref = splicer.report(lambda a: sae.decode(sae.encode(a)))
    ce = features.ablation_ce(splicer, sae, {})
    assert ce["clean"] == pytest.approx(ref.ce_clean, rel=1e-9)
    assert ce["sae"] == pytest.approx(ref.ce_sae, rel=1e-9)


def test_marginal_ce_matches_ablation_ce(tiny):
    run, hook, _, _, _, saes = tiny
    sae = saes[0]
    splicer = quality.Splicer(run.model, hook, run.eval_contexts(1024))
    feats = np.array([1, 5])
    mc = features.marginal_ce(splicer, sae, feats)
    m = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    m[5] = True
    ce = features.ablation_ce(splicer, sae, {"f5": m})
    assert mc.set_index("feature").loc[5, "delta_ce"] == pytest.approx(ce["f5"] - ce["sae"], rel=1e-3, abs=1e-7)
    assert (mc.firings >= 0).all()


def test_top_activations_against_dense(tiny):
    _, _, acts, _, _, saes = tiny
    sae = saes[0]
    x = acts.tensor(700)
    top = features.top_activations(sae, x, 5, batch_size=128)
    z = sae.encode(x)
    np.testing.assert_allclose(top.density, (z != 0).double().mean(0).numpy(), atol=1e-12)
    ref_v, _ = z.topk(5, dim=0)
    torch.testing.assert_close(top.values, ref_v.T.clamp_min(0))
    live = top.rows >= 0
    got = z[top.rows.clamp_min(0), torch.arange(z.shape[1])[:, None].expand_as(top.rows)]
    torch.testing.assert_close(got[live], top.values[live])
    with pytest.raises(ValueError, match="n"):
        features.top_activations(sae, x, 0)


def test_top_token_entropy_of_any_code_known_answers():
    """top_activations takes any encoder (here the identity on precomputed codes)."""
    tokens = np.array([7, 7, 7, 7, 1, 2, 3, 4])
    codes = torch.zeros(8, 3)
    codes[:4, 0] = torch.tensor([4.0, 3.0, 2.0, 1.0])  # always token 7 → entropy 0
    codes[4:, 1] = torch.tensor([4.0, 3.0, 2.0, 1.0])  # four distinct tokens → 2 bits
    codes[0, 2] = 1.0  # fires once: fewer than n_top firings → no statistic
    top = features.top_activations(lambda z: z, codes, n=4, batch_size=3)
    ent = features.surface_statistics(top, tokens, n_ctx=8, min_firings=4).token_entropy.to_numpy()
    assert ent[0] == pytest.approx(0.0) and ent[1] == pytest.approx(2.0) and np.isnan(ent[2])
    assert top.density == pytest.approx([0.5, 0.5, 0.125])


def test_surface_statistics_and_explanation_known_answer():
    # 2 latents, rows into a token stream with n_ctx = 4
    tokens = np.array([5, 7, 7, 9, 5, 7, 1, 7])
    rows = torch.tensor([[1, 2, 5, 7], [0, 3, 6, -1]])
    top = features.TopActivations(density=np.array([0.5, 0.375]), values=(rows >= 0).float(), rows=rows, n_tokens=8)
    st = features.surface_statistics(top, tokens, n_ctx=4, min_firings=3)
    assert st.loc[0, "single_token_share"] == 1.0 and st.loc[0, "token_entropy"] == 0.0 and st.loc[0, "top_token"] == 7
    assert st.loc[1, "n_top"] == 3 and st.loc[1, "token_entropy"] == pytest.approx(np.log2(3))
    # bigrams of latent 0: rows 1 (5,7), 2 (7,7), 5 (5,7), 7 (1,7): (5,7) twice of 4
    assert st.loc[0, "bigram_share"] == 0.5
    st2 = features.surface_statistics(top, tokens, n_ctx=4, min_firings=4)
    assert np.isnan(st2.loc[1, "token_entropy"])
    e = features.explain_feature(rows[0].numpy(), tokens, 4, lambda t: f"<{t}>")
    assert e["tokens"][0] == ("<7>", 1.0)
    assert e["ngrams"][0] == ("<5><7>", 0.5)
    assert "<7>" in e["text"]
    assert features.ngram_at(tokens, 4, 2, 4) is None  # crosses a context start
    assert features.explain_feature(np.array([-1]), tokens, 4, str)["text"] == "(never fires)"


# ------------------------------------------------------------------ grid helpers


def test_grid_and_specs():
    cfg = Study01Config(
        layers=(1, 3),
        architectures=("topk", "standard", "matryoshka_batchtopk"),
        expansion_factors=(4, 8, 16),
        reduced_architectures=("standard", "matryoshka_batchtopk"),
        reduced_expansion_factors=(8,),
    )
    grid = stability.grid(cfg)
    assert len(grid) == 2 * (3 + 1 + 1)
    spec = stability.cell_spec(stability.GridCell(1, "matryoshka_batchtopk", 8), 128, 32, cfg)
    assert dict(spec.extra)["matryoshka_widths"] == [128, 256, 512, 1024]
    assert stability.cell_spec(stability.GridCell(1, "standard", 4), 128, 32, cfg).k is None
    full = dataclasses.replace(cfg, reduced_architectures=())
    assert len(stability.grid(full)) == 2 * 3 * 3


@pytest.mark.parametrize(
    "change,match",
    [
        ({"seeds": (0,)}, "at least 2 distinct seeds"),
        ({"seeds": (1, 1)}, "at least 2 distinct seeds"),
        ({"tau": 0.0}, r"tau must be a number in \(0, 1\]"),
        ({"tau": 1.5}, r"tau must be a number in \(0, 1\]"),
        ({"tau_sweep": (0.5, 1.2)}, "tau_sweep"),
        ({"architectures": ("topk", "nope")}, "unknown"),
        ({"layers": (7,)}, "layers"),
        ({"analysis_expansion_factor": 32}, "analysis_expansion_factor"),
        ({"pool_seeds": (0, 1, 2)}, "2 × group_size"),
        ({"matryoshka_prefixes": (0.5, 0.25)}, "matryoshka_prefixes"),
        ({"n_random_ablations": 0}, "n_random_ablations"),
    ],
)
def test_check_study01_bad_input(change, match):
    with pytest.raises(ValueError, match=match):
        stability.check(dataclasses.replace(Study01Config(), **change), n_layers=4)


def test_check_study01_default_is_valid():
    stability.check(Study01Config(), n_layers=4)


# ------------------------------------------------------------------ pooled SAE


def test_fit_pooled_sae_keeps_directions_and_caches(tiny):
    run, _, acts, cfg, spec, saes = tiny
    pooled = pooling.pool_decoders([s.W_dec for s in saes], 0.5, size=spec.d_sae)
    assert len(pooled) == spec.d_sae
    sae, art = pooling.refit_pooled_sae(
        acts, pooled.directions, spec.with_seed(7), cfg, run.store, sources=["a", "b"], tau=0.5, train_tokens=2048, batch_size=512
    )
    cos = torch.nn.functional.cosine_similarity(sae.W_dec, pooled.directions.float(), dim=1)
    assert cos.min() > 0.9999
    assert art.params["pooled"]["refit"] == pooling.POOLED_REFIT
    assert art.manifest["summary"]["frozen_min_row_cosine"]["W_dec"] > 0.9999
    again, art2 = pooling.refit_pooled_sae(
        acts, pooled.directions, spec.with_seed(7), cfg, run.store, sources=["a", "b"], tau=0.5, train_tokens=2048, batch_size=512
    )
    assert art2.key == art.key
    with pytest.raises(ValueError, match="directions must be"):
        pooling.refit_pooled_sae(
            acts, pooled.directions[:-1], spec, cfg, run.store, sources=[], tau=0.5, train_tokens=2048, batch_size=512
        )
    with pytest.raises(ValueError, match="tau"):
        pooling.refit_pooled_sae(
            acts, pooled.directions, spec, cfg, run.store, sources=[], tau=0.0, train_tokens=2048, batch_size=512
        )


def test_pooled_encoder_init_averages_members(tiny):
    _, _, acts, cfg, spec, saes = tiny
    pooled = pooling.pool_decoders([s.W_dec for s in saes], 0.3, size=spec.d_sae)
    w, b = pooling.pooled_encoder_init(pooled, saes)
    assert w.shape == (spec.d_sae, acts.d) and b.shape == (spec.d_sae,)
    k = next(i for i, m in enumerate(pooled.members) if len(m) >= 2)
    m = pooled.members[k]
    ref = torch.stack([saes[int(s)].W_enc[:, int(i)] for s, i in m]).mean(0)
    torch.testing.assert_close(w[k], ref.detach())
    # a one-seed "pool" of an SAE's own dictionary reproduces its encoder, and the refit starts there
    own = pooling.PooledDictionary(
        directions=saes[0].W_dec.detach(),
        support=torch.ones(spec.d_sae, dtype=torch.long),
        members=[torch.tensor([[0, i]]) for i in range(spec.d_sae)],
        score=torch.zeros(spec.d_sae),
        tau=1.0,
    )
    w0, b0 = pooling.pooled_encoder_init(own, saes[:1])
    torch.testing.assert_close(w0, saes[0].W_enc.detach().T)
    with pytest.raises(ValueError, match="only 1 saes"):
        pooling.pooled_encoder_init(pooled, saes[:1])
    with pytest.raises(ValueError, match="PooledDictionary"):
        pooling.pooled_encoder_init(w, saes)


def test_refit_with_zero_learning_rate_reproduces_the_source_sae(tiny):
    run, _, acts, cfg, spec, saes = tiny
    a = saes[0]
    frozen = dataclasses.replace(cfg, lr=1e-12)
    b, _ = pooling.refit_pooled_sae(
        acts,
        a.W_dec.detach(),
        spec.with_seed(11),
        frozen,
        run.store,
        sources=["self"],
        tau=0.7,
        train_tokens=512,
        batch_size=512,
        encoder_init=(a.W_enc.detach().T, a.b_enc.detach()),
    )
    x = acts.tensor(1024)
    za, zb = a.encode(x), b.encode(x)
    assert ((za != 0) == (zb != 0)).float().mean() > 0.97
    assert (zb.sum() / za.sum()).item() == pytest.approx(1.0, abs=0.05)
