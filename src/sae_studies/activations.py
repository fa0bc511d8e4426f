"""Harvest hook activations to disk once, then stream shuffled batches from them.

`harvest` runs the LM over the first `n_tokens` tokens of a split (non-overlapping windows of
n_ctx) and writes every requested hook into its own artifact (`acts.npy`, float32 [n, d],
appended front to back with plain file writes, plus the token ids and category ids of each row). All hooks that are
not cached yet are filled in one forward pass, which stops after the deepest requested layer.

`ActivationSet.batches` is the data provider SAELens' `SAETrainer` takes: an endless iterator of
float32 [batch_size, d] tensors, reshuffled every pass over the store with a fixed seed.
"""

from __future__ import annotations

import errno
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision
from .feed import row_batches
from .lm import LoadedModel
from .store import Artifact, Store

#: The modules whose code builds this file's artifacts: their version is part of every key.
BUILDER_CODE = ("sae_studies.activations", "sae_studies.lm", "sae_studies.precision")

HOOK_KINDS = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}


def hook_name(layer: int, kind: str = "resid") -> str:
    """`blocks.{layer}.hook_resid_post` and friends; kind is one of HOOK_KINDS."""
    if kind not in HOOK_KINDS:
        raise ValueError(f"unknown hook kind {kind!r}; valid: {sorted(HOOK_KINDS)}")
    return f"blocks.{layer}.{HOOK_KINDS[kind]}"


def check_hooks(model, hooks: list[str]) -> None:
    valid = set(model.hook_dict)
    bad = [h for h in hooks if h not in valid]
    if bad:
        examples = sorted(h for h in valid if h.startswith("blocks.0."))
        raise ValueError(
            f"hook(s) {bad} not in model {model.cfg.model_name!r} ({model.cfg.n_layers} layers); "
            f"valid names are like {examples} for blocks 0..{model.cfg.n_layers - 1}"
        )


def parse_hook(hook: str) -> tuple[int | None, str | None]:
    """``(layer, kind)`` of a hook name: ``blocks.3.hook_mlp_out`` → ``(3, "mlp")``; the kind is
    None for hooks outside HOOK_KINDS and the layer None for hooks outside the blocks."""
    match = re.match(r"blocks\.(\d+)\.(.+)$", hook)
    if not match:
        return None, None
    kinds = {v: k for k, v in HOOK_KINDS.items()}
    return int(match.group(1)), kinds.get(match.group(2))


@dataclass(frozen=True)
class ActivationSet:
    """One hook's harvested activations (memory-mapped) and the tokens they came from."""

    hook: str
    artifact: Artifact

    @cached_property
    def acts(self) -> np.ndarray:
        return np.load(self.artifact.path / "acts.npy", mmap_mode="r")

    @cached_property
    def tokens(self) -> np.ndarray:
        return np.load(self.artifact.path / "tokens.npy")

    @cached_property
    def categories(self) -> np.ndarray:
        return np.load(self.artifact.path / "categories.npy")

    @property
    def n_ctx(self) -> int:
        return int(self.artifact.params["n_ctx"])

    @property
    def key(self) -> str:
        return self.artifact.key

    @property
    def d(self) -> int:
        return self.acts.shape[1]

    def __len__(self) -> int:
        return self.acts.shape[0]

    def tensor(self, n: int | None = None) -> torch.Tensor:
        """The first n rows (all by default) as a float32 tensor in memory."""
        return torch.from_numpy(np.array(self.acts[:n]))

    def batches(self, batch_size: int, seed: int = 0, epochs: float = math.inf) -> Iterator[torch.Tensor]:
        """Shuffled [batch_size, d] batches; each pass over the store is a new permutation.

        Checks batch_size at the call, not at the first batch, so bad input fails before work."""
        n = len(self)
        if batch_size <= 0 or n % batch_size:
            divisors = [b for b in (256, 512, 1024, 2048, 4096, 8192) if n % b == 0]
            raise ValueError(
                f"batch_size {batch_size} does not divide the {n} rows of {self.hook}; choose one that does, e.g. {divisors}"
            )
        steps = math.inf if math.isinf(epochs) else int(epochs * n // batch_size)
        return _shuffled_batches(self.acts, batch_size, np.random.default_rng(seed), steps)


def _shuffled_batches(acts: np.ndarray, batch_size: int, rng: np.random.Generator, steps: float) -> Iterator[torch.Tensor]:
    """The rows of `feed.row_batches` (one permutation per pass, cut into sorted batches) as tensors."""
    for rows in row_batches(len(acts), batch_size, rng, steps):
        yield torch.from_numpy(acts[rows])


def harvest(
    loaded: LoadedModel,
    hooks: list[str],
    n_tokens: int,
    store: Store,
    split: str = "train",
    batch_size: int = 32,
) -> dict[str, ActivationSet]:
    """Activations of `hooks` on the first n_tokens tokens of `split`, one artifact per hook.

    Contexts are `loaded.contexts(split)`: windows of `loaded.n_ctx` stream tokens, with the BOS
    token in front for models that need one (SmolLM2); the BOS position is run but not stored, so
    every stored row is a stream token with its token id and category. The forward runs in
    `loaded.compute_dtype` (bfloat16 autocast or float32); rows are stored as float32 either way,
    and the precision is part of the artifact key."""
    model = loaded.model
    check_hooks(model, hooks)
    if split not in loaded.streams:
        raise ValueError(f"unknown split {split!r}; valid: {sorted(loaded.streams)}")
    n_ctx, skip = loaded.n_ctx, loaded.n_prefix
    stream = loaded.streams[split].contexts(n_ctx)
    available = stream.size
    if n_tokens <= 0 or n_tokens % n_ctx or n_tokens > available:
        raise ValueError(
            f"token budget {n_tokens} for split {split!r}: must be a positive multiple of n_ctx={n_ctx} "
            f"and at most the {available} tokens the split holds"
        )
    contexts = loaded.contexts(split, n_tokens)
    categories = loaded.streams[split].context_categories(n_ctx)
    n_windows = n_tokens // n_ctx
    bos = {} if loaded.bos_token_id is None else {"bos": loaded.bos_token_id}  # embedded keys unchanged
    # the forward's resolved precision; float32 adds nothing, so float32 harvests keep their keys
    dtype = loaded.compute_dtype
    prec = {} if dtype == torch.float32 else {"precision": str(dtype).removeprefix("torch.")}
    params = [
        {
            "lm": loaded.key,
            "tokens": loaded.tokens_key,
            "hook": h,
            "split": split,
            "n_tokens": n_tokens,
            "n_ctx": n_ctx,
            **bos,
            **prec,
        }
        for h in hooks
    ]

    def build(missing_params: list[dict], tmps: list[Path]) -> list[dict]:
        missing = [p["hook"] for p in missing_params]
        layers = [parse_hook(h)[0] for h in missing]
        # stop after the deepest requested block: stop_at_layer = n_layers still skips ln_final and
        # the unembedding, a quarter of the forward pass of the default model
        stop = None if None in layers else max(layers) + 1
        with torch.no_grad():  # one window tells each hook's width (d_model, d_mlp, heads × d_head)
            _, probe = model.run_with_cache(
                torch.as_tensor(contexts[:1], dtype=torch.long), names_filter=missing, stop_at_layer=stop
            )
        check_disk(store.root, harvest_bytes(n_tokens, [probe[h][0, 0].numel() for h in missing]), f"harvesting {missing}")
        outs = {h: _NpyWriter(tmp / "acts.npy", (n_tokens, probe[h][0, 0].numel())) for h, tmp in zip(missing, tmps)}

        def writer(act: torch.Tensor, hook) -> None:
            act = act[:, skip:] if skip else act  # the BOS position is not a stream token
            outs[hook.name].append(act.detach().reshape(-1, act.shape[-1]).float().cpu().numpy())

        with torch.no_grad(), precision.autocast(dtype, model.cfg.device):
            for i in tqdm(range(0, n_windows, batch_size), desc=f"harvesting {len(missing)} hook(s)"):
                batch = torch.as_tensor(contexts[i : min(i + batch_size, n_windows)], dtype=torch.long, device=model.cfg.device)
                model.run_with_hooks(batch, fwd_hooks=[(h, writer) for h in missing], stop_at_layer=stop)
        summaries = []
        for h, tmp in zip(missing, tmps):
            outs[h].close()
            np.save(tmp / "tokens.npy", stream[:n_windows].reshape(-1))
            np.save(tmp / "categories.npy", categories[:n_windows].reshape(-1))
            acts = np.load(tmp / "acts.npy", mmap_mode="r")
            sample = np.asarray(acts[:: max(1, n_tokens // 16384)], dtype=np.float64)
            summaries.append({"d": int(acts.shape[1]), "mean_norm": float(np.linalg.norm(sample, axis=1).mean())})
            del acts
        outs.clear()
        return summaries

    arts = store.get_or_build_many("activations", params, build, code=BUILDER_CODE)
    return {h: ActivationSet(h, art) for h, art in zip(hooks, arts)}


def harvest_bytes(n_tokens: int, widths: list[int]) -> int:
    """Bytes a harvest writes: per hook, float32 activations ``[n_tokens, d]`` plus the int32
    token id and int8 category id of every row (the .npy headers aside)."""
    return sum(n_tokens * (4 * d + 4 + 1) for d in widths)


def check_disk(root: Path, need: int, what: str) -> None:
    """Print what a write will take, and stop before it starts when the disk holding `root` (the
    store) has less free space (a gpt2-scale harvest is ~150 GB)."""
    free = shutil.disk_usage(root).free
    print(f"{what}: writes {need / 1e9:.2f} GB to the store {root} ({free / 1e9:.1f} GB free)")
    if need > free:
        raise OSError(
            errno.ENOSPC,
            f"{what} needs {need / 1e9:.2f} GB ({need:,} bytes) but the disk of the store {root} has "
            f"{free / 1e9:.2f} GB ({free:,} bytes) free: free space, point SAE_STUDIES_DATA at a larger disk, "
            "or lower activations.n_tokens",
        )


class _NpyWriter:
    """A float32 ``[n, d]`` ``.npy`` file filled front to back by ``append``.

    Plain ``write`` calls into the page cache, rather than assignments into a fresh memmap:
    filling a new file-backed mapping costs a page fault per 4 KiB on top of the copy, which
    made harvesting all hooks of the default model ~40% slower than a plain forward pass.
    """

    def __init__(self, path: Path, shape: tuple[int, int]):
        self.shape = shape
        self.rows = 0
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)

    def append(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"cannot append {rows.shape} at row {self.rows} of a {self.shape} array")
        self.file.write(np.ascontiguousarray(rows, dtype=np.float32).data)
        self.rows += len(rows)

    def close(self) -> None:
        self.file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.file.name}: wrote {self.rows} of {self.shape[0]} rows")


def activation_statistics(acts: ActivationSet, n_rows: int = 65_536) -> dict[str, float]:
    """Summary of one hook's activations (float64, on the first n_rows rows):
    mean and std of the norm ‖x‖; `mean_share` = ‖E x‖² / E‖x‖², the part of the second moment
    a constant vector carries; `participation_ratio` = (Σλ)² / Σλ² over the covariance's
    eigenvalues λ, an effective dimension between 1 and d; `dims_90` = the number of principal
    directions that hold 90 % of the variance (a few massive dimensions, as in real LMs, make the
    participation ratio small without making the space small)."""
    x = acts.tensor(min(n_rows, len(acts))).double()
    norms = x.norm(dim=-1)
    mean = x.mean(0)
    eig = torch.linalg.eigvalsh(torch.cov(x.T)).clamp_min(0)
    return {
        "hook": acts.hook,
        "d": acts.d,
        "mean_norm": norms.mean().item(),
        "std_norm": norms.std().item(),
        "mean_share": (mean.pow(2).sum() / x.pow(2).sum(-1).mean()).item(),
        "participation_ratio": (eig.sum() ** 2 / eig.pow(2).sum()).item(),
        "dims_90": int((torch.cumsum(eig.flip(0), 0) / eig.sum() < 0.9).sum()) + 1,
    }
