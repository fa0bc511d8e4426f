"""Before a harvest starts it prints the bytes it will write, and stops, naming the store and its
free space, when the disk is short (a tiny model built from a config, no training)."""

import errno
import shutil
from collections import namedtuple

import numpy as np
import pytest
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_studies import activations as A
from sae_studies.lm import LoadedModel
from sae_studies.store import Store
from sae_studies.tokens import TokenStream

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def tiny():
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=16, d_vocab=50, act_fn="gelu")
    model = HookedTransformer(cfg)
    rng = np.random.default_rng(0)
    streams = {s: TokenStream(rng.integers(0, 50, 1024).astype(np.int32), np.zeros(1024, np.int8)) for s in ("train", "val")}
    return LoadedModel(model, None, streams, key="tiny", tokens_key="tiny-tokens")


def test_harvest_prints_its_size_and_writes_that_many_bytes(tiny, tmp_path, capsys):
    hooks = [A.hook_name(0), "blocks.1.mlp.hook_post"]  # widths 16 and 32
    sets = A.harvest(tiny, hooks, 256, Store(tmp_path))
    need = A.harvest_bytes(256, [16, 32])
    assert need == 256 * (16 * 4 + 4 + 1) + 256 * (32 * 4 + 4 + 1)
    assert f"writes {need / 1e9:.2f} GB to the store {tmp_path}" in capsys.readouterr().out
    written = sum(
        a.artifact.path.joinpath(f).stat().st_size - 128
        for a in sets.values()
        for f in ("acts.npy", "tokens.npy", "categories.npy")
    )
    assert written == need  # every .npy header here is 128 bytes


def test_short_disk_stops_the_harvest_before_it_starts(tiny, tmp_path, monkeypatch):
    free = A.harvest_bytes(256, [16]) - 1
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, free))
    calls = []
    monkeypatch.setattr(tiny.model, "run_with_hooks", lambda *a, **k: calls.append(1))
    with pytest.raises(OSError, match=rf"the disk of the store {tmp_path} has .*\({free:,} bytes\) free") as info:
        A.harvest(tiny, [A.hook_name(0)], 256, Store(tmp_path))
    assert info.value.errno == errno.ENOSPC and "SAE_STUDIES_DATA" in str(info.value)
    assert calls == [] and not list((tmp_path / "activations").iterdir())  # nothing ran, nothing left
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, free + 1))  # just enough
    monkeypatch.setattr(tiny.model, "run_with_hooks", type(tiny.model).run_with_hooks.__get__(tiny.model))
    assert len(A.harvest(tiny, [A.hook_name(0)], 256, Store(tmp_path))[A.hook_name(0)]) == 256
