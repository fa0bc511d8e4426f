"""Input checks shared by every module: each names the parameter and the values it allows.

Bad parameters fail early, before any work, with a message a user can act on. Every check
returns the (normalised) value, so callers write `k = check_int("k", k, 1, d_sae)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def check_int(name: str, value: Any, lo: int = 1, hi: int | None = None, hint: str = "") -> int:
    """An integer in ``lo..hi`` (``hi=None``: no upper bound); bools are not integers."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= lo
    ok = ok and (hi is None or value <= hi)
    if not ok:
        allowed = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        raise ValueError(f"{name} must be {allowed}{hint}; got {name}={value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """A positive integer (message: "<name> must be a positive integer")."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer; got {name}={value!r}")
    return int(value)


def check_unit_interval(name: str, value: Any, *, open_low: bool = True, low: float = 0.0) -> float:
    """A number in ``(low, 1]`` (``[low, 1]`` when ``open_low`` is False)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
    if ok:
        v = float(value)
        ok = (v > low if open_low else v >= low) and v <= 1.0
    if not ok:
        interval = f"({low:g}, 1]" if open_low else f"[{low:g}, 1]"
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}")
    return float(value)


def check_tau(tau: Any, name: str = "tau") -> float:
    """A cosine threshold in (0, 1]."""
    return check_unit_interval(name, tau)


def check_cosine_threshold(name: str, value: Any) -> float:
    """A cosine threshold in [-1, 1] (flow-graph cuts may be any cosine)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not -1.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a cosine in [-1, 1]; got {value!r}")
    return float(value)


def check_probability(name: str, value: Any) -> float:
    """A probability in [0, 1]."""
    return check_unit_interval(name, value, open_low=False)


def check_sorted_ints(name: str, values: Sequence[Any], lo: int = 1, hi: int | None = None) -> list[int]:
    """A non-empty, strictly increasing list of integers in ``lo..hi``."""
    values = list(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty, strictly increasing list of integers; got []")
    for v in values:
        check_int(f"each entry of {name}", v, lo, hi)
    if any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing (sorted, no repeats); got {values}")
    return [int(v) for v in values]


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")
    return value


def check_mask(name: str, mask: Any, size: int) -> Tensor:
    """A boolean tensor of shape ``[size]`` (one entry per latent)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (size,):
        got = f"{mask.dtype} {list(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a boolean mask of shape [{size}]; got {got}")
    return mask


def check_masks(name: str, masks: Mapping[str, Any], size: int) -> dict[str, Tensor]:
    return {key: check_mask(f"{name}[{key!r}]", m, size) for key, m in masks.items()}


def check_matrix(name: str, x: Any) -> Tensor:
    """A floating-point ``[n, d]`` tensor with at least one row and one column."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [n, d]; got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d] (one row per vector); got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {list(x.shape)}")
    return x


def check_same_d(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same input size d (dim 1); got "
            f"{name_a} {list(a.shape)} and {name_b} {list(b.shape)}"
        )


def check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")


def tensor_digest(*tensors: Tensor) -> str:
    """A short content hash of tensors (float32 bytes), for artifact keys of derived inputs."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]
