"""Sparse building blocks shared by every TopK-family SAE in this package.

An encoder (dense TopK, BatchTopK, HierarchicalTopK, a Kronecker-factorised one, ...) chooses,
per input row, a few latents and hands over ``(values, pattern)``: the differentiable values of
the selected latents (flat, ``[N]``) and a :class:`SparsePattern` saying which row/latent each
value belongs to. The pieces here then do the rest without ever touching the dense
``[B, F]`` activation matrix:

* :func:`sparse_decode` — ``x_hat = b_dec + sum_i values_i * W_dec[latent_i]`` (one
  ``embedding_bag``), with a backward that computes the value gradients as sampled dot products
  and the decoder gradient only for the selected rows.
* :func:`selected_preacts` — the gradient path into a linear encoder ``(x - b_dec) @ W_enc + b_enc``
  at the selected latents only (its forward takes the values already computed by the dense
  encoder forward).
* :func:`prefix_mse_loss` — the nested-prefix loss of HierarchicalTopK / Multi-TopK, computed
  with a suffix recurrence over the levels (``O(B K d)`` work) in row chunks, so the
  ``B x K x d`` tensor of prefix reconstructions is never built.

* :func:`row_norms` — the decoder-row norms ``||W_dec_f||`` that rescale TopK activations,
  with a one-pass backward.

All four are ``torch.autograd.Function``s tested against plain autograd. Each is declared
float32 for autocast (:func:`sae_studies.precision.float32_forward`): inside a bfloat16 autocast
region its inputs are cast to float32 and it runs as outside one — they are ``O(B k d)`` work,
and their sums (decodes, decoder gradients, the prefix loss) stay float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from sae_studies.precision import autocast_backward, float32_forward

__all__ = [
    "SparsePattern",
    "sparse_decode",
    "selected_preacts",
    "prefix_mse_loss",
    "prefix_level_weights",
    "row_norms",
]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor without torch's expected warnings (CSR support "in beta", invariant checks
    off), silenced here only, not process-wide."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


@contextmanager
def single_thread(*tensors: torch.Tensor) -> Iterator[None]:
    """Run a block on one intra-op thread when it works on CPU tensors.

    ATen's parallel CPU sort is pathological on a busy 2-core machine: sorting 131k latent
    indices takes ~190 ms on two threads against ~3 ms on one. Every sort here is small
    (O(B k) entries), so it runs single-threaded. The thread count is process-wide state that
    only CPU kernels read: when every tensor given lives on another device (a GPU) it is left
    alone. With no tensors the block is taken to be CPU work.
    """
    n = torch.get_num_threads()
    if n == 1 or (tensors and all(t.device.type != "cpu" for t in tensors)):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def sort_small(t: torch.Tensor, dim: int = -1, stable: bool = False):
    """``torch.sort``, on one thread for a CPU tensor (see :func:`single_thread`)."""
    with single_thread(t):
        return torch.sort(t, dim=dim, stable=stable)


class SparsePattern:
    """Which latents are selected in which rows: ``N`` entries, sorted by row.

    ``rows[n]`` is the input row (0..B-1) and ``cols[n]`` the latent (0..F-1) of entry ``n``.
    Entries must be grouped by row in ascending row order (TopK and BatchTopK selections are);
    columns inside a row may be in any order. The structures each operation needs (CSR row
    pointers, the transposed latent-major ordering) are built on first use and cached, so one
    pattern is shared by the forward and the backward of every Function that uses it.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_latents: int):
        if rows.shape != cols.shape or rows.ndim != 1:
            raise ValueError("rows and cols must be 1-D tensors of the same length")
        self.rows = rows
        self.cols = cols
        self.n_rows = int(n_rows)
        self.n_latents = int(n_latents)
        self._crow: torch.Tensor | None = None
        self._transpose: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._row_sorted: tuple[torch.Tensor, torch.Tensor] | None = None
        self.k: int | None = None  # entries per row when constant
        self._sorted_flat = False  # entries sorted by (row, col) and unique

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_topk(cls, indices: torch.Tensor, n_latents: int) -> SparsePattern:
        """From ``[B, k]`` latent indices (k per row); entry ``b*k + i`` is ``indices[b, i]``."""
        if indices.ndim != 2:
            raise ValueError(f"indices must be [B, k], got shape {tuple(indices.shape)}")
        B, k = indices.shape
        rows = torch.arange(B, device=indices.device).repeat_interleave(k)
        pat = cls(rows, indices.reshape(-1), B, n_latents)
        pat.k = k
        pat._crow = torch.arange(0, B * k + 1, max(k, 1), device=indices.device)[: B + 1]
        if k == 0:
            pat._crow = torch.zeros(B + 1, dtype=torch.long, device=indices.device)
        return pat

    @classmethod
    def from_flat(cls, flat_index: torch.Tensor, n_rows: int, n_latents: int) -> SparsePattern:
        """From positions in the flattened ``[B, F]`` matrix (any order; sorted here)."""
        flat_index, _ = sort_small(flat_index)
        pat = cls(flat_index // n_latents, flat_index % n_latents, n_rows, n_latents)
        pat._sorted_flat = True
        return pat

    # ---- cached structure ---------------------------------------------------------------
    @property
    def nnz(self) -> int:
        return self.rows.numel()

    @property
    def crow(self) -> torch.Tensor:
        """CSR row pointers ``[B+1]`` of the row-major pattern: ``crow[b]`` = entries in rows
        before ``b``, a ``searchsorted`` on the sorted rows (``bincount`` would wait on the GPU
        for its output size)."""
        if self._crow is None:
            bounds = torch.arange(self.n_rows + 1, device=self.rows.device, dtype=self.rows.dtype)
            self._crow = torch.searchsorted(self.rows, bounds)
        return self._crow

    @property
    def transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(order, t_crow, t_rows)``: entries sorted by latent, as a CSR of shape ``[F, B]``."""
        if self._transpose is None:
            sorted_cols, order = sort_small(self.cols, stable=True)
            bounds = torch.arange(self.n_latents + 1, device=self.cols.device, dtype=sorted_cols.dtype)
            t_crow = torch.searchsorted(sorted_cols, bounds)  # no host sync, unlike bincount
            self._transpose = (order, t_crow, self.rows[order])
        return self._transpose

    @property
    def row_sorted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cols_sorted, perm)``: the columns sorted within each row, ``cols_sorted[n] =
        cols[perm[n]]`` (entries stay grouped by row). cuSPARSE kernels assume sorted columns in
        a CSR row; TopK selections (``topk(sorted=False)``) and value-ordered patterns are not."""
        if self._row_sorted is None:
            if self._sorted_flat:
                self._row_sorted = (self.cols, torch.arange(self.nnz, device=self.cols.device))
            elif self.k is not None and self.k > 0:
                B, k = self.n_rows, self.k
                cols2, perm = sort_small(self.cols.view(B, k), dim=-1)
                offsets = torch.arange(0, B * k, k, device=self.cols.device).unsqueeze(1)
                self._row_sorted = (cols2.reshape(-1), (perm + offsets).reshape(-1))
            else:  # rows are grouped in order: sorting by (row, col) keeps them so
                key = self.rows * self.n_latents + self.cols
                _, perm = sort_small(key)
                self._row_sorted = (self.cols[perm], perm)
        return self._row_sorted

    # ---- the four primitive operations --------------------------------------------------
    def decode(self, weights: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``out[b] = sum_{n in row b} weights[n] * W[cols[n]]`` -> ``[B, d]``."""
        return F.embedding_bag(
            self.cols,
            W,
            self.crow,
            mode="sum",
            per_sample_weights=weights.to(W.dtype),
            include_last_offset=True,
        )

    def row_dots(self, G: torch.Tensor, W: torch.Tensor, sorted_columns: bool | None = None) -> torch.Tensor:
        """``out[n] = G[rows[n]] . W[cols[n]]`` -> ``[N]`` (a sampled dense-dense matmul).

        ``torch.sparse.sampled_addmm`` on a CSR pattern. The CPU kernel takes the columns of a
        row in any order; cuSPARSE's SDDMM assumes them sorted, so on CUDA (``sorted_columns``
        None: sorted exactly when ``G`` is on a GPU) the pattern's :attr:`row_sorted` columns are
        used and the result is put back in entry order. Other devices take a gathered dot product.
        """
        if self.nnz == 0:
            return G.new_zeros(0)
        if G.device.type not in ("cpu", "cuda"):
            return (G[self.rows] * W[self.cols]).sum(-1)  # pragma: no cover
        if sorted_columns is None:
            sorted_columns = G.device.type == "cuda"
        if not sorted_columns:
            mask = _csr(self.crow, self.cols, G.new_zeros(self.nnz), (self.n_rows, self.n_latents))
            return torch.sparse.sampled_addmm(mask, G, W.t(), beta=0.0, alpha=1.0).values()
        cols, perm = self.row_sorted
        mask = _csr(self.crow, cols, G.new_zeros(self.nnz), (self.n_rows, self.n_latents))
        vals = torch.sparse.sampled_addmm(mask, G, W.t(), beta=0.0, alpha=1.0).values()
        return torch.empty_like(vals).index_copy_(0, perm, vals)

    def scatter_rows(self, weights: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``out[f] = sum_{n: cols[n]=f} weights[n] * Y[rows[n]]`` -> ``[F, d]``.

        One weighted ``embedding_bag`` over the latent-major ordering (a bag per latent): the
        product of the transposed pattern with ``Y`` without a sparse matmul kernel. Measured on
        one thread, B=4096, k=32, d=576, F=4608: 30 ms against 106 ms for ``csr @ Y``
        (158 / 318 ms at d=768, F=16384, k=64), same result to float32 rounding.
        """
        order, t_crow, t_rows = self.transpose
        if self.nnz == 0:
            return Y.new_zeros(self.n_latents, Y.shape[1])
        return F.embedding_bag(
            t_rows, Y, t_crow, mode="sum", per_sample_weights=weights[order].to(Y.dtype), include_last_offset=True
        )

    def scatter_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """``out[f] = sum_{n: cols[n]=f} weights[n]`` -> ``[F]``."""
        out = weights.new_zeros(self.n_latents)
        return out.index_add_(0, self.cols, weights)

    def to_sparse_coo(self, values: torch.Tensor) -> torch.Tensor:
        """The ``[B, F]`` matrix as a coalesced sparse COO tensor.

        This is what SAETrainer's firing bookkeeping gets: on a coalesced COO tensor its
        ``.bool().float().sum(-2)`` / ``.sum(0)`` cost ~50 ms at B=4096, F=3072, k=32 against
        ~80 ms uncoalesced and ~90 ms for a dense tensor (~320 / 520 / 530 ms at F=16384, k=64).
        Columns are sorted within each row here (one ``[B, k]`` row sort) when needed.
        """
        rows, cols = self.rows, self.cols
        if self.k is not None and self.k > 1:
            B, k = self.n_rows, self.k
            cols2, perm = sort_small(cols.view(B, k), dim=-1)
            cols = cols2.reshape(-1)
            values = values.view(B, k).gather(1, perm).reshape(-1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
            return torch.sparse_coo_tensor(
                torch.stack([rows, cols]),
                values,
                (self.n_rows, self.n_latents),
                is_coalesced=self.k is not None or self._sorted_flat,
                check_invariants=False,
            )

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(self.n_rows, self.n_latents)
        out[self.rows, self.cols] = values
        return out


# ---------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------
class _SparseDecode(torch.autograd.Function):
    @staticmethod
    @float32_forward
    def forward(  # type: ignore[override]
        ctx: Any,
        values: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor | None,
        pattern: SparsePattern,
    ) -> torch.Tensor:
        out = pattern.decode(values, W_dec)
        if b_dec is not None:
            out = out + b_dec
        ctx.pattern = pattern
        ctx.has_bias = b_dec is not None
        ctx.save_for_backward(values, W_dec)
        return out

    @staticmethod
    @autocast_backward
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        values, W_dec = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        grad_out = grad_out.contiguous()
        g_values = g_W = g_b = None
        if ctx.needs_input_grad[0]:
            g_values = pattern.row_dots(grad_out, W_dec).to(values.dtype)
        if ctx.needs_input_grad[1]:
            g_W = pattern.scatter_rows(values, grad_out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = grad_out.sum(0)
        return g_values, g_W, g_b, None


def sparse_decode(
    values: torch.Tensor,
    pattern: SparsePattern,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x_hat[b] = b_dec + sum_{n in row b} values[n] * W_dec[cols[n]]`` -> ``[B, d]``.

    ``values`` is flat ``[N]`` (a ``[B, k]`` tensor is flattened). Gradients: values (sampled
    dot products with the output gradient), ``W_dec`` (only the selected rows are non-zero;
    returned dense), ``b_dec``.
    """
    return _SparseDecode.apply(values.reshape(-1), W_dec, b_dec, pattern)


# ---------------------------------------------------------------------------------------
# row norms
# ---------------------------------------------------------------------------------------
class _RowNorms(torch.autograd.Function):
    @staticmethod
    @float32_forward
    def forward(ctx: Any, W: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n = torch.linalg.vector_norm(W, dim=-1)
        ctx.save_for_backward(W, n)
        return n

    @staticmethod
    @autocast_backward
    def backward(ctx: Any, g: torch.Tensor):  # type: ignore[override]
        W, n = ctx.saved_tensors
        # d||w||/dw = w / ||w||, taken as 0 for a zero row (autograd's norm subgradient)
        scale = torch.where(n > 0, g / n.clamp_min(torch.finfo(n.dtype).tiny), 0.0)
        return W * scale.unsqueeze(-1)


def row_norms(W: torch.Tensor) -> torch.Tensor:
    """``||W[f]||_2`` for every row -> ``[F]``; same values and gradient as
    ``W.norm(dim=-1)``, but the backward is one ``[F, d]`` multiply instead of autograd's three
    passes (divide, mask zero norms, multiply): ~70 ms of a ~1.8 s step at d=768, F=16384."""
    return _RowNorms.apply(W)


# ---------------------------------------------------------------------------------------
# encoder pre-activations at the selected latents
# ---------------------------------------------------------------------------------------
class _SelectedPreacts(torch.autograd.Function):
    @staticmethod
    @float32_forward
    def forward(  # type: ignore[override]
        ctx: Any,
        values: torch.Tensor,
        sae_in: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor | None,
        b_dec: torch.Tensor | None,
        pattern: SparsePattern,
    ) -> torch.Tensor:
        ctx.pattern = pattern
        ctx.has_b_enc = b_enc is not None
        ctx.has_b_dec = b_dec is not None
        ctx.save_for_backward(sae_in, W_enc)
        return values.clone()

    @staticmethod
    @autocast_backward
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        sae_in, W_enc = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        g_sae_in = g_W = g_b_enc = g_b_dec = None
        need_col_sums = (ctx.has_b_enc and ctx.needs_input_grad[3]) or (ctx.has_b_dec and ctx.needs_input_grad[4])
        col = pattern.scatter_weights(grad) if need_col_sums else None
        if ctx.needs_input_grad[2]:
            # dL/dW_enc = sae_in^T @ G with G the sparse [B, F] gradient on the pre-activations
            g_W = pattern.scatter_rows(grad, sae_in).t()
        if ctx.has_b_enc and ctx.needs_input_grad[3]:
            g_b_enc = col
        if ctx.has_b_dec and ctx.needs_input_grad[4]:
            # sae_in = x - b_dec: dL/db_dec = -sum_b G[b] @ W_enc^T = -W_enc @ colsum(G)
            g_b_dec = -(W_enc @ col.to(W_enc.dtype))
        if ctx.needs_input_grad[1]:
            g_sae_in = pattern.decode(grad, W_enc.t().contiguous())
        return None, g_sae_in, g_W, g_b_enc, g_b_dec, None


def selected_preacts(
    values: torch.Tensor,
    pattern: SparsePattern,
    sae_in: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor | None = None,
    b_dec: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attach the encoder gradient to pre-activations computed by a dense no-grad forward.

    Returns ``values`` (flat ``[N]``: the already computed pre-activations
    ``(sae_in @ W_enc + b_enc)[rows, cols]``) as a differentiable function of ``W_enc``,
    ``b_enc`` and — when ``b_dec`` is given, meaning ``sae_in = x - b_dec`` — of ``b_dec``.
    The backward touches only the selected latents: ``dW_enc = sae_in^T @ G`` with ``G`` the
    sparse gradient. ``sae_in`` gets a gradient only if it requires one itself.
    """
    return _SelectedPreacts.apply(values.reshape(-1), sae_in, W_enc, b_enc, b_dec, pattern)


# ---------------------------------------------------------------------------------------
# nested-prefix loss (HierarchicalTopK, Multi-TopK)
# ---------------------------------------------------------------------------------------
def prefix_level_weights(K: int, levels: list[int] | None = None, weights: list[float] | None = None) -> torch.Tensor:
    """Weight ``w[j-1]`` of prefix level ``j`` (1..K): uniform ``1/|J|`` over ``levels``
    (all of 1..K by default), or the given ``weights`` for the given ``levels``."""
    levels = list(range(1, K + 1)) if levels is None else list(levels)
    w = torch.zeros(K, dtype=torch.float64)
    if weights is None:
        weights = [1.0 / len(levels)] * len(levels)
    for j, wj in zip(levels, weights, strict=True):
        w[j - 1] = wj
    return w


#: The prefix loss walks its levels in row chunks of ``_PREFIX_ROWS`` rows on
#: ``_PREFIX_WORKERS`` Python threads, each running single-threaded ATen ops (the ops release
#: the GIL). Two-thread ATen ops of this size lose most of their time synchronising on a busy
#: two-core machine (measured: 6.8 s two-threaded vs 1.6 s single-threaded for the old
#: Gram-based loss at B=4096, d=768, K=32 under load ~7); one op stream per core does not.
_PREFIX_WORKERS = 2
_PREFIX_ROWS = 192


def _prefix_chunks(device: torch.device, B: int, d: int, L: int, chunk_elems: int) -> tuple[int, int, int]:
    """``(rows per chunk, levels per block, worker threads)`` of the prefix loss on ``device``.

    CPU: chunks of ``_PREFIX_ROWS`` rows on ``_PREFIX_WORKERS`` Python threads (see there).
    Elsewhere (a GPU): one chunk of all ``B`` rows on the calling thread, so each level costs a
    few kernels over the whole batch instead of ``B / 192`` launches of tiny ones. Either way a
    block of levels holds at most ``chunk_elems`` elements (at least one level)."""
    on_cpu = device.type == "cpu"
    n_rows = max(1, min(B, _PREFIX_ROWS, int(chunk_elems // d))) if on_cpu else max(1, B)
    n_lev = max(1, min(max(L, 1), int(chunk_elems // (n_rows * d))))
    n_workers = _PREFIX_WORKERS if on_cpu and B >= 2 * n_rows else 1
    return n_rows, n_lev, n_workers


class _PrefixLoss(torch.autograd.Function):
    """``loss = (1/B) sum_b sum_j w_j ||r_j||^2`` with ``r_j = b - x + sum_{t<=j} v_t e_t``.

    The suffix recurrence (linear in ``K``), with ``r_j = r_{j-1} + v_j e_j``:
      * ``r_K`` for all rows comes from one weighted decode (``embedding_bag``);
      * per chunk of ``n`` rows, walking ``j = K..1`` in blocks of levels (the block's decoder
        rows gathered level-major into a ``[c, n, d]`` buffer): ``S_j = S_{j+1} + w_j r_j``,
        ``D_j = e_j . S_j``, ``r_{j-1} = r_j - v_j e_j`` (the previous residual is
        reconstructed, nothing is stored per level), and ``v_j S_j`` written over ``e_j`` for
        one ``index_add_`` into the decoder gradient per block;
    so ``dL/dv_j = (2/B) D_j``, ``dL/de_j = (2/B) v_j S_j``, ``dL/db = (2/B) sum_b S_1``,
    ``dL/dx = -(2/B) S_1`` and ``loss_b = S_1 . (b - x) + sum_j v_j D_j`` (``sum_j w_j r_j . r_j``
    telescopes into the suffix sums). Levels past the last non-zero weight are skipped. Work
    ``O(B K d)``; extra memory ``O(B (d + K))`` plus ``chunk_elems`` per worker thread.
    Loss and all gradients are computed in the forward when a gradient is needed; the
    backward only scales them.
    """

    @staticmethod
    @float32_forward
    def forward(  # type: ignore[override]
        ctx: Any,
        values: torch.Tensor,  # [B, K], values in rank order (rank 1 first)
        W_dec: torch.Tensor,  # [F, d]
        b_dec: torch.Tensor,  # [d]
        target: torch.Tensor,  # [B, d]
        level_weights: torch.Tensor,  # [K]
        pattern: SparsePattern,  # from_topk(indices [B, K])
        chunk_elems: int,
    ) -> torch.Tensor:
        B, K = values.shape
        d = W_dec.shape[1]
        dtype = W_dec.dtype
        wl = [float(t) for t in level_weights.tolist()]  # a host sync unless the weights are on the CPU
        last = max((j for j in range(K) if wl[j] != 0.0), default=-1)  # S_j = 0 beyond it
        need_grad = any(ctx.needs_input_grad[:4])

        base = (b_dec.unsqueeze(0) - target).to(dtype)  # r_0, [B, d]
        D = values.new_zeros(B, K, dtype=dtype)  # e_j . S_j
        grad_W = torch.zeros_like(W_dec) if need_grad and ctx.needs_input_grad[1] else None
        idx = pattern.cols.view(B, K)
        vals = values.detach().to(dtype)
        L = last + 1  # levels that matter
        # r_L for every row in one (multi-threaded) weighted decode; each chunk then walks its
        # levels backwards and overwrites its rows of this buffer with S_1.
        if L == K:
            S1 = pattern.decode(vals.reshape(-1), W_dec)
        elif L > 0:
            S1 = SparsePattern.from_topk(idx[:, :L], pattern.n_latents).decode(vals[:, :L].reshape(-1), W_dec)
        else:
            S1 = torch.zeros_like(base)
        S1.add_(base)
        n_rows, n_lev, n_workers = _prefix_chunks(W_dec.device, B, d, L, chunk_elems)
        n_workers = n_workers if L > 0 else 1
        # One decoder-gradient buffer per worker, summed in worker order after they join: a shared
        # buffer took the workers' blocks in whichever order the threads reached it, so training was
        # not bit-reproducible (float addition does not commute in rounding).
        parts = [grad_W] + [None if grad_W is None else torch.zeros_like(W_dec) for _ in range(n_workers - 1)]

        @torch.no_grad()  # grad mode is thread-local: off in the worker threads too
        def work(lo: int, hi: int, grad_W: torch.Tensor | None) -> None:
            nb = min(n_rows, hi - lo)
            buf = W_dec.new_empty(n_lev * nb * d)
            S = W_dec.new_empty(nb * d)
            for s in range(lo, hi, nb):
                e = min(hi, s + nb)
                n = e - s
                iT = idx[s:e, :L].t()  # [L, n], level-major
                vT = vals[s:e, :L].t().unsqueeze(-1)  # [L, n, 1]
                Dt = D[s:e].t()
                r = S1[s:e]  # r_L, walked down to r_1, then replaced by S_1
                Sc = S[: n * d].view(n, d).zero_()
                for hi_l in range(L, 0, -n_lev):
                    lo_l = max(0, hi_l - n_lev)
                    c = hi_l - lo_l
                    ib = iT[lo_l:hi_l].reshape(-1)
                    E = torch.index_select(W_dec, 0, ib, out=buf[: c * n * d].view(c * n, d))
                    E = E.view(c, n, d)
                    for t in range(c - 1, -1, -1):
                        j = lo_l + t
                        if wl[j] != 0.0:
                            Sc.add_(r, alpha=wl[j])
                        Dt[j] = torch.linalg.vecdot(E[t], Sc)
                        if j > 0:
                            r.addcmul_(E[t], vT[j], value=-1.0)
                        if grad_W is not None:
                            torch.mul(Sc, vT[j], out=E[t])
                    if grad_W is not None:
                        grad_W.index_add_(0, ib, E.view(c * n, d))
                r.copy_(Sc)

        with single_thread(W_dec):
            if n_workers == 1:
                work(0, B, grad_W)
            else:
                bounds = [B * i // n_workers for i in range(n_workers + 1)]
                with ThreadPoolExecutor(n_workers) as ex:
                    futs = [ex.submit(work, bounds[i], bounds[i + 1], parts[i]) for i in range(n_workers)]
                    for f in futs:
                        f.result()
                if grad_W is not None:
                    for part in parts[1:]:
                        grad_W.add_(part)
        loss = (torch.linalg.vecdot(S1, base).sum() + (vals * D).sum()) / B

        if need_grad:
            scale = 2.0 / B
            grads: list[torch.Tensor | None] = [None, None, None, None]
            if ctx.needs_input_grad[0]:
                grads[0] = D.mul_(scale).to(values.dtype)
            if ctx.needs_input_grad[1]:
                assert grad_W is not None
                grads[1] = grad_W.mul_(scale)
            if ctx.needs_input_grad[2]:
                grads[2] = scale * S1.sum(0)
            if ctx.needs_input_grad[3]:
                grads[3] = S1.mul_(-scale).to(target.dtype)
            ctx.grads = grads
        return loss.to(values.dtype)

    @staticmethod
    @autocast_backward
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        out = [None if g is None else g * grad_out for g in ctx.grads]
        ctx.grads = None
        return out[0], out[1], out[2], out[3], None, None, None


def prefix_mse_loss(
    values: torch.Tensor,
    pattern: SparsePattern,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    target: torch.Tensor,
    level_weights: torch.Tensor,
    chunk_elems: int = 1 << 21,
) -> torch.Tensor:
    """Weighted nested-prefix reconstruction loss, memory-flat.

    ``values`` ``[B, K]`` are the decode weights of the selected latents in rank order
    (``pattern = SparsePattern.from_topk(indices)`` with the same order). With prefix
    reconstructions ``x_hat_j = b_dec + sum_{t<=j} values[:, t-1] W_dec[indices[:, t-1]]``
    the loss is ``mean_b sum_j level_weights[j-1] ||x_hat_j - target||^2``. HierarchicalTopK
    uses weights ``1/|J|`` on its levels ``J``; Multi-TopK ``1`` at ``k`` and ``1/8`` at ``4k``.
    Extra memory: ``O(B (d + K))`` plus ``chunk_elems`` elements per worker thread (the gathered
    decoder rows of a block of levels for a chunk of rows) and, past the first worker, an ``F x d``
    decoder-gradient buffer each (so the sum is bit-reproducible); the ``B x K x d`` prefix tensor
    is never built. Work ``O(B K d)``.
    """
    if pattern.k is None or values.shape != (pattern.n_rows, pattern.k):
        raise ValueError("prefix_mse_loss needs a from_topk pattern matching values [B, K]")
    return _PrefixLoss.apply(values, W_dec, b_dec, target, level_weights, pattern, chunk_elems)
