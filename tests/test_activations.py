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
