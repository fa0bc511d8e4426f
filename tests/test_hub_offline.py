"""The hub-model path, run with the hub switched off: a local Hugging Face cache holds a model that
TransformerLens knows by name (EleutherAI/pythia-14m: its real configuration, random weights) and a
tokenizer, a local dataset holds the text, and notebook 00's pipeline (profile with `lm.name` and
`corpus.source` overridden) loads the model, harvests, and trains SAEs with `HF_HUB_OFFLINE=1`.
Everything runs in a fresh process, so the hub settings apply from the first import."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sae_studies import corpus

MODEL = "EleutherAI/pythia-14m"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # any commit hash: refs/main points at it


def pythia_14m_config():
    """EleutherAI/pythia-14m's config.json (GPT-NeoX, 6 layers, d_model 128, 4 heads)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        architectures=["GPTNeoXForCausalLM"],
        vocab_size=50304,
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        hidden_act="gelu",
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=2048,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )


def build_hub_cache(cache: Path, texts: list[str]) -> Path:
    """`cache/models--EleutherAI--pythia-14m/{refs/main, snapshots/<rev>/...}`: the layout
    huggingface_hub reads offline. Random weights (seeded), and a BPE tokenizer trained on `texts`."""
    import torch
    from transformers import GPTNeoXForCausalLM, PreTrainedTokenizerFast

    from sae_studies.tokens import EOT, train_bpe

    repo = cache / f"models--{MODEL.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    torch.manual_seed(0)
    GPTNeoXForCausalLM(pythia_14m_config()).save_pretrained(snapshot)
    tok = train_bpe(texts, 600)
    tok.save(str(snapshot / "tokenizer.json"))
    PreTrainedTokenizerFast(
        tokenizer_file=str(snapshot / "tokenizer.json"), eos_token=EOT, bos_token=EOT, pad_token=EOT
    ).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


PIPELINE = textwrap.dedent(
    """
    import json, sys
    import huggingface_hub.constants
    from sae_studies import pipeline, train
    from sae_studies.activations import hook_name
    from sae_studies.analyses import quality
    from sae_studies.saes import registry
    from sae_studies.studies import overview

    assert huggingface_hub.constants.HF_HUB_OFFLINE
    run = pipeline.start("smoke", json.loads(sys.argv[1]))
    model = run.model  # HookedTransformer.from_pretrained by name, from the local cache
    hook = hook_name(1)
    acts = run.activations([hook])[hook]
    eval_x = run.activations([hook], split="val")[hook].tensor()
    ((sae, art),) = run.train([train.SAEJob(acts, registry.get("topk").spec(4 * acts.d, 8), run.profile.sae, 512)])
    sanity = overview.sanity_table(run, 1, [4, 8])  # notebook 00's SAE check: EV, L0, CE, loss recovered
    print("RESULT " + json.dumps({
        "model_name": model.cfg.model_name, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
        "rows": len(acts), "d": acts.d, "ev": quality.sae_reconstruction_metrics(sae, eval_x).explained_variance,
        "sanity_k": sanity["k"].tolist(), "store": str(run.store.root),
    }))
    """
)


def test_local_dataset_forms_load_without_a_hub(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"text": f"entry {i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "d.jsonl", tmp_path / "saved"):
        entries = corpus.load_hf_texts(str(source), "train", "text", 3)
        assert [e.text for e in entries] == ["entry 0", "entry 1", "entry 2"]
    with pytest.raises(ValueError, match="no column 'body'"):
        corpus.load_hf_texts(str(tmp_path / "saved"), "train", "body", 3)
    (tmp_path / "d.xml").write_text("<x/>")
    with pytest.raises(ValueError, match="unknown format"):
        corpus.load_hf_texts(str(tmp_path / "d.xml"), "train", "text", 3)


def test_hub_model_pipeline_runs_offline(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [e.text for e in corpus.load_fortunes()[:3000]]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    build_hub_cache(tmp_path / "hf" / "hub", texts)
    overrides = {
        "lm.name": MODEL,
        "corpus.source": f"hf:{tmp_path / 'corpus'}",
        "corpus.hf_n_texts": 3000,
        "activations.n_tokens": 8192,
        "activations.n_eval_tokens": 2048,
        "activations.batch_size": 512,
        "sae.train_tokens": 8192,
        "runner.address": "",
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "SAE_STUDIES_DATA": str(tmp_path / "data"),
        "PYTHONPATH": os.pathsep.join([str(Path(corpus.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", PIPELINE, json.dumps(overrides)], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-4000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])
    assert result["model_name"] == "pythia-14m" and (result["n_layers"], result["d_model"]) == (6, 128)
    assert (result["rows"], result["d"]) == (8192, 128) and result["sanity_k"] == [4, 8]
    assert result["ev"] > 0.0  # the SAE learned something on the random model's activations
    assert result["store"] == str(tmp_path / "data")
    assert "writes" in out.stdout and "GB to the store" in out.stdout  # the disk estimate came first
    assert not list((tmp_path / "hf" / "hub").glob("datasets--*"))  # nothing was fetched
