"""The one dense piece of the sparse SAE path, in the compute precision of the context.

The TopK-family training step (``sparse_topk``, ``hierarchical_topk``, ``kron``) does one dense
matmul, ``sae_in @ W_enc + b_enc`` over the whole dictionary, only to *choose* latents; every
other operation touches the ``k`` selected latents per row. Under a bfloat16 ``torch.autocast``
region (:mod:`sae_studies.precision`; SAETrainer opens one when its ``autocast`` is on) that
matmul runs in bfloat16 — the part of the step that bfloat16 matrix units speed up — and the
pre-activations of the selected latents are then recomputed in float32
(:func:`exact_preacts`, ``O(B k d)`` work), so the values, the loss and every gradient are
float32 and only near-ties in the selection can differ from a float32 step.
"""

from __future__ import annotations

import torch

from sae_studies.precision import compute_dtype
from sae_studies.saes.sparse_decode import SparsePattern

__all__ = ["encoder_preacts", "exact_preacts"]


@torch.no_grad()
def encoder_preacts(owner: object, buffer: str | None, sae_in: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sae_in @ W + b`` -> ``[B, F]`` in the context's compute dtype (no gradient).

    With a ``buffer`` name the result is written into a ``[B, F]`` buffer kept on ``owner`` under
    that attribute (a plain attribute, not in ``state_dict``) and is valid until the next call
    (None: a fresh tensor every call, SAELens' behaviour): a fresh
    tensor this large is ``mmap``-ed and page-faulted anew on every CPU step, which costs a third of
    the matmul (measured ~30 ms into a reused buffer against ~45-60 ms into a new one at B=4096,
    d=192, F=3072). In bfloat16 the operands are cast per call (the weights stay float32).
    """
    dtype = compute_dtype(sae_in.device)
    shape = (sae_in.shape[0], W.shape[1])
    buf = owner.__dict__.get(buffer) if buffer else None
    if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != sae_in.device:
        buf = torch.empty(shape, dtype=dtype, device=sae_in.device)
        if buffer:
            owner.__dict__[buffer] = buf
    if dtype == W.dtype:
        return torch.addmm(b, sae_in, W, out=buf)
    with torch.autocast(device_type=sae_in.device.type, enabled=False):
        return torch.addmm(b.to(dtype), sae_in.to(dtype), W.to(dtype), out=buf)


@torch.no_grad()
def exact_preacts(pattern: SparsePattern, sae_in: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``(sae_in @ W + b)[rows, cols]`` at the entries of ``pattern`` only -> ``[N]``, in ``W``'s
    dtype (float32) whatever the autocast context: a sampled matmul of ``O(N d)`` work."""
    with torch.autocast(device_type=sae_in.device.type, enabled=False):
        vals = pattern.row_dots(sae_in.to(W.dtype), W.t())
        if b is not None:
            vals = vals + b[pattern.cols]
    return vals
