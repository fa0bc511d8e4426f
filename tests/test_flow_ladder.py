"""Study 5's ladder (studies.flow_ladder): the persistence share against notebook 05's full
matching path and on planted cases, a tiny real ladder table whose rows are the rung SAEs' shares,
the gate on the share per layer, and the profile checks of the new settings."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sae_studies import ladder
from sae_studies.analyses import flow, quality
from sae_studies.config import SAEConfig, load_profile
from sae_studies.saes import registry
from sae_studies.store import Store
from sae_studies.studies import flow as sf
from sae_studies.studies import flow_ladder as FL
from sae_studies.studies.verdicts import Verdict
from sae_studies.study_config import Study05Config


def decoder_chain(layers, F=48, d=16, copied=0.5, noise=0.05, seed=0):
    """Residual decoders of ``("resid", L0 − 1)`` … ``("resid", L1)``: in each layer the first
    ``copied`` share of rows are their previous layer's rows plus noise, the rest fresh draws."""
    g = torch.Generator().manual_seed(seed)
    out = {layers[0] - 1: torch.randn(F, d, generator=g)}
    n = int(copied * F)
    for lay in layers:
        fresh = torch.randn(F, d, generator=g)
        fresh[:n] = out[lay - 1][:n] + noise * torch.randn(n, d, generator=g)
        out[lay] = fresh
    return out


def test_shares_equal_notebook_05s_match_window_and_group_table_path():
    layers, F, d = [0, 1, 2], 48, 16
    dec = decoder_chain(layers, F, d)
    g = torch.Generator().manual_seed(1)
    nulls = {lay - 1: torch.randn(F, d, generator=g) for lay in layers}
    alive = {lay: np.arange(F) % 3 != 0 for lay in layers}
    got = FL.persistence_shares(dec, nulls, alive, layers, 0.9)

    # the reference: the full window (random MLP / attention dictionaries), as notebook 05 runs it
    decoders = {("resid", lay): w for lay, w in dec.items()}
    decoders |= {(kind, lay): torch.randn(F, d, generator=g) for lay in layers for kind in ("mlp", "attn")}
    matches = flow.match_decoders(decoders, layers, 5)
    null_src = {("resid", lay - 1): nulls[lay - 1] for lay in layers}
    null_src |= {(kind, lay): torch.randn(F, d, generator=g) for lay in layers for kind in ("mlp", "attn")}
    thresholds = flow.null_thresholds(flow.match_window({lay: dec[lay] for lay in layers}, null_src, layers, 1), 0.9)
    groups = sf.group_table(matches, thresholds, alive)
    want = groups.assign(above=groups.s_resid > groups.t_resid).groupby("layer").above.mean()
    assert got == pytest.approx(want.to_dict())


def test_planted_copies_are_all_above_the_null_and_fresh_draws_at_its_rate():
    layers, F, d = [1, 2], 400, 64
    dec = decoder_chain(layers, F, d, copied=0.5, noise=0.01)
    g = torch.Generator().manual_seed(2)
    nulls = {lay - 1: torch.randn(F, d, generator=g) for lay in layers}
    copies = {lay: np.arange(F) < F // 2 for lay in layers}
    fresh = {lay: ~copies[lay] for lay in layers}
    assert FL.persistence_shares(dec, nulls, copies, layers, 0.99) == {1: 1.0, 2: 1.0}
    # a fresh Gaussian row against Gaussian rows is a draw from the null itself: about 1 % above
    assert all(s < 0.05 for s in FL.persistence_shares(dec, nulls, fresh, layers, 0.99).values())
    none = {lay: np.zeros(F, bool) for lay in layers}
    assert all(np.isnan(s) for s in FL.persistence_shares(dec, nulls, none, layers, 0.99).values())
    with pytest.raises(ValueError, match="alive"):
        FL.persistence_shares(dec, nulls, {lay: np.ones(3, bool) for lay in layers}, layers, 0.99)


B = 128
RUNGS = (8 * B, 16 * B)


def test_ladder_table_rows_are_the_rung_saes_shares(tmp_path, acts, one_thread):
    layers = [0, 1]
    C = Study05Config(
        first_layer=0, last_layer=1, expansion_factor=4, k=4, batch_size=B, lr=5e-3, min_firings=1,
        convergence_tokens=RUNGS, convergence_seeds=(0, 1),
    )  # fmt: skip
    cfg = SAEConfig(lr=5e-3, dead_feature_window=8, train_tokens=RUNGS[-1])
    run = SimpleNamespace(profile=SimpleNamespace(sae=cfg), store=Store(tmp_path / "s"))
    positions = FL.resid_positions(layers)
    assert positions == [("resid", -1), ("resid", 0), ("resid", 1)]
    train_acts = {flow.position_hook(p): acts for p in positions}  # one activation set stands in for every hook
    x = acts.tensor()[:1024]
    val_x = {p: x for p in positions}
    covs = {p: torch.cov(x.T.double()) for p in positions}
    table = FL.ladder_table(run, C, layers, train_acts, val_x, covs, d_model=16, k=4, progress=False)
    assert len(table) == len(RUNGS) * 2 * len(layers)
    assert {"layer", "tokens", "seed", FL.SHARE, "explained_variance", "n_live"} <= set(table.columns)

    # rung 0, seed 1, recomputed from the ladders in the store (no step trained again)
    spec = registry.get("topk").spec(64, 4)
    sae_cfg = sf.sae_config(cfg, C)
    lads = {
        p[1]: ladder.train_ladder(acts, spec.with_seed(sf.position_seed(1, p)), sae_cfg, run.store, RUNGS, B, progress=False)
        for p in positions
    }
    assert all(lad.steps_run == 0 for lad in lads.values())
    dec = {lay: lad.saes[0].W_dec.detach() for lay, lad in lads.items()}
    nulls = sf.null_sources({("resid", lay - 1): dec[lay - 1] for lay in layers}, covs, C.null_kind, seed=1)
    alive = {lay: quality.sae_reconstruction_metrics(lads[lay].saes[0], x).density * len(x) >= 1 for lay in layers}
    want = FL.persistence_shares(dec, {p[1]: w for p, w in nulls.items()}, alive, layers, C.null_quantile)
    got = table[(table.tokens == RUNGS[0]) & (table.seed == 1)].set_index("layer")[FL.SHARE]
    assert got.to_dict() == pytest.approx(want)


def test_ladder_verdict_reads_the_top_rung_s_shares_and_gates_every_layer():
    before = Verdict("persistence", "paper", "budget: 0.5", "agrees", "rule", n=2)
    rungs = [65536, 131072, 262144]
    rows = []
    for layer, per_rung in {1: [[0.5, 0.52], [0.6, 0.61], [0.6, 0.61]], 2: [[0.2, 0.21], [0.4, 0.41], [0.6, 0.61]]}.items():
        for tokens, seeds in zip(rungs, per_rung):
            rows += [
                {"layer": layer, "tokens": tokens, "seed": s, FL.SHARE: v_, "explained_variance": 0.9}
                for s, v_ in enumerate(seeds)
            ]
    table = pd.DataFrame(rows)
    gated = FL.ladder_verdict(before, table, 131072, 0.99, "m")
    assert gated.outcome == "untested" and gated.convergence.quantity.endswith("layer=2")  # layer 2 still moving
    assert "read on the ladder at 262,144 tokens (2 seeds)" in gated.ours
    layer1 = FL.ladder_verdict(before, table[table.layer == 1], 131072, 0.99, "m")
    # the rule on the top rung's two seeds: both far above the 1 % a null feature reaches
    assert layer1.outcome == "agrees" and layer1.statistic == pytest.approx(0.605) and layer1.n == 2
    assert layer1.convergence.converged_at == 131072
    # the budget's reading, gated up to 131k where layer 1 still moved (0.51 -> 0.605), is the previous one
    assert "read at the profile's budget (131,072 tokens, 2 seeds)" in layer1.previous and "untested" in layer1.previous
    assert FL.ladder_verdict(before, pd.DataFrame(), 131072, 0.99, "m") is before
    gates = FL.gate_table(table, 262144)
    assert set(gates.layer) == {1, 2} and set(gates.quantity) == set(FL.QUANTITIES)


def test_check_study05_names_the_ladder_settings():
    p = load_profile("smoke")
    C = p.study05
    args = (p.lm.n_layers, p.sae.k, p.lm.d_model)
    sf.check_study05(dataclasses.replace(C, convergence_tokens=(4096, 8192)), *args)
    with pytest.raises(ValueError, match="study05.convergence_seeds"):
        sf.check_study05(dataclasses.replace(C, convergence_tokens=(4096, 8192), convergence_seeds=(0,)), *args)
    with pytest.raises(ValueError, match="study05.convergence_tokens"):
        sf.check_study05(dataclasses.replace(C, convergence_tokens=(1000, 2048)), *args)
    with pytest.raises(ValueError, match="study05.convergence_seeds"):
        load_profile("smoke", {"study05.convergence_seeds": [0]})
