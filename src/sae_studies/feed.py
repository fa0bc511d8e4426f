"""The data feed of SAE training: which rows make each batch, and a background prefetcher.

Two orders of rows (index streams: one sorted ``int64`` array of row numbers per batch):

* :func:`row_batches` — today's order, a fresh uniform permutation of all rows per pass cut
  into batches (``ActivationSet.batches`` yields exactly these rows);
* :func:`block_batches` — block-shuffled: the rows are cut into blocks of ``block_rows``
  contiguous rows, the blocks are permuted, and the rows of each window of ``window_blocks``
  consecutive blocks (in that permuted order) are permuted among themselves before being cut
  into batches. A batch then reads a few long runs of the memmap instead of ~batch_size random
  pages. What it does to randomness: every row still appears exactly once per pass and every
  block is equally likely anywhere in the pass, but a batch draws its rows from one or two
  windows of ``block_rows · window_blocks`` rows (at 4,096 × 16 rows and 128-token contexts:
  from 512 contexts instead of from all of them), so the rows of one batch share their contexts
  more often than under a uniform shuffle (about 8 rows per context instead of about 1), and
  consecutive batches of a window are correlated. Its settings are part of the SAE's artifact key.

:class:`Prefetcher` reads the batches of an index stream on a background thread into a small
queue; with a CUDA target it reads into a pinned host buffer, copies to the device with a
non-blocking copy on a side stream, and can store the batch in bfloat16 on the device. It yields
the same rows in the same order as the plain loop (tested), so turning it on never changes
what an SAE learns from a float32 feed. :func:`data_feed` is what ``train_sae`` calls.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .checks import check_positive_int

__all__ = ["FEED_DTYPES", "row_batches", "block_batches", "read_rows", "Prefetcher", "data_feed", "feed_key"]

#: Dtypes the feed stores batches in: float32 (as harvested) or bfloat16 (half the copy and
#: device memory; the SAE casts to its own dtype on input).
FEED_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _skip_passes(per_pass: int, steps: float, start: int) -> tuple[int, int, float]:
    """``(whole passes to skip, batches to skip in the next pass, batches left to yield)``."""
    if start < 0:
        raise ValueError(f"start must be a number of batches >= 0, got {start}")
    return start // per_pass, start % per_pass, steps - start


def _cut_passes(
    order_of_pass: Callable[[], np.ndarray], n: int, batch_size: int, steps: float, start: int
) -> Iterator[np.ndarray]:
    """Sorted row numbers of consecutive batches of each pass's order (``order_of_pass()`` draws the
    next pass's permutation of ``n``): ``steps`` batches in all, the first ``start`` skipped (whole
    passes draw only their permutation, so the stream continues exactly where it stopped).
    Sorted rows read a memmap front to back; order within a batch does not matter."""
    per_pass = n // batch_size
    whole, offset, left = _skip_passes(per_pass, steps, start)
    for _ in range(whole):
        order_of_pass()
    while left > 0:
        order = order_of_pass()
        for b in range(offset, per_pass):
            if left <= 0:
                return
            yield np.sort(order[b * batch_size : (b + 1) * batch_size])
            left -= 1
        offset = 0


def row_batches(
    n: int, batch_size: int, rng: np.random.Generator, steps: float = math.inf, start: int = 0
) -> Iterator[np.ndarray]:
    """Sorted row numbers of each batch in today's order: per pass ``rng.permutation(n)`` cut into
    consecutive batches of ``batch_size`` (which must divide ``n``); ``steps`` batches in all.
    ``start`` skips that many batches of the stream (whole passes draw only their permutation)."""
    return _cut_passes(lambda: rng.permutation(n), n, batch_size, steps, start)


def block_order(n: int, block_rows: int, window_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """One pass of the block-shuffled order (see the module docstring): a permutation of ``n``."""
    n_blocks = -(-n // block_rows)
    blocks = rng.permutation(n_blocks)
    parts = []
    for w in range(0, n_blocks, window_blocks):
        rows = np.concatenate([np.arange(b * block_rows, min(n, (b + 1) * block_rows)) for b in blocks[w : w + window_blocks]])
        parts.append(rng.permutation(rows))
    return np.concatenate(parts)


def block_batches(
    n: int,
    batch_size: int,
    rng: np.random.Generator,
    block_rows: int,
    window_blocks: int,
    steps: float = math.inf,
    start: int = 0,
) -> Iterator[np.ndarray]:
    """Sorted row numbers of each batch in the block-shuffled order (:func:`block_order` per
    pass, cut into consecutive batches); same ``steps`` / ``start`` meaning as :func:`row_batches`."""
    check_positive_int("shuffle_block_rows", block_rows)
    check_positive_int("shuffle_window_blocks", window_blocks)
    return _cut_passes(lambda: block_order(n, block_rows, window_blocks, rng), n, batch_size, steps, start)


def read_rows(acts: np.ndarray, idx: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """``acts[idx]`` as a tensor (sorted ``idx`` read the memmap front to back), into ``out`` when
    given (e.g. a pinned buffer; converted to its dtype).

    ``np.take``: one thread, and it releases the GIL for the copy. (``torch.index_select`` on the
    memmap reads as fast, but from a reader thread it starts an OpenMP team whose spinning
    threads took the cores from the training loop: a median 10 ms wait per batch against 0.1 ms
    with ``np.take`` beside a busy main thread on 2 cores.)"""
    if out is not None and out.dtype == torch.float32 and out.is_contiguous():
        np.take(acts, idx, axis=0, out=out.numpy())
        return out
    rows = torch.from_numpy(np.asarray(np.take(acts, idx, axis=0)))
    return rows if out is None else out.copy_(rows)


_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless asked to stop first (checked every 50 ms while the queue is full)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _fill(produce: Callable[[], Iterator[torch.Tensor]], q: queue.Queue, stop: threading.Event) -> None:
    """The worker: fill ``q`` from ``produce()`` until it ends, fails, or ``stop`` is set. It holds
    no reference to the Prefetcher, so dropping the Prefetcher stops it (weakref.finalize)."""
    try:
        for item in produce():
            if not _put(q, item, stop):
                return
        _put(q, _END, stop)
    except BaseException as err:  # handed to the consumer, raised there
        _put(q, _Failure(err), stop)


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread) -> None:
    stop.set()
    while True:  # free queued (device) batches now
        try:
            q.get_nowait()
        except queue.Empty:
            break
    if thread is not threading.current_thread():
        thread.join(timeout=10)


class Prefetcher:
    """Batches of ``acts`` read on a background thread into a queue of ``depth`` batches.

    ``index_batches`` is an index stream (:func:`row_batches`, :func:`block_batches`); the
    prefetcher yields ``torch.Tensor`` batches ``[len(idx), d]`` of those rows, in that order, on
    ``device`` in ``dtype``:

    * CPU target, float32: a fresh tensor per batch, the same as the plain loop;
    * CUDA target: rows read straight into a pinned host buffer (converted to ``dtype`` there,
      halving the copy for bfloat16), copied with ``non_blocking=True`` on a side stream that the
      worker waits on (not the training loop), and marked as used on the consumer's stream.

    It stops when the stream ends, on :meth:`close`, when used as a context manager and left, or
    when the object is garbage-collected (SAETrainer just drops its data provider). An error in
    the worker is raised in the consumer. ``wait_seconds`` is the time the consumer spent blocked
    in ``next``: the data wait the training loop saw.
    """

    def __init__(
        self,
        acts: np.ndarray,
        index_batches: Iterator[np.ndarray],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        depth: int = 2,
    ):
        depth = check_positive_int("prefetch", depth)
        if dtype not in FEED_DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(FEED_DTYPES)}; got {dtype}")
        self.device = torch.device(device)
        self.wait_seconds = 0.0
        self.batches = 0
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        produce = _producer(acts, index_batches, self.device, dtype)
        thread = threading.Thread(target=_fill, args=(produce, q, stop), name="sae-feed", daemon=True)
        self._queue, self._stop, self._thread = q, stop, thread
        self._finalize = weakref.finalize(self, _shutdown, stop, q, thread)
        thread.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> torch.Tensor:
        if self._stop.is_set():
            raise StopIteration
        t0 = time.perf_counter()
        item = self._queue.get()
        self.wait_seconds += time.perf_counter() - t0
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        if item.device.type == "cuda":
            item.record_stream(torch.cuda.current_stream(item.device))  # the allocator waits for our kernels
        self.batches += 1
        return item

    @property
    def alive(self) -> bool:
        """Whether the worker thread is still running."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the worker and drop queued batches (idempotent)."""
        self._finalize()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _producer(
    acts: np.ndarray, index_batches: Iterator[np.ndarray], device: torch.device, dtype: torch.dtype
) -> Callable[[], Iterator[torch.Tensor]]:
    """The worker's generator of ready batches (see :class:`Prefetcher`)."""

    def plain() -> Iterator[torch.Tensor]:
        for idx in index_batches:
            batch = read_rows(acts, idx)
            yield batch if device.type == "cpu" and dtype == torch.float32 else batch.to(device=device, dtype=dtype)

    def cuda() -> Iterator[torch.Tensor]:
        stream = torch.cuda.Stream(device)
        host = None
        for idx in index_batches:
            if host is None or host.shape[0] != len(idx):
                host = torch.empty((len(idx), acts.shape[1]), dtype=dtype, pin_memory=True)
            read_rows(acts, idx, out=host)  # straight into pinned memory (bfloat16: converted there)
            with torch.cuda.stream(stream):
                batch = host.to(device, non_blocking=True)
            stream.synchronize()  # the worker waits, not the training loop; host is free again
            yield batch

    return cuda if device.type == "cuda" else plain


def feed_key(block_rows: int, window_blocks: int, dtype: str) -> dict:
    """What of the feed changes the batches an SAE sees, for its artifact key: empty for
    today's feed (row shuffle, float32), so existing keys stay valid. Prefetching never enters:
    it yields the same batches."""
    key = {}
    if block_rows:
        key["shuffle"] = {"block_rows": block_rows, "window_blocks": window_blocks}
    if dtype != "float32":
        key["feed_dtype"] = dtype
    return key


def data_feed(
    acts,
    batch_size: int,
    seed: int,
    *,
    device: str | torch.device = "cpu",
    prefetch: int = 0,
    block_rows: int = 0,
    window_blocks: int = 16,
    dtype: str = "float32",
    epochs: float = math.inf,
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """The batches ``train_sae`` hands SAETrainer for an ``ActivationSet``.

    ``prefetch == 0``, ``block_rows == 0`` and ``dtype == "float32"`` give exactly
    ``acts.batches(batch_size, seed)`` (today's feed, on the CPU; SAETrainer copies each batch).
    ``prefetch > 0`` reads ``prefetch`` batches ahead on a thread and delivers them on ``device``
    (:class:`Prefetcher`); ``block_rows > 0`` switches to the block-shuffled order
    (:func:`block_batches`); ``dtype="bfloat16"`` stores batches in bfloat16.
    """
    if dtype not in FEED_DTYPES:
        raise ValueError(f"sae.feed_dtype must be one of {sorted(FEED_DTYPES)}; got {dtype!r}")
    if prefetch < 0 or block_rows < 0:
        raise ValueError(f"sae.prefetch and sae.shuffle_block_rows must be >= 0; got {prefetch} and {block_rows}")
    if block_rows:
        check_positive_int("sae.shuffle_window_blocks", window_blocks)  # here, not at the first batch
    plain = acts.batches(batch_size, seed=seed, epochs=epochs)  # checks batch_size; today's feed
    if prefetch == 0 and block_rows == 0 and dtype == "float32" and start == 0:
        return plain
    n = len(acts)
    steps = math.inf if math.isinf(epochs) else int(epochs * n // batch_size)
    rng = np.random.default_rng(seed)
    if block_rows:
        index = block_batches(n, batch_size, rng, block_rows, window_blocks, steps, start)
    else:
        index = row_batches(n, batch_size, rng, steps, start)
    if prefetch == 0:
        return (read_rows(acts.acts, idx).to(FEED_DTYPES[dtype]) for idx in index)
    return Prefetcher(acts.acts, index, device=device, dtype=FEED_DTYPES[dtype], depth=prefetch)


def sae_feed(acts, batch_size: int, seed: int, sae_cfg, start: int = 0) -> Iterator[torch.Tensor]:
    """:func:`data_feed` with the feed settings of an `SAEConfig` (device, prefetch, block
    shuffling, storage dtype): what `train.train_sae` and `ladder` hand SAETrainer."""
    return data_feed(
        acts,
        batch_size,
        seed,
        device=sae_cfg.device,
        prefetch=sae_cfg.prefetch,
        block_rows=sae_cfg.shuffle_block_rows,
        window_blocks=sae_cfg.shuffle_window_blocks,
        dtype=sae_cfg.feed_dtype,
        start=start,
    )
