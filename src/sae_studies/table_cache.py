"""Tables an analysis computes from a profile's artifacts, kept in the store so that a rerun reads
them instead of recomputing (spliced CE, probes and proxies of SAEs a notebook has already
trained take minutes on the default profile and most of an hour on SmolLM2).

`cached_table(store, profile, name, compute)` stores ``compute()``'s DataFrame as
``data/table/<key>/table.pkl``. The key holds what the table is a function of:

* the whole resolved profile (it fixes every artifact's parameters, and so every SAE, activation
  and model the computation reads) and the code of the whole ``sae_studies`` package with the
  numerical libraries' versions (`Store` keys: it fixes every builder and analysis);
* the source of every cell the Jupyter kernel has run so far, this one included (IPython's
  ``In``): a notebook run from the top in a fresh kernel reads the table, while an edited or
  re-run earlier cell, whose variables the computation may read, recomputes it;
* the code object of ``compute`` (outside a kernel, what tells one script's lambda from another)
  and ``inputs``, for anything else it reads that none of the above fixes (a file outside the
  package, an environment variable);
* pandas' version (the pickle's format).

Coarse on purpose: any change to the package, the profile or the notebook above recomputes; a
served table is never one other code or parameters made. The computation runs under forked
global random states (torch's and numpy's), so the cells after it see the same state whether
the table was computed or read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import CodeType
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import Profile, as_dict
from .store import Store

KIND = "table"
FILE = "table.pkl"
CODE = ("sae_studies",)


def kernel_history() -> list[str] | None:
    """The sources of the cells this IPython kernel has run, in order (None outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or "In" not in shell.user_ns:
        return None
    return [str(cell) for cell in shell.user_ns["In"]]


def code_digest(code: CodeType) -> str:
    """Digest of a function's code object: its bytecode, names and constants, nested code
    objects (a lambda inside it) included; line numbers and file names left out."""
    h = hashlib.sha256()

    def add(c: CodeType) -> None:
        h.update(c.co_code)
        h.update(repr((c.co_names, c.co_varnames, c.co_freevars)).encode())
        for const in c.co_consts:
            if isinstance(const, CodeType):
                add(const)
            elif isinstance(const, frozenset):  # `x in {"a", "b"}`: its repr's order follows the string hash seed
                h.update(repr(sorted(map(repr, const))).encode())
            else:
                h.update(repr(const).encode())

    add(code)
    return h.hexdigest()[:16]


def table_params(profile: Profile, name: str, compute: Callable, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    history = kernel_history()
    return {
        "name": name,
        "profile": as_dict(profile),
        "kernel_history": None if history is None else hashlib.sha256("\x00".join(history).encode()).hexdigest(),
        "compute": code_digest(compute.__code__) if hasattr(compute, "__code__") else repr(compute),
        "inputs": dict(inputs or {}),
        "pandas": pd.__version__,
    }


def cached_table(
    store: Store, profile: Profile, name: str, compute: Callable[[], pd.DataFrame], inputs: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """``compute()``, or the table a run with the same key stored (see the module docstring)."""
    computed = []  # the table, when this call computed it (then it is not read back from disk)

    def build(tmp: Path) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng():
                table = compute()
        finally:
            np.random.set_state(numpy_state)
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"cached_table {name!r}: compute must return a pandas DataFrame; got {type(table).__name__}")
        table.to_pickle(tmp / FILE)
        computed.append(table)
        return {"rows": len(table), "columns": list(map(str, table.columns))}

    art = store.get_or_build(KIND, table_params(profile, name, compute, inputs), build, code=CODE)
    if computed:
        return computed[0]
    print(f"{name}: read from the cache ({art.path})")
    return pd.read_pickle(art.path / FILE)
