"""One device rule for every analysis: compute where the model is, return results on the CPU.

An analysis or study function that evaluates an SAE or a language model moves its inputs to that
model's device (:func:`device_of`, :func:`to_device`), accumulates there, and hands back CPU
tensors or numpy arrays (:func:`to_cpu`, :func:`to_numpy`). No caller has to know where a model
was loaded: activations read from disk (always CPU) can be passed to an SAE on a GPU, and the
tables a notebook builds from the results never hold device tensors.

:func:`check_device` validates a configured device string early, naming the parameter.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["device_of", "to_device", "to_cpu", "to_numpy", "check_device"]


def device_of(obj: object) -> torch.device | None:
    """The device ``obj`` computes on, or None when it does not say.

    Tensors: their device. Modules (SAELens SAEs, TransformerLens models): the device of their
    first parameter or buffer. Objects with a ``device`` attribute (SAELens SAEs, a cut encoder)
    use it; bound methods (``sae.encode``) and ``functools.partial`` objects look at what they
    are bound to; a closure (``lambda x: hier.encode(x, k=3)`` inside a function) at the first
    module or tensor it closes over. A function that holds none (``lambda z: z``) says nothing:
    None, and callers then leave their inputs where they are.
    """
    if isinstance(obj, Tensor):
        return obj.device
    if isinstance(obj, torch.nn.Module):
        for t in obj.parameters():
            return t.device
        for t in obj.buffers():
            return t.device
        cfg_device = getattr(getattr(obj, "cfg", None), "device", None)
        return None if cfg_device is None else torch.device(cfg_device)
    dev = getattr(obj, "device", None)
    if isinstance(dev, (torch.device, str)):
        return torch.device(dev)
    owner = getattr(obj, "__self__", None)
    if owner is not None and owner is not obj:
        return device_of(owner)
    if isinstance(obj, functools.partial):
        for part in (obj.func, *obj.args):
            dev = device_of(part)
            if dev is not None:
                return dev
    for cell in getattr(obj, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, (torch.nn.Module, Tensor)):
            return device_of(value)
    return None


def to_device(x: Tensor, like: object, dtype: torch.dtype | None = None) -> Tensor:
    """``x`` on the device of ``like`` (a tensor, module, bound method, device or device string);
    ``x`` itself when ``like`` names no device or it is there already. ``dtype`` converts too."""
    dev = torch.device(like) if isinstance(like, (str, torch.device)) else device_of(like)
    if dev is None:
        return x if dtype is None else x.to(dtype)
    return x.to(device=dev, dtype=dtype)


def to_cpu(t: Tensor) -> Tensor:
    """A detached CPU tensor (``t`` itself when it is one already and needs no detaching)."""
    return t.detach().cpu()


def to_numpy(t: Tensor | np.ndarray) -> np.ndarray:
    """A numpy array of ``t`` from any device; bfloat16 / float16 become float32 (numpy has no
    bfloat16)."""
    if isinstance(t, np.ndarray):
        return t
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def check_device(name: str, device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` after checking that this machine has it; a ValueError
    naming the parameter ``name`` otherwise (e.g. ``sae.device: cuda`` without a GPU)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}") from err
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"{name} is {device!r} but this machine has no CUDA device; valid here: 'cpu'")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{name} is {device!r} but this machine has {n} CUDA device(s): cuda:0..cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} is {device!r} but MPS is not available here; valid here: 'cpu'")
    return dev
