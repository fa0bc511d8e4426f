"""The table cache: a stored table is served only under the same profile, package code, kernel
history and computation; its computation leaves the global random state alone."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies import table_cache
from sae_studies.config import load_profile
from sae_studies.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "data")


@pytest.fixture
def profile():
    return load_profile("smoke")


def counting(value: float):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [value, value + 1.0], "name": ["a", "b"]})

    return compute, calls


def test_second_call_reads_the_stored_table(store, profile):
    compute, calls = counting(0.25)
    first = table_cache.cached_table(store, profile, "t", compute)
    again = table_cache.cached_table(store, profile, "t", compute)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again)
    assert again.x.tolist() == [0.25, 1.25]


def test_profile_name_and_inputs_enter_the_key(store, profile):
    compute, calls = counting(0.5)
    table_cache.cached_table(store, profile, "t", compute)
    table_cache.cached_table(store, profile.with_overrides({"study03.n_top": profile.study03.n_top + 1}), "t", compute)
    table_cache.cached_table(store, profile, "other", compute)
    table_cache.cached_table(store, profile, "t", compute, inputs={"sae_keys": ["abc"]})
    assert len(calls) == 4


def test_changed_computation_recomputes(store, profile):
    a = table_cache.cached_table(store, profile, "t", lambda: pd.DataFrame({"x": [1]}))
    b = table_cache.cached_table(store, profile, "t", lambda: pd.DataFrame({"x": [2]}))
    assert a.x.tolist() == [1] and b.x.tolist() == [2]


def test_kernel_history_enters_the_key(store, profile, monkeypatch):
    compute, calls = counting(1.0)
    monkeypatch.setattr(table_cache, "kernel_history", lambda: ["", "run = start()", "t = cached()"])
    table_cache.cached_table(store, profile, "t", compute)
    table_cache.cached_table(store, profile, "t", compute)
    assert len(calls) == 1  # the same cells run before: read
    monkeypatch.setattr(table_cache, "kernel_history", lambda: ["", "run = start()", "saes.pop(3)", "t = cached()"])
    table_cache.cached_table(store, profile, "t", compute)
    assert len(calls) == 2  # an edited notebook above: recomputed


def test_package_code_enters_the_key(store, profile, monkeypatch):
    compute, calls = counting(1.0)
    table_cache.cached_table(store, profile, "t", compute)
    monkeypatch.setattr("sae_studies.store.code_version", lambda *modules: "0123456789abcdef")
    table_cache.cached_table(store, profile, "t", compute)
    assert len(calls) == 2


def test_computing_leaves_the_global_random_state_alone(store, profile):
    def draws():
        torch.rand(3), np.random.rand(3)
        return pd.DataFrame({"x": [1]})

    torch.manual_seed(0), np.random.seed(0)
    table_cache.cached_table(store, profile, "t", draws)
    after = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(0), np.random.seed(0)
    assert (torch.rand(1).item(), np.random.rand()) == after


def test_a_damaged_table_is_recomputed(store, profile):
    compute, calls = counting(2.0)
    table_cache.cached_table(store, profile, "t", compute)
    (stored,) = (store.root / table_cache.KIND).glob(f"*/{table_cache.FILE}")
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    stored.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="moved aside"):
        again = table_cache.cached_table(store, profile, "t", compute)
    assert len(calls) == 2 and again.x.tolist() == [2.0, 3.0]


def test_a_computation_that_returns_no_table_stores_nothing(store, profile):
    with pytest.raises(TypeError, match="DataFrame"):
        table_cache.cached_table(store, profile, "t", lambda: [1, 2])
    assert not list((store.root / table_cache.KIND).glob("*/table.pkl"))


def test_code_digest_is_the_same_in_every_process():
    """A set literal compiles to a frozenset whose repr's order follows PYTHONHASHSEED: the digest
    must not, or no other process would ever read the table."""
    script = "from sae_studies.table_cache import code_digest; print(code_digest((lambda m: m in {'topk', 'batchtopk', 'standard', 'kron', 'matryoshka'}).__code__))"
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(digests) == 1
