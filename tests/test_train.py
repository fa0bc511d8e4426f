import dataclasses

import pytest
import torch
from sae_lens import SAE

from sae_studies import activations as A
from sae_studies import train
from sae_studies.analyses import quality


@pytest.fixture(scope="module")
def acts(micro_run):
    hook = A.hook_name(1)
    return micro_run.activations([hook])[hook], micro_run.activations([hook], split="val")[hook]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_topk_family_trains_saves_and_loads(micro_run, acts, architecture, fast):
    train_acts, eval_acts = acts
    cfg = dataclasses.replace(micro_run.profile.sae, fast=fast, train_tokens=32768)
    spec = train.SAESpec(architecture, 4 * train_acts.d, k=8)
    sae, art = train.train_sae(train_acts, spec, cfg, micro_run.store, batch_size=512)
    assert (art.path / "cfg.json").exists() and (art.path / "sae_weights.safetensors").exists()
    again = SAE.load_from_disk(str(art.path))
    x = eval_acts.tensor(256)
    assert torch.allclose(sae.decode(sae.encode(x)), again.decode(again.encode(x)))
    report = quality.sae_reconstruction_metrics(sae, eval_acts.tensor())
    assert report.explained_variance > 0.2  # far better than predicting the mean
    if architecture == "topk":
        assert report.l0 <= 8


@pytest.mark.parametrize(
    "architecture, extra", [("standard", ()), ("jumprelu", ()), ("matryoshka_batchtopk", (("matryoshka_widths", [32, 128]),))]
)
def test_other_builtins_train(micro_run, acts, architecture, extra):
    train_acts, eval_acts = acts
    spec = train.SAESpec(architecture, 4 * train_acts.d, k=8 if "topk" in architecture else None, extra=extra)
    sae, _ = train.train_sae(train_acts, spec, micro_run.profile.sae, micro_run.store, batch_size=512)
    assert sae.cfg.d_sae == 4 * train_acts.d
    assert quality.sae_reconstruction_metrics(sae, eval_acts.tensor()).explained_variance > 0


def test_seed_changes_only_the_sae(micro_run, acts):
    train_acts, _ = acts
    spec = train.SAESpec("topk", 64, k=4)
    a, b = train.train_seeds(train_acts, spec, [0, 1], micro_run.profile.sae, micro_run.store, batch_size=512)
    a2, _ = train.train_sae(train_acts, spec, micro_run.profile.sae, micro_run.store, batch_size=512)
    assert torch.equal(a.W_dec, a2.W_dec)  # cached, same seed
    assert not torch.allclose(a.W_dec, b.W_dec)
    fresh = train.build_training_sae(spec, train_acts.d, micro_run.profile.sae, 10)
    assert torch.equal(fresh.W_enc, train.build_training_sae(spec, train_acts.d, micro_run.profile.sae, 10).W_enc)


def test_bad_specs_fail_early(micro_run, acts):
    with pytest.raises(ValueError, match="unknown SAE architecture 'topkk'.*topk"):
        train.SAESpec("topkk", 64, k=4)
    with pytest.raises(ValueError, match="needs k"):
        train.SAESpec("topk", 64)
    with pytest.raises(ValueError, match="does not divide"):
        train.train_sae(acts[0], train.SAESpec("topk", 64, k=4), micro_run.profile.sae, micro_run.store, batch_size=1000)
    with pytest.raises(ValueError, match="unknown config field"):
        train.build_training_sae(train.SAESpec("topk", 64, k=4, extra=(("nope", 1),)), 32, micro_run.profile.sae, 10)
    with pytest.raises(ValueError, match="distinct"):
        train.train_seeds(acts[0], train.SAESpec("topk", 64, k=4), [1, 1], micro_run.profile.sae, micro_run.store)


@pytest.mark.parametrize("fast", [True, False])
def test_batchtopk_threshold_is_bias_corrected(micro_run, acts, fast):
    """Known answer: the saved JumpReLU threshold is SAELens' EMA / (1 − 0.99^steps), and with
    it the inference L0 lands nearer k than with the raw EMA (micro run: 32 steps, EMA at 28 %)."""
    train_acts, eval_acts = acts
    base = dataclasses.replace(micro_run.profile.sae, fast=fast, train_tokens=16384)
    spec = train.SAESpec("batchtopk", 4 * train_acts.d, k=8)
    raw, raw_art = train.train_sae(
        train_acts, spec, dataclasses.replace(base, debias_batchtopk_threshold=False), micro_run.store, batch_size=512
    )
    fixed, fixed_art = train.train_sae(train_acts, spec, base, micro_run.store, batch_size=512)
    assert raw_art.key != fixed_art.key
    torch.testing.assert_close(fixed.threshold, raw.threshold / (1 - 0.99**32), rtol=1e-5, atol=0)
    torch.testing.assert_close(fixed.W_enc, raw.W_enc)  # the correction touches nothing else
    x = eval_acts.tensor()
    l0_raw, l0_fixed = (quality.sae_reconstruction_metrics(s, x).l0 for s in (raw, fixed))
    assert abs(l0_fixed - 8) < abs(l0_raw - 8)


def test_threshold_correction_leaves_other_architectures_cache_keys_alone(acts, micro_run):
    train_acts, _ = acts
    cfg = micro_run.profile.sae
    off = dataclasses.replace(cfg, debias_batchtopk_threshold=False)
    topk = train.SAESpec("topk", 64, k=4)
    assert train.artifact_params(topk, train_acts, cfg, 512) == train.artifact_params(topk, train_acts, off, 512)
    bt = train.SAESpec("batchtopk", 64, k=4)
    assert train.artifact_params(bt, train_acts, cfg, 512) != train.artifact_params(bt, train_acts, off, 512)
    with pytest.raises(ValueError, match="n_updates"):
        train.debias_topk_threshold(None, 0)


def test_init_frozen_and_key_extra(micro_run, acts):
    """train_sae starts from given parameters, keeps frozen ones' directions, and keys the cache
    by where the start came from."""
    train_acts, _ = acts
    cfg = dataclasses.replace(micro_run.profile.sae, train_tokens=2048)
    spec = train.SAESpec("topk", 64, k=4, seed=3)
    w = torch.nn.functional.normalize(torch.randn(64, train_acts.d), dim=1)
    sae, art = train.train_sae(
        train_acts, spec, cfg, micro_run.store, 512, init={"W_dec": w}, frozen=("W_dec",), key_extra={"start": "unit test"}
    )
    assert torch.nn.functional.cosine_similarity(sae.W_dec, w, dim=1).min() > 0.9999
    assert art.params["start"] == "unit test"
    plain = train.train_sae(train_acts, spec, cfg, micro_run.store, 512)[1]
    assert plain.key != art.key
    with pytest.raises(ValueError, match="unknown parameters"):
        train.train_sae(train_acts, spec, cfg, micro_run.store, 512, frozen=("W_nope",), key_extra={"x": 1})
    with pytest.raises(ValueError, match="must not replace"):
        train.train_sae(train_acts, spec, cfg, micro_run.store, 512, key_extra={"spec": 1})
