"""Compute precision as a context: which dtype a step computes in, and the autocast around it.

A profile names a precision (`sae.dtype`, `lm.compute_dtype`): ``float32``, ``bfloat16`` or
``auto``. :func:`resolve` turns the name into the dtype this machine will actually use —
``auto`` is bfloat16 on CUDA and on a CPU with bfloat16 matrix instructions (AMX-BF16 or
AVX512-BF16), float32 elsewhere; bfloat16 asked for on a CPU without them runs in float32 with a
warning, since oneDNN would emulate it slower than float32. The *resolved* name goes into every
artifact key, so a machine with bfloat16 and one without never share an artifact silently.

:func:`autocast` is the context the work runs under: ``torch.autocast`` for bfloat16 (weights,
optimizer state and the data stay float32; matmuls inside run in bfloat16), nothing for float32.
Code that must stay exact (the sparse autograd Functions, loss and EV reductions) declares it
with :func:`float32_forward` / :func:`autocast_backward`, the ``torch.amp.custom_fwd`` /
``custom_bwd`` pair for both CPU and CUDA autocast.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = [
    "PRECISIONS",
    "cpu_has_bf16",
    "resolve",
    "resolved_name",
    "autocast",
    "compute_dtype",
    "float32_forward",
    "autocast_backward",
]

PRECISIONS = ("float32", "bfloat16", "auto")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: /proc/cpuinfo flags of CPUs whose bfloat16 matmuls beat float32 (oneDNN uses them).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16).

    Read from the ``flags`` line of ``/proc/cpuinfo``; where that file does not exist (macOS,
    Windows), oneDNN's own check ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``.
    """
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return any(f in flags for f in BF16_CPU_FLAGS)
        return False
    try:  # pragma: no cover - not Linux
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover
        return False


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def resolve(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype for precision ``name`` on ``device``.

    ``float32`` -> float32. ``bfloat16`` -> bfloat16 on CUDA or a bfloat16-capable CPU; on
    another CPU float32 with a warning saying why. ``auto`` -> bfloat16 where it is fast (CUDA,
    AMX-BF16 / AVX512-BF16 CPUs), float32 elsewhere, silently. Unknown names raise ValueError.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision (dtype) must be one of {list(PRECISIONS)}; got {name!r}")
    if name == "float32":
        return torch.float32
    kind = _device_type(device)
    capable = kind == "cuda" or (kind == "cpu" and cpu_has_bf16())
    if capable:
        return torch.bfloat16
    if name == "bfloat16":
        warnings.warn(
            f"dtype='bfloat16' requested on device {str(device)!r}, which has no bfloat16 matrix "
            f"instructions (CPU flags {list(BF16_CPU_FLAGS)} absent): computing in float32 instead, "
            "since emulated bfloat16 would be slower than float32",
            RuntimeWarning,
            stacklevel=2,
        )
    return torch.float32


def resolved_name(name: str, device: str | torch.device = "cpu") -> str:
    """``resolve`` as a name (``"float32"`` / ``"bfloat16"``): what artifact keys record."""
    return str(resolve(name, device)).removeprefix("torch.")


def autocast(dtype: torch.dtype | str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """The context a computation in ``dtype`` runs under: ``torch.autocast(device type, dtype)``
    for bfloat16, a no-op for float32. ``dtype`` may be a resolved dtype or a precision name
    (resolved here, with :func:`resolve`'s fallback)."""
    if isinstance(dtype, str):
        dtype = resolve(dtype, device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype != torch.bfloat16:
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16; got {dtype}")
    return torch.autocast(device_type=_device_type(device), dtype=dtype)


def compute_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype matmuls on ``device`` run in right now: the autocast dtype inside an enabled
    ``torch.autocast`` region of that device type, float32 outside one. Code with its own
    kernels (the sparse SAE path) reads the context here instead of taking a flag."""
    kind = _device_type(device)
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return torch.float32


def float32_forward(fwd: Callable) -> Callable:
    """Declare a custom autograd Function's ``forward`` as float32 under autocast: inside a CPU or
    CUDA autocast region its floating inputs are cast to float32 and it runs with autocast off
    (``torch.amp.custom_fwd(cast_inputs=torch.float32)`` for both device types). Outside autocast
    it runs unchanged."""
    fwd = torch.amp.custom_fwd(fwd, device_type="cpu", cast_inputs=torch.float32)
    return torch.amp.custom_fwd(fwd, device_type="cuda", cast_inputs=torch.float32)


def autocast_backward(bwd: Callable) -> Callable:
    """The matching ``backward`` declaration (``torch.amp.custom_bwd`` for CPU and CUDA): the
    backward runs with the autocast state its forward ran with (off, after float32_forward)."""
    bwd = torch.amp.custom_bwd(bwd, device_type="cpu")
    return torch.amp.custom_bwd(bwd, device_type="cuda")
