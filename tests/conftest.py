"""Shared fixtures: a micro profile whose whole pipeline (tokenizer, LM, activations) builds in
seconds into a temporary data folder, so unit tests never touch the repository's cache."""

import os

import numpy as np
import pytest
import torch

from sae_studies import pipeline
from sae_studies.activations import ActivationSet
from sae_studies.store import Store

MICRO = {
    "lm.train_epochs": 0.02,
    "activations.n_tokens": 16384,
    "activations.n_eval_tokens": 4096,
    "activations.batch_size": 512,
    "sae.train_tokens": 16384,
    # float32 whatever the CPU: these tests compare against float32 references to 1e-5;
    # the bfloat16 paths are tested in test_precision.py
    "lm.compute_dtype": "float32",
    "sae.dtype": "float32",
}


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory, monkeypatch_session):
    monkeypatch_session.setenv("SAE_STUDIES_DATA", str(tmp_path_factory.mktemp("data")))
    run = pipeline.start("smoke", MICRO)
    run.loaded  # build once for the session
    return run


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """The whole session on SAE_STUDIES_TEST_THREADS torch threads (default 1): the tensors here
    are tiny, and beside another job on the 2 cores OpenMP hand-offs between two threads cost more
    than the arithmetic (the micro pipeline's build took 490 s on two threads beside one notebook,
    30 s on one thread beside two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SAE_STUDIES_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one thread for the test, restored after, whatever SAE_STUDIES_TEST_THREADS says:
    the tensors in these tests are tiny, and with other jobs on the 2 cores OpenMP hand-offs
    between two threads cost more than the arithmetic (measured 7x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def acts(tmp_path) -> ActivationSet:
    """8,192 rows of d = 16 with a few strong sparse directions (so an SAE has something to learn),
    as a store artifact: the ladder tests' activations (a test file's own ``acts`` overrides it)."""
    n, d = 8192, 16

    def build(tmp):
        g = torch.Generator().manual_seed(0)
        dirs = torch.randn(24, d, generator=g)
        codes = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.15)
        x = codes @ dirs + 0.05 * torch.randn(n, d, generator=g) + 1.0
        np.save(tmp / "acts.npy", x.numpy().astype(np.float32))

    return ActivationSet("blocks.0.hook_resid_post", Store(tmp_path / "acts").get_or_build("test_acts", {"n": n, "d": d}, build))
