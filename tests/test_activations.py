import numpy as np
import pytest
import torch

from sae_studies import activations as A


def test_harvest_matches_run_with_cache(micro_run):
    hooks = [A.hook_name(1), A.hook_name(2, "mlp"), A.hook_name(0, "attn"), "blocks.1.mlp.hook_post"]
    sets = micro_run.activations(hooks, split="val")
    windows = micro_run.loaded.streams["val"].contexts(micro_run.model.cfg.n_ctx)[:3]
    _, cache = micro_run.model.run_with_cache(torch.as_tensor(windows, dtype=torch.long))
    for h in hooks:
        ref = cache[h].reshape(-1, cache[h].shape[-1])
        assert torch.allclose(sets[h].tensor(len(ref)), ref, atol=1e-5), h
    assert sets["blocks.1.mlp.hook_post"].d == micro_run.profile.lm.d_mlp
    assert np.array_equal(sets[hooks[0]].tokens[: windows.size], windows.reshape(-1))


def test_several_hooks_cost_one_forward_pass(micro_run, monkeypatch):
    calls = []
    model = micro_run.model
    original = model.run_with_hooks
    monkeypatch.setattr(model, "run_with_hooks", lambda *a, **k: calls.append(1) or original(*a, **k))
    hooks = [A.hook_name(layer, kind) for layer in (0, 3) for kind in ("resid", "attn")]
    A.harvest(micro_run.loaded, hooks, 2048, micro_run.store, split="val", batch_size=32)
    assert len(calls) == 1  # 2048 tokens = 32 windows of 64 = one batch, all four hooks


def test_bad_hook_and_budget_fail_before_work(micro_run):
    with pytest.raises(ValueError, match=r"blocks.9.hook_resid_post.*valid names"):
        A.harvest(micro_run.loaded, ["blocks.9.hook_resid_post"], 1024, micro_run.store)
    with pytest.raises(ValueError, match="at most the"):
        A.harvest(micro_run.loaded, [A.hook_name(0)], 10**9 // 64 * 64, micro_run.store)
    with pytest.raises(ValueError, match="multiple of n_ctx"):
        A.harvest(micro_run.loaded, [A.hook_name(0)], 1000, micro_run.store)
    with pytest.raises(ValueError, match="unknown hook kind"):
        A.hook_name(0, "mlpout")


def test_batches_shuffle_and_cover_every_row_once_per_pass(micro_run):
    acts = micro_run.activations([A.hook_name(1)], split="val")[A.hook_name(1)]
    n = len(acts)
    batches = list(acts.batches(512, seed=3, epochs=1))
    assert len(batches) == n // 512 and all(b.shape == (512, acts.d) for b in batches)
    seen = torch.cat(batches)
    full = acts.tensor()
    assert torch.equal(torch.sort(seen[:, 0]).values, torch.sort(full[:, 0]).values)
    assert not torch.equal(batches[0], full[:512])  # shuffled
    assert torch.equal(next(acts.batches(512, seed=3)), batches[0])  # seeded
    with pytest.raises(ValueError, match="does not divide"):
        acts.batches(1000)


def test_interrupted_harvest_leaves_no_trusted_artifact(micro_run, monkeypatch):
    hook = A.hook_name(2, "attn")
    model = micro_run.model
    original, calls = model.run_with_hooks, []

    def interrupt_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_hooks", interrupt_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        A.harvest(micro_run.loaded, [hook], 4096, micro_run.store, split="val", batch_size=16)
    root = micro_run.store.root / "activations"
    assert not list(root.glob(".tmp-*"))
    monkeypatch.setattr(model, "run_with_hooks", original)
    acts = A.harvest(micro_run.loaded, [hook], 4096, micro_run.store, split="val", batch_size=16)[hook]
    assert np.isfinite(acts.acts).all() and np.abs(acts.acts[-64:]).sum() > 0  # fully written


def test_a_bos_model_gets_bos_in_front_and_stores_only_stream_positions(micro_run, tmp_path):
    """A model that needs a BOS (SmolLM2) sees it at the start of every window; harvest runs it
    but stores only the stream tokens, and its cache key differs from the plain harvest's."""
    import dataclasses

    from sae_studies.store import Store

    loaded = dataclasses.replace(micro_run.loaded, bos_token_id=0, window=32)
    ctx = loaded.contexts("val", 32 * 3)
    assert ctx.shape == (3, 33) and (ctx[:, 0] == 0).all()
    assert np.array_equal(ctx[:, 1:].reshape(-1), loaded.streams["val"].tokens[:96])
    hook = A.hook_name(1)
    got = A.harvest(loaded, [hook], 32 * 4, Store(tmp_path), split="val")[hook]
    _, cache = micro_run.model.run_with_cache(torch.as_tensor(loaded.contexts("val", 32 * 4), dtype=torch.long))
    ref = cache[hook][:, 1:].reshape(-1, cache[hook].shape[-1])
    assert len(got) == 128 and torch.allclose(got.tensor(), ref, atol=1e-5)
    assert np.array_equal(got.tokens, loaded.streams["val"].tokens[:128]) and got.n_ctx == 32
    assert got.artifact.params["bos"] == 0
    plain = dataclasses.replace(loaded, bos_token_id=None)
    assert A.harvest(plain, [hook], 32 * 4, Store(tmp_path), split="val")[hook].key != got.key
    with pytest.raises(ValueError, match="unknown split"):
        loaded.contexts("test")


def test_parse_hook():
    assert A.parse_hook("blocks.3.hook_mlp_out") == (3, "mlp")
    assert A.parse_hook("blocks.0.hook_resid_post") == (0, "resid")
    assert A.parse_hook("blocks.1.mlp.hook_post") == (1, None)
    assert A.parse_hook("hook_embed") == (None, None)
