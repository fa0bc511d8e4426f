"""The sweep runner: in process it equals sequential `train_sae`; it skips what the store holds,
retries and reports failures while the other jobs finish; on a real local Ray cluster it gives the
same SAEs, survives a killed worker and resumes. The store lets one of two racing builders win."""

import dataclasses
import multiprocessing
import os
import sys
from pathlib import Path

import pytest
import torch

from sae_studies import sweep
from sae_studies.analyses import synthetic as syn
from sae_studies.config import RunnerConfig, SAEConfig
from sae_studies.saes import registry
from sae_studies.store import Store
from sae_studies.train import train_sae

SPEC = syn.LowRankSpec(d=16, n_isolated=4, n_groups=2, rank=3)
SAE_CFG = dataclasses.replace(SAEConfig(), train_tokens=2048, lr=5e-3, dead_feature_window=8)


def _acts(root: Path):
    return syn.materialise(SPEC, 2048, Store(root))


def _jobs(acts, seeds=(0, 1, 2)):
    return [sweep.SAEJob(acts, registry.get("topk").spec(32, 4, s), SAE_CFG, 512) for s in seeds]


def _same_weights(path_a: Path, path_b: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(path_a / "sae_weights.safetensors"), load_file(path_b / "sae_weights.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


class CountingRunner(sweep.InProcessRunner):
    """In process, counting the jobs it is handed."""

    def __init__(self, max_retries=0):
        super().__init__(max_retries)
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs):
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


def test_in_process_runner_equals_sequential_train_sae(tmp_path, one_thread):
    acts_a, acts_b = _acts(tmp_path / "a"), _acts(tmp_path / "b")
    jobs = _jobs(acts_a)
    out = sweep.train_all(jobs, Store(tmp_path / "a"))
    seq = [train_sae(acts_b, j.spec, SAE_CFG, Store(tmp_path / "b"), 512) for j in jobs]
    assert [art.key for _, art in out] == [art.key for _, art in seq] == [j.key for j in jobs]
    for (_, art), (_, ref) in zip(out, seq):
        _same_weights(art.path, ref.path)
    assert [sae.cfg.d_sae for sae, _ in out] == [32, 32, 32]


def test_existing_artifacts_are_skipped_and_a_sweep_resumes(tmp_path, one_thread):
    store = Store(tmp_path)
    jobs = _jobs(_acts(tmp_path))
    first = sweep.run_jobs(jobs[:2], store)
    assert (first.ran, first.skipped) == (2, 0)
    runner = CountingRunner()
    again = sweep.run_jobs(jobs, store, runner)
    assert runner.calls == 1 and (again.ran, again.skipped) == (1, 2)
    assert [a.key for a in again.artifacts] == [j.key for j in jobs]
    runner = CountingRunner()
    assert sweep.run_jobs(jobs + jobs[:1], store, runner).skipped == 4 and runner.calls == 0


def test_a_job_listed_twice_runs_once(tmp_path, one_thread):
    jobs = _jobs(_acts(tmp_path), seeds=(0, 0))
    runner = CountingRunner()
    result = sweep.run_jobs(jobs, Store(tmp_path), runner)
    assert runner.calls == 1 and result.ran == 1 and result.artifacts[0] == result.artifacts[1]


def test_in_process_runner_retries_a_flaky_call():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("transient")
        return "ok"

    assert sweep.InProcessRunner(max_retries=2).submit(flaky).result() == "ok" and len(attempts) == 3
    attempts.clear()
    err = sweep.InProcessRunner(max_retries=1).submit(flaky).exception()
    assert isinstance(err, sweep.JobError) and err.attempts == 2 and "OSError: transient" in err.traceback


def test_failing_job_is_retried_reported_and_the_others_finish(tmp_path, one_thread):
    store = Store(tmp_path)
    acts = _acts(tmp_path)
    good = _jobs(acts, seeds=(0, 1))
    bad = dataclasses.replace(good[0], spec=good[0].spec.with_seed(7), init={"no_such_weight": torch.zeros(1)})
    attempts = []

    def counted(job, root, threads):
        attempts.append(job.spec.seed)
        return sweep.train_job(job, root, threads)

    result = sweep.run_jobs([good[0], bad, good[1]], store, sweep.InProcessRunner(max_retries=2), task=counted)
    assert attempts.count(7) == 3 and attempts.count(0) == attempts.count(1) == 1
    assert result.artifacts[0] is not None and result.artifacts[2] is not None and result.artifacts[1] is None
    (failure,) = result.failed
    assert failure.index == 1 and failure.attempts == 3 and failure.job["seed"] == 7 and failure.job["key"] == bad.key
    assert "init / frozen name unknown parameters" in failure.error and "Traceback" in failure.traceback
    assert list(result.failure_table()["seed"]) == [7]
    with pytest.raises(sweep.SweepFailed, match=r"(?s)1 of 3 SAE job\(s\) failed.*'seed': 7") as info:
        sweep.train_all([good[0], bad, good[1]], store, sweep.InProcessRunner(max_retries=0))
    assert [f.index for f in info.value.failed] == [1]


def test_runner_from_profile_and_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert isinstance(sweep.make_runner(RunnerConfig()), sweep.InProcessRunner)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        sweep.make_runner(RunnerConfig())
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(ImportError, match="runner.address or RAY_ADDRESS"):
        sweep.make_runner(RunnerConfig(address="auto"))
    with pytest.raises(ValueError, match="runner.max_retries"):
        sweep.InProcessRunner(max_retries=-1)
    with pytest.raises(ValueError, match="runner.gpus_per_task"):
        sweep.make_runner(RunnerConfig(address="auto"), device="cuda")


# --------------------------------------------------------------------------------------------
# the store: two real processes build one key at once
# --------------------------------------------------------------------------------------------


def _build_racing(root: str, barrier, out) -> None:
    def build(tmp):
        (tmp / "who.txt").write_text(str(os.getpid()))
        barrier.wait(timeout=60)  # both have built before either publishes
        return {}

    art = Store(root).get_or_build("thing", {"p": 1}, build)
    out.put((os.getpid(), str(art.path), (art.path / "who.txt").read_text()))


def test_two_processes_building_one_key_publish_it_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_racing, args=(str(tmp_path), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    (path,) = {g[1] for g in got}  # both return the one published folder
    (winner,) = {g[2] for g in got}  # with the winner's content
    assert int(winner) in {g[0] for g in got}
    assert [p.name for p in (tmp_path / "thing").iterdir()] == [Path(path).name]  # the loser's copy is gone


# --------------------------------------------------------------------------------------------
# a real local Ray cluster on loopback
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers do not import tests/
    sweep.start_ray(num_cpus=2, _node_ip_address="127.0.0.1")  # a head node on loopback, dashboard off
    yield ray
    ray.shutdown()


def test_ray_grid_equals_the_in_process_run(tmp_path, ray_cluster, one_thread):
    jobs = _jobs(_acts(tmp_path / "ray"))
    with sweep.RayRunner("auto", cpus_per_task=1, max_retries=1) as runner:
        remote = sweep.train_all(jobs, Store(tmp_path / "ray"), runner)
    local = sweep.train_all(_jobs(_acts(tmp_path / "local")), Store(tmp_path / "local"))
    assert [a.key for _, a in remote] == [a.key for _, a in local]
    for (_, a), (_, b) in zip(remote, local):
        _same_weights(a.path, b.path)
    assert ray_cluster.is_initialized()  # a connection made before the runner stays open


def _kill_first_try(marks: str, victim: int):
    def task(job, root, threads):
        mark = Path(marks) / f"{job.spec.seed}-{len(list(Path(marks).glob(f'{job.spec.seed}-*')))}"
        mark.touch()
        if job.spec.seed == victim and mark.name.endswith("-0"):
            os.kill(os.getpid(), 9)  # the worker process dies mid-task
        return sweep.train_job(job, root, threads)

    return task


def test_ray_retries_a_killed_worker_and_a_rerun_resumes(tmp_path, ray_cluster):
    store, marks = Store(tmp_path / "data"), tmp_path / "marks"
    jobs = _jobs(_acts(tmp_path / "data"), seeds=(0, 1))
    marks.mkdir()
    # no retries: the killed job fails with its parameters, the other finishes
    result = sweep.run_jobs(jobs, store, sweep.RayRunner("auto", max_retries=0), task=_kill_first_try(str(marks), 0))
    assert [f.index for f in result.failed] == [0] and result.artifacts[1] is not None
    assert result.failed[0].job["seed"] == 0 and "Worker" in result.failed[0].error
    # the rerun resumes: only the failed job runs
    runner = sweep.RayRunner("auto", max_retries=0)
    again = sweep.run_jobs(jobs, store, runner)
    assert (again.ran, again.skipped, again.failed) == (1, 1, [])
    # with a retry, a killed worker costs one more attempt and nothing else
    for m in marks.iterdir():
        m.unlink()
    jobs2 = _jobs(jobs[0].acts, seeds=(2, 3))
    retried = sweep.run_jobs(jobs2, store, sweep.RayRunner("auto", max_retries=1), task=_kill_first_try(str(marks), 2))
    assert retried.failed == [] and retried.ran == 2
    assert sorted(m.name for m in marks.iterdir()) == ["2-0", "2-1", "3-0"]
