"""End-to-end checks of the local Slurm cluster (slurm/local/start.sh) through submitit.

submitit learns a job's fate from ``sacct``; these tests fail (rather than hang) when
accounting is broken, and prove that a 2-task gloo DDP job runs on the 2-core machine.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import submitit

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

REPO = Path(__file__).resolve().parents[2]
# Queueing, two torch imports and gloo set-up take ~10 s here; leave room for a busy machine.
JOB_DEADLINE_S = 120
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def _all_reduce_ranks() -> dict[str, float]:
    """Job body: every task adds rank + 1 over gloo, so 2 tasks give 3."""
    import torch
    import torch.distributed as dist

    env = submitit.helpers.TorchDistributedEnvironment().export()
    dist.init_process_group("gloo")
    try:
        total = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(total)
    finally:
        dist.destroy_process_group()
    return {"rank": env.rank, "world_size": env.world_size, "sum": total.item()}


def _raise() -> None:
    raise RuntimeError("raised on purpose by the failing test job")


def _die_without_result() -> None:
    # Skips submitit's result writing: only sacct can tell the driver the job failed.
    os._exit(3)


def _executor(folder: Path, monkeypatch: pytest.MonkeyPatch, tasks: int) -> submitit.AutoExecutor:
    # The job unpickles this module's functions by import; make it importable from any cwd.
    path = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(tasks_per_node=tasks, nodes=1, cpus_per_task=1, timeout_min=5,
                               slurm_partition="debug", mem_gb=1)
    return executor


def _wait_done(job: submitit.Job, deadline_s: float = JOB_DEADLINE_S) -> float:
    """Poll like ``job.wait()`` but give up after ``deadline_s``; returns seconds waited."""
    start = time.monotonic()
    while not job.done():
        elapsed = time.monotonic() - start
        if elapsed > deadline_s:
            subprocess.run(["scancel", str(job.job_id)], check=False)
            pytest.fail(f"job {job.job_id} not done after {deadline_s} s (state {job.state})")
        time.sleep(0.5)
    return time.monotonic() - start


def _sacct_state(job_id: str, deadline_s: float = 30) -> str:
    """The allocation's final state in accounting (submitit may see the result file first)."""
    end = time.monotonic() + deadline_s
    state = ""
    while time.monotonic() < end:
        out = subprocess.run(["sacct", "-j", job_id, "-n", "-X", "-P", "-o", "State"],
                             capture_output=True, text=True, timeout=20, check=True)
        state = out.stdout.strip()
        if state.startswith(TERMINAL_STATES):
            return state
        time.sleep(1)
    pytest.fail(f"sacct shows job {job_id} as {state!r} after {deadline_s} s")


def test_two_task_gloo_ddp_job_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _executor(tmp_path, monkeypatch, tasks=2).submit(_all_reduce_ranks)
    _wait_done(job)

    # A multi-task job answers results() (one per task); result() is per task.
    results = job.results()
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["world_size"] == 2 and r["sum"] == 3.0 for r in results)
    assert job.task(0).result() == results[0]
    assert _sacct_state(job.job_id) == "COMPLETED"


def test_raising_job_ends_failed_and_result_raises(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    job = _executor(tmp_path, monkeypatch, tasks=1).submit(_raise)
    _wait_done(job)

    start = time.monotonic()
    with pytest.raises(submitit.core.utils.FailedJobError, match="raised on purpose"):
        job.result()
    assert time.monotonic() - start < 10
    assert _sacct_state(job.job_id) == "FAILED"


def test_job_dying_without_result_is_seen_failed(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # With no result file, job.done() turns true only through sacct: this is the
    # test that hangs (bounded here by JOB_DEADLINE_S) when accounting is broken.
    job = _executor(tmp_path, monkeypatch, tasks=1).submit(_die_without_result)
    _wait_done(job)

    assert job.state == "FAILED"
    assert _sacct_state(job.job_id) == "FAILED"
