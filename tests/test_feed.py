"""The data feed: index streams, the block-shuffled order, and the background prefetcher."""

import dataclasses
import gc
import time

import numpy as np
import pytest
import torch

from sae_studies import feed
from sae_studies.activations import ActivationSet, _shuffled_batches
from sae_studies.config import SAEConfig
from sae_studies.saes.registry import SAESpec
from sae_studies.store import Artifact
from sae_studies.train import artifact_params


@pytest.fixture
def acts(tmp_path):
    """A 1,024 × 8 float32 activation store (row r holds r in every column) as an ActivationSet."""
    x = np.repeat(np.arange(1024, dtype=np.float32)[:, None], 8, axis=1)
    np.save(tmp_path / "acts.npy", x)
    return ActivationSet("blocks.0.hook_resid_post", Artifact("activations", "k" * 16, tmp_path))


def stream(it, n):
    return [next(it).clone() for _ in range(n)]


def test_row_batches_are_todays_batches(acts):
    plain = _shuffled_batches(acts.acts, 64, np.random.default_rng(3), 40)
    mine = (feed.read_rows(acts.acts, i) for i in feed.row_batches(len(acts), 64, np.random.default_rng(3), 40))
    for a, b in zip(plain, mine, strict=True):
        assert torch.equal(a, b)


def test_start_skips_batches(acts):
    full = list(feed.row_batches(1024, 64, np.random.default_rng(1), 40))
    late = list(feed.row_batches(1024, 64, np.random.default_rng(1), 40, start=21))
    assert len(late) == 19 and all(np.array_equal(a, b) for a, b in zip(full[21:], late))
    full_b = list(feed.block_batches(1024, 64, np.random.default_rng(1), 32, 4, 40))
    late_b = list(feed.block_batches(1024, 64, np.random.default_rng(1), 32, 4, 40, start=17))
    assert all(np.array_equal(a, b) for a, b in zip(full_b[17:], late_b, strict=True))


@pytest.mark.parametrize("block_rows,window", [(32, 4), (100, 3), (1024, 1), (1, 1)])
def test_block_batches_cover_every_row_once_per_pass(block_rows, window):
    batches = list(feed.block_batches(1024, 64, np.random.default_rng(0), block_rows, window, steps=32))
    for p in range(2):
        rows = np.concatenate(batches[16 * p : 16 * (p + 1)])
        assert np.array_equal(np.sort(rows), np.arange(1024))
    assert not np.array_equal(np.concatenate(batches[:16]), np.concatenate(batches[16:]))  # a new order per pass


def test_block_batches_read_few_runs():
    """A batch of the block order comes from at most a window's blocks (+1 at a window edge):
    long contiguous runs instead of ~batch_size scattered rows."""
    for idx in feed.block_batches(65536, 1024, np.random.default_rng(0), 512, 4, steps=64):
        assert len(np.unique(idx // 512)) <= 8
    runs = [len(np.flatnonzero(np.diff(i) != 1)) + 1 for i in feed.row_batches(65536, 1024, np.random.default_rng(0), 8)]
    assert min(runs) > 900  # the uniform shuffle: almost every row its own run


def test_data_feed_default_is_todays_feed(acts):
    a = stream(feed.data_feed(acts, 64, seed=5), 30)
    b = stream(acts.batches(64, seed=5), 30)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetched_stream_equals_plain(acts, depth):
    plain = stream(acts.batches(64, seed=2), 45)  # 2.8 passes
    with feed.data_feed(acts, 64, seed=2, prefetch=depth) as pre:
        got = stream(pre, 45)
        assert pre.batches == 45 and pre.wait_seconds >= 0
    assert all(torch.equal(x, y) for x, y in zip(plain, got))
    assert not pre.alive


def test_prefetched_block_stream_equals_plain_block_stream(acts):
    plain = stream(feed.data_feed(acts, 64, seed=4, block_rows=32, window_blocks=4), 20)
    with feed.data_feed(acts, 64, seed=4, block_rows=32, window_blocks=4, prefetch=2) as pre:
        got = stream(pre, 20)
    assert all(torch.equal(x, y) for x, y in zip(plain, got))
    assert not all(torch.equal(x, y) for x, y in zip(plain, stream(acts.batches(64, seed=4), 20)))


def test_bfloat16_feed(acts):
    got = next(feed.data_feed(acts, 64, seed=0, dtype="bfloat16", prefetch=1))
    ref = next(acts.batches(64, seed=0))
    assert got.dtype == torch.bfloat16 and torch.equal(got, ref.to(torch.bfloat16))


def test_prefetcher_ends_with_its_stream(acts):
    pre = feed.data_feed(acts, 64, seed=0, prefetch=2, epochs=2)
    assert len(list(pre)) == 32
    pre._thread.join(timeout=5)
    assert not pre.alive


def test_prefetcher_thread_stops_when_the_consumer_stops(acts):
    pre = feed.data_feed(acts, 64, seed=0, prefetch=2)  # endless
    stream(pre, 3)
    thread = pre._thread
    assert thread.is_alive()
    pre.close()
    assert not thread.is_alive()
    with pytest.raises(StopIteration):
        next(pre)


def test_prefetcher_thread_stops_when_the_consumer_is_dropped(acts):
    """SAETrainer never closes its data provider: dropping the prefetcher must end the thread."""
    pre = feed.data_feed(acts, 64, seed=0, prefetch=2)
    stream(pre, 2)
    thread = pre._thread
    del pre
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_prefetcher_raises_the_workers_error(acts):
    def bad():
        yield np.arange(64)
        raise RuntimeError("disk gone")

    pre = feed.Prefetcher(acts.acts, bad(), depth=2)
    next(pre)
    with pytest.raises(RuntimeError, match="disk gone"):
        next(pre)
    time.sleep(0.05)
    assert not pre.alive


def test_bad_feed_settings(acts):
    with pytest.raises(ValueError, match="feed_dtype"):
        feed.data_feed(acts, 64, 0, dtype="float16")
    with pytest.raises(ValueError, match="prefetch"):
        feed.data_feed(acts, 64, 0, prefetch=-1)
    with pytest.raises(ValueError, match="batch_size"):
        feed.data_feed(acts, 100, 0, prefetch=1)
    with pytest.raises(ValueError, match="shuffle_window_blocks"):
        feed.data_feed(acts, 64, 0, block_rows=32, window_blocks=0)


def test_artifact_key_changes_only_with_the_batches(acts):
    """Prefetching yields the same batches: same key as today's. Block shuffling or a bfloat16
    feed changes the batches: a different key."""
    spec = SAESpec("topk", 64, 4)
    base = artifact_params(spec, acts, SAEConfig(), 64)
    assert "feed" not in base and not {"prefetch", "feed_dtype", "shuffle_block_rows"} & set(base["training"])
    assert artifact_params(spec, acts, SAEConfig(prefetch=4), 64) == base
    blocked = artifact_params(spec, acts, dataclasses.replace(SAEConfig(), shuffle_block_rows=4096), 64)
    assert blocked["feed"] == {"shuffle": {"block_rows": 4096, "window_blocks": 16}}
    assert artifact_params(spec, acts, SAEConfig(feed_dtype="bfloat16"), 64)["feed"] == {"feed_dtype": "bfloat16"}


def test_train_sae_learns_the_same_with_prefetching(acts, tmp_path, one_thread):
    """Through train_sae: the prefetched feed trains bitwise the same SAE as today's feed (its key
    is the same too), and records the data wait it saw."""
    import json

    from sae_studies.store import Store
    from sae_studies.train import train_sae

    spec = SAESpec("topk", 32, 4)
    cfg = SAEConfig(train_tokens=1024, dead_feature_window=4)
    plain, art_a = train_sae(acts, spec, cfg, Store(tmp_path / "a"), batch_size=64)
    pre, art_b = train_sae(acts, spec, dataclasses.replace(cfg, prefetch=3), Store(tmp_path / "b"), batch_size=64)
    assert art_a.key == art_b.key
    for (name, p), q in zip(plain.state_dict().items(), pre.state_dict().values()):
        assert torch.equal(p, q), name
    summary = json.loads((art_b.path / "training.json").read_text())
    assert summary["feed_wait_seconds"] >= 0 and "feed_wait_seconds" not in json.loads((art_a.path / "training.json").read_text())
