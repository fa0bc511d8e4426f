"""Cross-layer matching, groups, flow graphs and the deactivation test (analyses.flow)."""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pytest
import torch

from sae_studies import train
from sae_studies.analyses import flow
from sae_studies.analyses import flow_deactivation as deactivation
from sae_studies.saes import registry

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def random_window(layers, f=24, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randn(f, d, generator=g) for p in flow.window_positions(layers)}


# ------------------------------------------------------------------ positions and checks


def test_window_positions_and_hooks():
    assert flow.window_positions([0, 1]) == [
        ("resid", -1),
        ("resid", 0),
        ("resid", 1),
        ("mlp", 0),
        ("attn", 0),
        ("mlp", 1),
        ("attn", 1),
    ]
    assert flow.position_hook(("resid", -1)) == "blocks.0.hook_resid_pre"
    assert flow.position_hook(("resid", 2)) == "blocks.2.hook_resid_post"
    assert flow.position_hook(("mlp", 1)) == "blocks.1.hook_mlp_out"
    assert flow.position_hook(("attn", 0)) == "blocks.0.hook_attn_out"
    assert flow.window_positions([2, 3])[0] == ("resid", 1)  # a window inside the model reads resid_post of L0 − 1


def test_window_checks_name_the_value():
    with pytest.raises(ValueError, match="layer must be an integer in 0..3.*got layer=4"):
        flow.check_window([3, 4], 4)
    with pytest.raises(ValueError, match="consecutive"):
        flow.check_window([0, 2], 4)
    with pytest.raises(ValueError, match="position kind must be one of"):
        flow.position_hook(("mlp_in", 0))


def test_decoders_of_different_input_sizes_fail():
    decs = random_window([0, 1])
    decs[("mlp", 1)] = torch.randn(24, 9)
    with pytest.raises(ValueError, match="share the input size d"):
        flow.match_decoders(decs, [0, 1])
    del decs[("mlp", 1)]
    with pytest.raises(ValueError, match=r"lack the positions \[\('mlp', 1\)\]"):
        flow.match_decoders(decs, [0, 1])


# ------------------------------------------------------------------ matching


def test_matches_equal_dense_reference():
    layers = [0, 1, 2]
    decs = random_window(layers, f=30, d=6)
    m = flow.match_decoders(decs, layers, k=3)
    for layer in layers:
        t = torch.nn.functional.normalize(decs[("resid", layer)], dim=1)
        for kind in flow.SOURCES:
            src = torch.nn.functional.normalize(decs[flow.source_position(kind, layer)], dim=1)
            v, i = (t @ src.T).topk(3, dim=1)
            torch.testing.assert_close(m.values[(kind, layer)], v)
            assert torch.equal(m.indices[(kind, layer)], i)
    table = m.table()
    assert len(table) == 90 and set(table.columns) >= {"s_resid", "s_mlp", "s_attn", "i_resid"}


def test_copied_dictionary_is_translated():
    """resid L = resid L−1 permuted: every feature finds its copy with cosine 1."""
    decs = random_window([0, 1], f=20, d=16)
    perm = torch.randperm(20)
    decs[("resid", 1)] = decs[("resid", 0)][perm] * 3.0  # scale does not matter
    m = flow.match_decoders(decs, [0, 1])
    torch.testing.assert_close(m.best("resid", 1), torch.ones(20))
    assert torch.equal(m.indices[("resid", 1)][:, 0], perm)
    g = flow.classify({k: m.best(k, 1).numpy() for k in flow.SOURCES}, {"resid": 0.9, "mlp": 0.9, "attn": 0.9})
    assert (g["group"] == "translated").all()


def test_classify_known_table():
    scores = {
        "resid": np.array([0.9, 0.9, 0.1, 0.1, 0.9]),
        "mlp": np.array([0.1, 0.8, 0.8, 0.1, 0.1]),
        "attn": np.array([0.1, 0.1, 0.2, 0.1, 0.7]),
    }
    g = flow.classify(scores, {"resid": 0.5, "mlp": 0.5, "attn": 0.5})
    assert g["group"].tolist() == ["translated", "processed", "newborn", "unexplained", "processed"]
    assert [m if isinstance(m, str) else None for m in g["module"]] == [None, "mlp", "mlp", None, "attn"]
    with pytest.raises(ValueError, match=r"thresholds\['mlp'\] must be a cosine in \[-1, 1\]; got 1.5"):
        flow.classify(scores, {"resid": 0.5, "mlp": 1.5, "attn": 0.5})


def test_null_thresholds_are_quantiles():
    layers = [0]
    decs = random_window(layers, f=50, d=4)
    m = flow.match_decoders(decs, layers)
    t = flow.null_thresholds(m, 0.5)
    assert t[("resid", 0)] == pytest.approx(float(m.best("resid", 0).double().median()), abs=0.05)
    with pytest.raises(ValueError, match="quantile must be in"):
        flow.null_thresholds(m, 1.0)


# ------------------------------------------------------------------ flow graphs


def chain_window():
    """Three residual layers whose feature 0 is (nearly) the same direction, plus an MLP parent
    at layer 1 with cosine ~0.3 and unrelated attention features."""
    d, f = 16, 6
    eye = torch.eye(d)
    decs = {p: eye[8 : 8 + f].clone() for p in flow.window_positions([0, 1])}  # unrelated by default
    base = eye[0]
    decs[("resid", -1)] = eye[:f].clone()
    decs[("resid", 0)] = eye[:f].clone()
    decs[("resid", 0)][0] = base + 0.1 * eye[1]
    decs[("resid", 1)] = eye[:f].clone()
    decs[("resid", 1)][0] = base + 0.3 * eye[9]  # cosine 0.29 with mlp feature 1 (eye[9])
    decs[("mlp", 0)] = eye[10 : 10 + f].clone()
    return decs


def test_flow_graph_backwards_and_forwards():
    decs = chain_window()
    m = flow.match_decoders(decs, [0, 1], k=2)
    g = flow.flow_graph(m, 0, 0, resid_threshold=0.5, module_threshold=0.15)
    assert {"resid/-1/0", "resid/0/0", "resid/1/0", "mlp/1/1"} <= set(g.nodes)
    assert g.nodes["resid/0/0"]["seed"]
    assert g.has_edge("resid/-1/0", "resid/0/0") and g.has_edge("resid/0/0", "resid/1/0")
    assert g.edges["mlp/1/1", "resid/1/0"]["score"] == pytest.approx(0.3 / np.hypot(1, 0.3), abs=1e-6)
    assert flow.residual_chain(g) == {-1: 0, 0: 0, 1: 0}
    # a module threshold above the MLP cosine drops that parent; a residual one of 1 cuts the chain
    assert "mlp/1/1" not in flow.flow_graph(m, 0, 0, module_threshold=0.5)
    assert set(flow.flow_graph(m, 0, 0, resid_threshold=1.0).nodes) == {"resid/0/0"}


def test_flow_graph_bad_input():
    m = flow.match_decoders(chain_window(), [0, 1], k=1)
    with pytest.raises(ValueError, match=r"feature must be an integer in 0..5 .*got feature=6"):
        flow.flow_graph(m, 0, 6)
    with pytest.raises(ValueError, match=r"layer 5 is not in the matched window \[0, 1\]"):
        flow.flow_graph(m, 5, 0)
    with pytest.raises(ValueError, match=r"resid_threshold must be a cosine in \[-1, 1\]; got 2"):
        flow.flow_graph(m, 0, 0, resid_threshold=2)


def test_graph_export_round_trip(tmp_path):
    m = flow.match_decoders(chain_window(), [0, 1], k=2)
    g = flow.flow_graph(m, 0, 0, labels=lambda kind, layer, f: f"{kind}{layer}#{f}")
    graphml, js = flow.save_graph(g, tmp_path / "05_flow_graph_x")
    back = nx.read_graphml(graphml)
    assert set(back.nodes) == set(g.nodes) and back.number_of_edges() == g.number_of_edges()
    again = flow.load_graph_json(js)
    assert again.nodes["mlp/1/1"]["label"] == "mlp1#1"
    assert again.edges["resid/0/0", "resid/1/0"]["score"] == pytest.approx(g.edges["resid/0/0", "resid/1/0"]["score"])


# ------------------------------------------------------------------ deactivation


@pytest.fixture(scope="module")
def layer_saes(micro_run):
    """Tiny TopK SAEs on the four positions around layer 1 of the micro model."""
    layers = [1]
    hooks = {p: flow.position_hook(p) for p in flow.window_positions(layers)}
    acts = micro_run.activations(list(hooks.values()))
    cfg = dataclasses.replace(micro_run.profile.sae, train_tokens=4096)
    spec = registry.get("topk").spec(4 * micro_run.profile.lm.d_model, 4)
    saes = {p: train.train_sae(acts[h], spec, cfg, micro_run.store, 512)[0] for p, h in hooks.items()}
    contexts = micro_run.eval_contexts(1024)
    ld = deactivation.LayerDeactivation(
        micro_run.model,
        1,
        {"target": saes[("resid", 1)], "resid": saes[("resid", 0)], "mlp": saes[("mlp", 1)], "attn": saes[("attn", 1)]},
        contexts,
    )
    return micro_run, saes, ld


def _busy_feature(ld):
    return int((ld.codes["target"] > 0).sum((0, 1)).argmax())


def test_cached_codes_reproduce_encoding(layer_saes):
    run, saes, ld = layer_saes
    x = ld.acts["post"].flatten(0, 1)
    torch.testing.assert_close(ld.codes["target"].flatten(0, 1), saes[("resid", 1)].encode(x))


def test_rescale_one_changes_nothing(layer_saes):
    _, _, ld = layer_saes
    f = _busy_feature(ld)
    windows = torch.nonzero(ld.firing(f).any(1)).flatten()[:2].tolist()
    cands = ld.active_predecessors(f, windows)[:12]
    eff = ld.effects(f, cands, windows, r=1.0)
    assert len(eff) == len(cands)
    np.testing.assert_allclose(eff["change"], 0.0, atol=1e-5)
    assert (eff["success"] == 0).all()


def test_fast_paths_equal_full_block(layer_saes):
    """The MLP edit (added to resid_post) and the per-token MLP re-run after an attention edit
    give what re-running the whole hooked block gives."""
    _, _, ld = layer_saes
    f = _busy_feature(ld)
    windows = torch.nonzero(ld.firing(f).any(1)).flatten()[:2].tolist()
    active = ld.active_predecessors(f, windows)
    cands = [c for c in active if c[0] == "mlp"][:5] + [c for c in active if c[0] == "attn"][:5]
    assert {k for k, _ in cands} == {"mlp", "attn"}
    fast = ld.effects(f, cands, windows, r=0.0)
    ld.standard = False
    try:
        full_attn = ld.effects(f, [c for c in cands if c[0] == "attn"], windows, r=0.0)
    finally:
        ld.standard = True
    np.testing.assert_allclose(fast[fast.kind == "attn"]["change"].to_numpy(), full_attn["change"].to_numpy(), atol=1e-4)
    # the MLP path against an explicit hooked re-run of the block
    kind, j = next(c for c in cands if c[0] == "mlp")
    w = torch.as_tensor(windows)
    mask = ld.firing(f)[w]
    t_max = int(torch.nonzero(mask.any(0)).max()) + 1
    delta = ld._delta("mlp", [j], w, mask[:, :t_max], t_max, 0.0)
    full = ld._block("mlp", delta, w, t_max)[0]
    a1 = ld.saes["target"].encode(full[mask[:, :t_max]])[:, f]
    a0 = ld.codes["target"][w, :t_max][mask[:, :t_max]][:, f]
    expect = float(((a0 - a1) / a0).mean())
    assert float(fast.set_index(["kind", "predecessor"]).loc[(kind, j), "change"]) == pytest.approx(expect, abs=1e-4)


def test_residual_edit_equals_hooked_forward(layer_saes):
    """Editing the residual input of the block equals a hooked forward of the whole model."""
    run, saes, ld = layer_saes
    f = _busy_feature(ld)
    windows = torch.nonzero(ld.firing(f).any(1)).flatten()[:1].tolist()
    kind, j = next(c for c in ld.active_predecessors(f, windows) if c[0] == "resid")
    w = torch.as_tensor(windows)
    mask = ld.firing(f)[w]
    n_ctx = mask.shape[1]
    delta = ld._delta("resid", [j], w, mask, n_ctx, 0.0)[0]
    tokens = torch.as_tensor(run.eval_contexts(1024)[windows])
    cache = {}
    run.model.run_with_hooks(
        tokens,
        stop_at_layer=2,
        fwd_hooks=[
            ("blocks.0.hook_resid_post", lambda x, hook: x + delta),
            ("blocks.1.hook_resid_post", lambda x, hook: cache.setdefault("post", x)),
        ],
    )
    torch.testing.assert_close(ld._block("resid", delta[None], w, n_ctx)[0], cache["post"], atol=1e-4, rtol=1e-4)


def test_deactivation_table_invariants(layer_saes):
    run, saes, ld = layer_saes
    decs = {p: s.W_dec.detach() for p, s in saes.items()}
    m = flow.match_decoders(decs, [1], k=5)
    firing = (ld.codes["target"] > 0).sum((0, 1))
    features = torch.nonzero(firing > 0).flatten()[:5].tolist()
    tab = deactivation.deactivation_table(ld, m, features, n_windows=1, rng=np.random.default_rng(0))
    assert set(tab["method"]) == set(deactivation.METHODS)
    wide = tab.pivot(index="feature", columns="method", values="change")
    assert (wide["exhaustive"] >= wide["top-1 cosine"] - 1e-9).all()
    assert (wide["exhaustive"] >= wide["random top-5"] - 1e-9).all()
    top1 = tab[tab.method == "top-1 cosine"].set_index("feature")
    for feat, row in top1.iterrows():  # the top-1 pick is the best pooled cosine
        best = deactivation.pooled_top(m, 1, int(feat), 5)[0]
        assert (row["kind"], row["predecessor"]) == best[:2]
        assert row["cosine"] == pytest.approx(best[2], abs=1e-5)
    assert tab["success"].between(0, 1).all()
