"""One sweep runner for every grid of SAEs: in this process by default, or as tasks of a Ray cluster.

A job (`SAEJob`) is one call of `train.train_sae`: activations, spec, training settings, batch
size and the optional init / frozen / key_extra. It is a pure function of those parameters, so its
artifact key says everything, and running it anywhere that sees the same store gives the same SAE.

Runners follow `concurrent.futures.Executor`: `submit(fn, *args)` returns a `Future`.
`InProcessRunner` runs the call at once in this process; `RayRunner` sends it to a Ray cluster
(`ray.remote` with the profile's CPUs / GPUs per task). Both run a call that raised again, up to
`max_retries` times (Ray also when its worker process died), before its future holds the error.

`run_jobs(jobs, store, runner)` is the sweep: jobs whose SAE is in the store are skipped without
running; a job listed twice runs once; one progress bar over the whole grid advances as jobs
finish; a job that still fails after its retries is reported with its parameters and traceback
while the other jobs finish. `train_all` returns the SAEs in job order, or raises `SweepFailed`
naming every failed job (a notebook cell shows that list). Running the same sweep again resumes it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .activations import ActivationSet
from .config import RunnerConfig, SAEConfig
from .saes.registry import SAESpec
from .store import Artifact, Store, keyed_params, params_key

__all__ = [
    "SAEJob",
    "FailedJob",
    "SweepResult",
    "SweepFailed",
    "Runner",
    "InProcessRunner",
    "RayRunner",
    "make_runner",
    "start_ray",
    "run_jobs",
    "train_all",
]

RAY_EXTRA = 'the Ray runner needs the optional extra: pip install -e ".[ray]" (or pip install "ray>=2.9")'


@dataclass(frozen=True, eq=False)
class SAEJob:
    """The arguments of one `train.train_sae` call (see there); the store is the sweep's."""

    acts: ActivationSet
    spec: SAESpec
    sae_cfg: SAEConfig
    batch_size: int = 4096
    init: Mapping[str, torch.Tensor] | None = None
    frozen: Sequence[str] = ()
    key_extra: Mapping[str, Any] | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The SAE artifact's parameters: what the store is asked for before the job runs."""
        from .train import sae_params

        return sae_params(self.acts, self.spec, self.sae_cfg, self.batch_size, self.key_extra)

    @property
    def key(self) -> str:
        """The SAE's store key: its parameters with the version of the code that trains it."""
        from .train import BUILDER_CODE

        return params_key("sae", keyed_params(self.params, BUILDER_CODE))

    def describe(self) -> dict[str, Any]:
        """The job in a few readable fields (for failure reports)."""
        return {
            "architecture": self.spec.architecture,
            "d_sae": self.spec.d_sae,
            "k": self.spec.k,
            "seed": self.spec.seed,
            **({"extra": dict(self.spec.extra)} if self.spec.extra else {}),
            "hook": self.acts.hook,
            "activations": self.acts.key,
            "train_tokens": self.sae_cfg.train_tokens,
            "lr": self.sae_cfg.lr,
            "batch_size": self.batch_size,
            **({"init": sorted(self.init), "frozen": list(self.frozen)} if self.init or self.frozen else {}),
            **({"key_extra": dict(self.key_extra)} if self.key_extra else {}),
            "key": self.key,
        }

    def __getstate__(self) -> dict[str, Any]:
        # a fresh ActivationSet: the memory-mapped rows it may have cached must not travel
        state = dict(self.__dict__)
        state["acts"] = dataclasses.replace(self.acts)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def train_job(job: SAEJob, store_root: str, threads: int | None = None) -> str:
    """Run one job against the store at `store_root` (the task a runner executes); return the
    SAE's key. Module-level so that Ray pickles it by reference."""
    from .train import train_sae

    if threads:
        torch.set_num_threads(threads)
    _, art = train_sae(
        job.acts,
        job.spec,
        job.sae_cfg,
        Store(store_root),
        job.batch_size,
        init=job.init,
        frozen=job.frozen,
        key_extra=job.key_extra,
    )
    return art.key


# --------------------------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------------------------


class JobError(RuntimeError):
    """A job failed after all its attempts; `attempts` and the last `traceback` text say how."""

    def __init__(self, message: str, attempts: int, traceback_text: str):
        super().__init__(message)
        self.attempts = attempts
        self.traceback = traceback_text


class Runner:
    """The interface of every runner (`concurrent.futures.Executor`'s `submit` and `shutdown`)."""

    max_retries: int = 0
    threads: int | None = None
    """torch threads of each job (None: the process's setting)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release what the runner holds (nothing for the in-process runner)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


class InProcessRunner(Runner):
    """Runs each call at once in this process, in the caller's thread; a call that raises an
    `Exception` is run again up to `max_retries` times, then its future holds a `JobError`."""

    def __init__(self, max_retries: int = 0):
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"runner.max_retries must be an integer >= 0, got {max_retries!r}")
        self.max_retries = max_retries

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        for attempt in range(1, self.max_retries + 2):
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - reported with its traceback, not swallowed
                text = "".join(traceback.format_exception(err))
                if attempt > self.max_retries:
                    future.set_exception(JobError(f"{type(err).__name__}: {err}", attempt, text))
            else:
                future.set_result(result)
                break
        return future

    def __repr__(self) -> str:
        return f"InProcessRunner(max_retries={self.max_retries})"


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            f"a Ray address was given (runner.address or RAY_ADDRESS) but Ray is not installed: {RAY_EXTRA}"
        ) from err
    return ray


def start_ray(address: str | None = None, attempts: int = 3, **kwargs: Any) -> None:
    """`ray.init(address, **kwargs)` (no dashboard, quiet), tried again when the node timed out
    at startup: Ray waits a fixed 30 s for its raylet, which a loaded machine can miss."""
    ray = _import_ray()
    options = {"log_to_driver": False, "configure_logging": False, **kwargs}
    if address is None:
        options.setdefault("include_dashboard", False)
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, **options)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for this
            if "timed out during startup" not in str(err) or attempt == attempts:
                raise
            ray.shutdown()


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


class RayRunner(Runner):
    """Sends each call to a Ray cluster as a task asking for `cpus_per_task` CPUs and
    `gpus_per_task` GPUs. Ray runs a task again, up to `max_retries` times, when it raised or its
    worker died; then its future holds a `JobError` with the remote traceback.

    `address`: `local` starts a private cluster on this machine, anything else is handed to
    `ray.init` (`auto`, `<ip>:6379`, `ray://<ip>:10001`). If this process is already connected
    (`ray.init` called before), that connection is used and left open at `shutdown`."""

    def __init__(self, address: str, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0, max_retries: int = 2):
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"runner.max_retries must be an integer >= 0, got {max_retries!r}")
        if cpus_per_task < 0 or gpus_per_task < 0 or cpus_per_task + gpus_per_task <= 0:
            raise ValueError(
                f"runner.cpus_per_task ({cpus_per_task}) and runner.gpus_per_task ({gpus_per_task}) must be >= 0, not both 0"
            )
        ray = _import_ray()
        self.address, self.max_retries = address, max_retries
        self.threads = max(1, int(cpus_per_task)) if cpus_per_task else None
        self._owns = not ray.is_initialized()
        if self._owns:
            start_ray(None if address == "local" else address)
        self._remote = ray.remote(_call).options(
            num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries, retry_exceptions=True
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        remote: Future = self._remote.remote(fn, args, kwargs).future()
        future: Future = Future()

        def done(f: Future) -> None:
            err = f.exception()
            if err is None:
                future.set_result(f.result())
            else:
                text = getattr(err, "traceback_str", None) or "".join(traceback.format_exception(err))
                first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                future.set_exception(JobError(f"{type(err).__name__}: {first}", self.max_retries + 1, text))

        remote.add_done_callback(done)
        return future

    def shutdown(self) -> None:
        if self._owns:
            _import_ray().shutdown()
            self._owns = False

    def __repr__(self) -> str:
        return f"RayRunner(address={self.address!r}, max_retries={self.max_retries})"


def make_runner(cfg: RunnerConfig, device: str = "cpu") -> Runner:
    """The profile's runner: Ray when `runner.address` or else the `RAY_ADDRESS` environment
    variable names a cluster, in process otherwise. `device` is where the SAEs train
    (`sae.device`): a Ray task sees no GPU unless it asks for one."""
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return InProcessRunner(cfg.max_retries)
    if device.startswith("cuda") and not cfg.gpus_per_task:
        raise ValueError(
            f"sae.device is {device!r} but runner.gpus_per_task is {cfg.gpus_per_task}: Ray tasks see no GPU; "
            "set runner.gpus_per_task (1, or a fraction to share a GPU)"
        )
    return RayRunner(address, cfg.cpus_per_task, cfg.gpus_per_task, cfg.max_retries)


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------


@dataclass
class FailedJob:
    """A job that failed after all its attempts: its place in the grid, parameters and traceback."""

    index: int
    job: dict[str, Any]
    error: str
    attempts: int
    traceback: str

    def __str__(self) -> str:
        return f"job {self.index} ({self.job}) failed after {self.attempts} attempt(s): {self.error}"


@dataclass
class SweepResult:
    """What a sweep left: one artifact per job in job order (None where it failed), the failures,
    and how many jobs ran or were already in the store."""

    artifacts: list[Artifact | None]
    failed: list[FailedJob] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0

    def failure_table(self):
        """The failed jobs as a table (one row per job: its fields, error and attempts)."""
        import pandas as pd

        return pd.DataFrame([{"index": f.index, **f.job, "error": f.error, "attempts": f.attempts} for f in self.failed])


class SweepFailed(RuntimeError):
    """Raised by `train_all` after every job has finished, when some failed; `.result` holds the
    artifacts that were made and `.failed` the failures with their tracebacks."""

    def __init__(self, result: SweepResult):
        self.result = result
        self.failed = result.failed
        lines = [f"{len(result.failed)} of {len(result.artifacts)} SAE job(s) failed (the others finished):"]
        lines += [f"  {f}" for f in result.failed]
        lines.append(f"last traceback:\n{result.failed[-1].traceback}")
        lines.append("run the same sweep again to retry only these: finished SAEs are in the store")
        super().__init__("\n".join(lines))


def run_jobs(
    jobs: Sequence[SAEJob],
    store: Store,
    runner: Runner | None = None,
    desc: str = "SAEs",
    task: Callable[[SAEJob, str, int | None], str] = train_job,
) -> SweepResult:
    """Run the jobs that are not in the store yet (each distinct key once) on `runner` (in
    process by default); one progress bar over all jobs advances as they finish. `task` is what
    runs one job (`train_job`; tests and benchmarks wrap it with the same signature)."""
    from .train import BUILDER_CODE

    runner = runner or InProcessRunner()
    params = [job.params for job in jobs]
    keys = [params_key("sae", keyed_params(p, BUILDER_CODE)) for p in params]
    artifacts: list[Artifact | None] = [store.get("sae", p, BUILDER_CODE) for p in params]
    todo: dict[str, list[int]] = {}
    for i, (key, art) in enumerate(zip(keys, artifacts)):
        if art is None:
            todo.setdefault(key, []).append(i)
    result = SweepResult(artifacts, skipped=len(jobs) - sum(len(v) for v in todo.values()))
    bar = tqdm(total=len(jobs), desc=desc, initial=result.skipped)
    bar.set_postfix(cached=result.skipped, refresh=False)
    futures: dict[str, Future] = {}
    try:
        for key, where in todo.items():
            future = runner.submit(task, jobs[where[0]], str(store.root), runner.threads)
            future.add_done_callback(functools.partial(_advance, bar, len(where)))
            futures[key] = future
        for key, future in futures.items():
            where = todo[key]
            try:
                made = future.result()
                if made != key:
                    raise JobError(
                        f"the worker made the SAE {made}, this process expects {key}: the nodes run another version "
                        "of sae_studies or of its numerical libraries (both enter the key); install the same on every node",
                        1,
                        "",
                    )
                art = store.get("sae", params[where[0]], BUILDER_CODE)
                if art is None:
                    raise JobError(
                        f"the job finished but its SAE {key} is not in {store.root}: do the workers write the same "
                        "store (SAE_STUDIES_DATA on a shared file system, at the same path)?",
                        1,
                        "",
                    )
            except JobError as err:
                result.failed += [FailedJob(i, jobs[i].describe(), str(err), err.attempts, err.traceback) for i in where]
                continue
            result.ran += 1
            for i in where:
                artifacts[i] = art
    finally:
        bar.close()
    result.failed.sort(key=lambda f: f.index)
    return result


def _advance(bar, n: int, _future: Future) -> None:
    bar.update(n)


def train_all(
    jobs: Sequence[SAEJob], store: Store, runner: Runner | None = None, desc: str = "SAEs"
) -> list[tuple[Any, Artifact]]:
    """`(SAE, artifact)` per job, in job order, as sequential `train.train_sae` calls would give;
    raises `SweepFailed` (listing the failed jobs) after all jobs finished, if any failed."""
    from .train import load_sae

    result = run_jobs(jobs, store, runner, desc)
    if result.failed:
        raise SweepFailed(result)
    return [(load_sae(art.path, job.sae_cfg.device), art) for job, art in zip(jobs, result.artifacts)]  # type: ignore[union-attr]
