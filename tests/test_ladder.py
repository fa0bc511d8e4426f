"""Token-budget ladders (sae_studies.ladder) on small synthetic activations: the plan's cost, resume
after a kill, the schedule, SAELens round-trips, and agreement with an ordinary `train_sae` run."""

import itertools

import numpy as np
import pytest
import torch
from sae_lens import SAE
from sae_lens.training.sae_trainer import SAETrainer

from sae_studies import feed, ladder
from sae_studies.config import SAEConfig
from sae_studies.saes import registry
from sae_studies.store import Store
from sae_studies.train import train_sae

B = 128
RUNGS = (40 * B, 80 * B, 160 * B)  # 40 / 80 / 160 steps: warm-up 8 steps (5 % of the top), decay 8 / 16 / 32
CFG = SAEConfig(lr=5e-3, dead_feature_window=16, train_tokens=RUNGS[-1])


def spec(arch: str = "topk", seed: int = 0):
    options = {"m": 2, "n": 4} if arch == "kron" else {}
    return registry.get(arch).spec(64, 4, seed, **options)


def state(sae) -> dict:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def test_plan_steps_and_cost():
    p = ladder.plan([r * B for r in (64, 128, 256, 512)], B, decay_fraction=0.2)
    assert p.decay_steps == (13, 26, 51, 102)  # round(0.2 x steps)
    assert p.branch_steps == (51, 102, 205, 410)
    assert p.cost_steps == 410 + 13 + 26 + 51 + 102
    assert p.cost_ratio == pytest.approx(1.175, abs=0.01)  # 1 - f + f (1 + 1/2 + 1/4 + 1/8)
    assert p.warmup_steps == 25  # 5 % of the top rung (an ordinary run's at its length)


def test_default_warm_up_is_an_ordinary_runs_at_most_a_1m_runs():
    """The default warm-up does not shrink with the first rung: 5 % of the top rung up to 1M
    tokens, then 5 % of 1M (52,428 tokens), however short the first rung."""
    assert ladder.plan([65_536, 1_048_576], 2048).warmup_steps == 25  # 52,428 tokens
    assert ladder.plan([65_536, 4_194_304], 2048).warmup_steps == 25  # capped: 5 % of 4M would pass the 65k branch
    assert ladder.plan([65_536, 524_288], 2048).warmup_steps == 12  # 5 % of the top rung
    assert ladder.plan([262_144, 1_048_576], 2048).warmup_steps == ladder.plan([65_536, 1_048_576], 2048).warmup_steps
    assert ladder.plan([8192, 16384], 1024).warmup_steps == 0  # under 2 steps: none (SAELens needs >= 2)


@pytest.mark.parametrize(
    "rungs, kwargs, match",
    [
        ((100, 256), {}, "multiples of batch_size"),
        ((512, 256), {}, "strictly increasing"),
        ((256, 512), {"decay_fraction": 1.0}, "decay_fraction"),
        ((10 * B, 11 * B), {"decay_fraction": 0.5}, "branch steps"),  # both branch at step 5
        ((10 * B, 20 * B), {"warmup_tokens": 9 * B}, "branch steps"),  # warm-up past the first branch point
        ((10 * B, 20 * B), {"warmup_tokens": -1}, "warmup_tokens"),
    ],
)
def test_plan_rejects_bad_input(rungs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ladder.plan(rungs, B, **kwargs)


def test_feed_start_continues_the_stream(acts):
    """What a resumed ladder relies on: the feed started at batch n yields what the plain feed
    yields after its first n (inside a pass, at a pass boundary, passes later)."""
    for start in (5, 64, 70, 200):
        ref = list(itertools.islice(feed.data_feed(acts, B, 3), start, start + 6))
        got = list(itertools.islice(feed.data_feed(acts, B, 3, start=start), 6))
        assert all(torch.equal(a, b) for a, b in zip(ref, got))


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "kron", "hierarchical_topk"])
def test_killed_ladder_resumes_to_the_same_saes(tmp_path, acts, monkeypatch, one_thread, arch):
    whole = ladder.train_ladder(acts, spec(arch), CFG, Store(tmp_path / "a"), RUNGS, B, progress=False)
    assert whole.steps_run == whole.plan.cost_steps

    store = Store(tmp_path / "b")
    real = SAETrainer._checkpoint_if_needed
    saved = []

    def killed_after_two(self):
        before = len(self.checkpoint_thresholds)
        real(self)
        saved.extend([1] * (before - len(self.checkpoint_thresholds)))
        if len(saved) == 2:
            raise KeyboardInterrupt  # killed right after the second checkpoint was published

    monkeypatch.setattr(SAETrainer, "_checkpoint_if_needed", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        ladder.train_ladder(acts, spec(arch), CFG, store, RUNGS, B, progress=False)
    monkeypatch.undo()
    assert not list(store.root.glob("sae/*"))  # no rung was finished
    resumed = ladder.train_ladder(acts, spec(arch), CFG, store, RUNGS, B, progress=False)
    p = resumed.plan
    assert resumed.steps_run == p.cost_steps - p.branch_steps[1]  # the trunk restarted at checkpoint 2
    for a, b in zip(whole.saes, resumed.saes):
        sa, sb = state(a), state(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    again = ladder.train_ladder(acts, spec(arch), CFG, store, RUNGS, B, progress=False)
    assert again.steps_run == 0  # everything from the store


def test_rungs_load_with_sae_lens_and_improve(tmp_path, acts, one_thread):
    result = ladder.train_ladder(acts, spec(), CFG, Store(tmp_path / "s"), RUNGS, B, progress=False)
    x = acts.tensor(2048)
    fvu = []
    for art in result.artifacts:
        sae = SAE.load_from_disk(str(art.path))
        assert sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == acts.hook
        with torch.no_grad():
            err = (sae.decode(sae.encode(x)) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        fvu.append(float(err))
    assert fvu[-1] < fvu[0] < 1  # learned something, and more with more tokens


def test_schedule_is_warmup_stable_decay(tmp_path, acts, one_thread):
    store = Store(tmp_path / "s")
    result = ladder.train_ladder(acts, spec(), CFG, store, RUNGS, B, progress=False)
    p, lr = result.plan, CFG.lr
    for i in range(len(RUNGS)):
        sched = ladder.rung_schedule(acts, spec(), CFG, store, p, i)
        w, b, d = p.warmup_steps, p.branch_steps[i], p.decay_steps[i]
        assert len(sched) == p.rung_steps[i]  # the branch's steps are inside the rung
        assert np.all(np.diff(sched[:w]) > 0) and sched[0] == pytest.approx(lr / w)
        np.testing.assert_allclose(sched[w:b], lr, rtol=1e-6)  # constant in the stable phase
        np.testing.assert_allclose(sched[b:], lr * (1 - np.arange(d) / d), rtol=1e-6)  # linear decay to 0
    assert (p.warmup_steps, p.decay_steps) == (8, (8, 16, 32))


def test_one_rung_ladder_is_an_ordinary_run(tmp_path, acts, one_thread):
    """With one rung, warm-up 5 % and decay 20 % the ladder is `train_sae`'s schedule, trained through
    a checkpoint and a resume: the same SAE bit for bit."""
    store = Store(tmp_path / "s")
    tokens = 80 * B
    ordinary, _ = train_sae(acts, spec(), CFG.__class__(**{**CFG.__dict__, "train_tokens": tokens}), store, B)
    result = ladder.train_ladder(acts, spec(), CFG, store, [tokens], B, progress=False)
    a, b = state(ordinary), state(result.saes[0])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_top_rung_matches_an_ordinary_run_of_the_same_length(tmp_path, acts, one_thread):
    """The top rung differs from `train_sae` at the same length only in its warm-up (5 % of the
    first rung instead of 5 % of the run): same data, same decay. Its reconstruction error must be
    within 10 % of the ordinary run's, seed by seed (measured: 0.143 vs 0.154 for seed 0, the
    shorter warm-up helps a 160-step run)."""
    store = Store(tmp_path / "s")
    x = acts.tensor(4096)

    def fvu(sae):
        with torch.no_grad():
            return float((sae.decode(sae.encode(x)) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    for seed in (0, 1):
        ordinary, _ = train_sae(acts, spec(seed=seed), CFG, store, B)
        top = ladder.train_ladder(acts, spec(seed=seed), CFG, store, RUNGS, B, progress=False).saes[-1]
        assert fvu(top) == pytest.approx(fvu(ordinary), rel=0.1)


def test_top_rung_of_a_default_ladder_is_the_ordinary_run(tmp_path, acts, one_thread):
    """A ladder under 1M tokens warms up as an ordinary run of its top rung's length (5 %) by
    default, so its top rung is `train_sae` at that length bit for bit: checkpoints and branches
    change nothing else."""
    store = Store(tmp_path / "s")
    ordinary, _ = train_sae(acts, spec(), CFG, store, B)
    top = ladder.train_ladder(acts, spec(), CFG, store, RUNGS, B, progress=False).saes[-1]
    a, b = state(ordinary), state(top)
    for k in a:
        assert torch.equal(a[k], b[k]), k
