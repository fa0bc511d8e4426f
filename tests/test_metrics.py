import pytest
import torch

from sae_studies import metrics


def test_explained_variance_known_answers():
    x = torch.randn(1000, 8) + 5.0  # a large mean: variance is about the mean, not about zero
    assert metrics.explained_variance(x, x) == pytest.approx(1.0)
    assert metrics.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-9)
    assert metrics.explained_variance(x, torch.zeros_like(x)) < -10
    noisy = x + 0.5 * torch.randn_like(x)
    assert metrics.explained_variance(x, noisy) == pytest.approx(1 - 0.25, abs=0.03)


def test_streamed_equals_one_shot():
    x, x_hat = torch.randn(999, 6) * 3 + 1, torch.randn(999, 6)
    acc = metrics.VarianceAccumulator()
    for a, b in zip(x.split(100), x_hat.split(100)):
        acc.update(a, b)
    assert acc.explained_variance == pytest.approx(metrics.explained_variance(x, x_hat), rel=1e-12)


def test_reconstruction_metrics_count_l0_and_dead():
    W = torch.eye(4)[:3]  # latent 3 never fires

    def encode(x):
        return torch.relu(x @ W.T)

    def decode(z):
        return z @ W

    x = torch.relu(torch.randn(512, 4))
    x[:, 3] = 0
    report = metrics.reconstruction_metrics(encode, decode, x.split(128), d_sae=3)
    assert report.explained_variance == pytest.approx(1.0)
    assert report.l0 == pytest.approx((x[:, :3] > 0).float().sum(1).mean().item())
    assert report.dead_fraction == 0 and report.density.shape == (3,)


def test_identity_splice_recovers_everything(micro_run):
    contexts = micro_run.eval_contexts(1024)
    report = metrics.spliced_metrics(micro_run.model, "blocks.1.hook_resid_post", lambda a: a, contexts)
    assert report.ce_sae == pytest.approx(report.ce_clean, rel=1e-6)
    assert report.kl == pytest.approx(0.0, abs=1e-6)
    assert report.loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert report.ce_zero > report.ce_clean
