import pytest
import torch

from sae_studies.analyses import quality


def test_explained_variance_known_answers():
    x = torch.randn(1000, 8) + 5.0  # a large mean: variance is about the mean, not about zero
    assert quality.explained_variance(x, x) == pytest.approx(1.0)
    assert quality.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-9)
    assert quality.explained_variance(x, torch.zeros_like(x)) < -10
    noisy = x + 0.5 * torch.randn_like(x)
    assert quality.explained_variance(x, noisy) == pytest.approx(1 - 0.25, abs=0.03)


def test_streamed_equals_one_shot():
    x, x_hat = torch.randn(999, 6) * 3 + 1, torch.randn(999, 6)
    acc = quality.VarianceAccumulator()
    for a, b in zip(x.split(100), x_hat.split(100)):
        acc.update(a, b)
    assert acc.explained_variance == pytest.approx(quality.explained_variance(x, x_hat), rel=1e-12)


def test_reconstruction_metrics_count_l0_and_dead():
    W = torch.eye(4)[:3]  # latent 3 never fires

    def encode(x):
        return torch.relu(x @ W.T)

    def decode(z):
        return z @ W

    x = torch.relu(torch.randn(512, 4))
    x[:, 3] = 0
    report = quality.reconstruction_metrics(encode, decode, x.split(128), d_sae=3)
    assert report.explained_variance == pytest.approx(1.0)
    assert report.l0 == pytest.approx((x[:, :3] > 0).float().sum(1).mean().item())
    assert report.dead_fraction == 0 and report.density.shape == (3,)


def test_identity_splice_recovers_everything_and_caches(micro_run):
    splicer = quality.Splicer(micro_run.model, "blocks.1.hook_resid_post", micro_run.eval_contexts(1024))
    report = splicer.report(lambda a: a)
    assert report.ce_sae == pytest.approx(report.ce_clean, rel=1e-6)
    assert report.kl == pytest.approx(0.0, abs=1e-6)
    assert report.loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert report.ce_zero > report.ce_clean
    # a second question reuses the cached clean CE and residual stream and gives the same numbers
    again = splicer.ce(lambda a: {"id": a, "half": 0.5 * a})
    assert again["clean"] == report.ce_clean
    assert again["id"] == pytest.approx(report.ce_sae, rel=1e-12)
    assert again["half"] > again["clean"]


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"])
def test_cached_clean_log_probs_give_the_same_numbers_with_fewer_forwards(micro_run, hook, monkeypatch):
    """A splicer that caches the clean log-probabilities reports exactly what one that recomputes
    them (logp_cache_mib=0) reports; after the first report, a residual-stream splicer runs one LM
    forward per batch, not two (other hooks get the clean logits with the clean activation)."""
    contexts = micro_run.eval_contexts(1024)
    cached = quality.Splicer(micro_run.model, hook, contexts, batch_size=4)
    uncached = quality.Splicer(micro_run.model, hook, contexts, batch_size=4, logp_cache_mib=0)
    for scale in (0.9, 0.5):
        assert cached.report(lambda a, s=scale: s * a) == uncached.report(lambda a, s=scale: s * a)
    n_batches = -(-len(contexts) // 4)
    calls = []
    for splicer in (cached, uncached):
        forwards = 0

        def count(*args, splicer=splicer, **kwargs):
            nonlocal forwards
            forwards += 1
            return type(splicer)._logits(splicer, *args, **kwargs)

        monkeypatch.setattr(splicer, "_logits", count)
        splicer.report(lambda a: 0.7 * a)
        calls.append(forwards)
    assert calls == ([n_batches, 2 * n_batches] if "resid" in hook else [n_batches, n_batches])


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"])
def test_splicer_matches_a_hooked_forward_pass(micro_run, hook):
    """Known answer: CE and KL from the splicer equal those of run_with_hooks on the whole set."""
    model = micro_run.model
    contexts = micro_run.eval_contexts(1024)
    splicer = quality.Splicer(model, hook, contexts, batch_size=3)  # batches that do not divide n
    out = splicer.ce(lambda a: {"scaled": 0.7 * a}, kl=("scaled",))
    tokens = torch.as_tensor(contexts, dtype=torch.long)
    with torch.no_grad():
        clean = model(tokens)
        scaled = model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda a, hook: 0.7 * a)])
    target = tokens[:, 1:].reshape(-1)

    def ce(logits):
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), target).item()

    logp, logq = clean[:, :-1].double().log_softmax(-1), scaled[:, :-1].double().log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    assert out["clean"] == pytest.approx(ce(clean), rel=1e-5)
    assert out["scaled"] == pytest.approx(ce(scaled), rel=1e-5)
    assert out["kl:scaled"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda a, hook: torch.zeros_like(a))])
    assert splicer.ce_zero == pytest.approx(ce(zeroed), rel=1e-5)


def test_splicer_names_a_bad_hook(micro_run):
    with pytest.raises(ValueError, match=r"blocks\.1\.hook_resid_pots.*blocks\.0\.hook_resid_post"):
        quality.Splicer(micro_run.model, "blocks.1.hook_resid_pots", micro_run.eval_contexts(1024))
    with pytest.raises(ValueError, match=r"n ≥ 1"):  # e.g. an eval budget below one context window
        quality.Splicer(micro_run.model, "blocks.1.hook_resid_post", micro_run.eval_contexts(1024)[:0])


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"])
def test_splicer_keeps_the_first_positions_clean(micro_run, hook):
    """keep_first: replacements see only the later positions; the kept ones stay clean."""
    model = micro_run.model
    contexts = micro_run.eval_contexts(1024)[:4]
    splicer = quality.Splicer(model, hook, contexts, keep_first=1)
    seen = []
    out = splicer.ce(lambda a: seen.append(a.shape[0]) or {"zero": torch.zeros_like(a)})
    assert seen == [4 * (contexts.shape[1] - 1)]

    def zero_after_first(a, hook):
        a = a.clone()
        a[:, 1:] = 0
        return a

    with torch.no_grad():
        logits = model.run_with_hooks(torch.as_tensor(contexts, dtype=torch.long), fwd_hooks=[(hook, zero_after_first)])
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).double(), torch.as_tensor(contexts[:, 1:], dtype=torch.long).reshape(-1)
    ).item()
    assert out["zero"] == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="keep_first"):
        quality.Splicer(model, hook, contexts, keep_first=contexts.shape[1])
