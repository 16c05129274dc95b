"""Jobs that fail on the real Slurm: the failure is seen, bounded in time, and recorded."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

import pytest

from hpc.profiles import ClusterProfile, make_executor
from jobs.dag import _peer_errors, job_ids
from jobs.specs import StageFolder, StageSpec

pytestmark = [pytest.mark.faults, pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.usefixtures("slurm_cluster")]


def _final_state(job_id: str, wait_s: float = 30) -> str:
    deadline = time.time() + wait_s
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, check=True).stdout.split()
        state = out[0] if out else ""
        if state not in ("", "PENDING", "RUNNING", "COMPLETING") or time.time() > deadline:
            return state


def _rank1_fails(how: str):
    def body():   # nested, so cloudpickle ships it by value to the job
        import time

        import torch
        import torch.distributed as dist

        from hpc import distributed

        env = distributed.init()
        if env.rank == 1:
            if how == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            time.sleep(600)         # alive but never joins the collective
        x = torch.ones(1)
        dist.all_reduce(x)
        return x.item()
    return body


@pytest.mark.parametrize("how,expected", [
    ("raise", "Connection closed by peer"),     # gloo sees the dead peer at once
    ("hang", "Timed out"),                      # only the collective timeout ends it
])
def test_one_rank_failing_ends_the_job(tmp_path, how, expected):
    profile = dataclasses.replace(ClusterProfile.load("local-slurm"), collective_timeout_s=10)
    job = make_executor(profile, tmp_path).submit(_rank1_fails(how))
    t0 = time.time()
    with pytest.raises(Exception) as err:
        job.results()
    elapsed = time.time() - t0
    assert elapsed < 120, f"the job took {elapsed:.0f} s to fail"
    assert expected.lower() in str(err.value).lower(), str(err.value)[-800:]
    assert _final_state(job.job_id) == "FAILED"
    if how == "raise":    # the stage's error quotes rank 1's own, not only task 0's
        peers = _peer_errors(Path(job.paths.stderr), str(job.job_id))
        assert "task 1: RuntimeError: rank 1 fails on purpose" in peers, peers


@dataclasses.dataclass(frozen=True)
class Sleep(StageSpec):
    kind: ClassVar[str] = "sleep"
    seconds: int = 600


def test_job_past_its_time_limit_is_recorded(tmp_path):
    """A stage that runs into its wall-time: submitit's warning signal comes first, and a
    job that cannot checkpoint fails with that reason (a stage job would be requeued)."""
    from jobs import dag

    profile = dataclasses.replace(ClusterProfile.load("local-slurm"), timeout_min=1,
                                  tasks_per_node=1)

    def sleeper(spec, folder):
        def body():
            time.sleep(600)     # never checkpointable, never done
        return body

    t0 = time.time()
    with pytest.raises(dag.StageFailed) as err:
        dag.ensure(tmp_path, Sleep(600), sleeper,
                   lambda folder: make_executor(profile, folder), poll_s=2)
    assert time.time() - t0 < 240
    text = str(err.value)
    assert "ended FAILED" in text or "ended TIMEOUT" in text, text
    assert "timed-out and not checkpointable" in text or "TIMEOUT" in text, text
    assert err.value.log_path and err.value.log_path.endswith("_0_log.err")
    assert _final_state(err.value.job_ids[0]) in ("FAILED", "TIMEOUT")


def _kill_tasks(job_id: str) -> int:
    """SIGKILL the tasks of ``job_id``'s job steps at once, as the OOM killer would →
    how many. (``scancel --signal=KILL`` alone reached the tasks of this dev cluster,
    which tracks processes without cgroups, ~5 s after the batch step: a training that
    ended meanwhile wrote its DONE marker, and there was nothing left to retry.)"""
    out = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True,
                         check=False).stdout.splitlines()[1:]
    pids = [int(f[0]) for f in map(str.split, out)
            if len(f) >= 4 and f[2].isdigit() and f[3].isdigit()]   # step tasks, not batch
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def _kill_first_annotate_job(sweep: Path, config: Path, *args: str, code: int):
    """Run the 12-epoch tiny sweep on the local Slurm while a thread kills the first
    annotate job that has started training → (the sweep's output, the killed job id)."""
    import threading

    import yaml

    from tests.jobs.test_sweep_e2e import CONFIG, basis

    raw = yaml.safe_load(CONFIG.read_text())
    raw["train"]["epochs"] = 12         # long enough to be killed in the middle
    config.write_text(yaml.safe_dump(raw))
    killed: list[str] = []
    too_late: list[str] = []

    def killer():
        deadline = time.time() + 600
        while not killed and time.time() < deadline:
            for stage in sorted((sweep / "stages").glob("annotate-*/metrics.jsonl")):
                folder = StageFolder(stage.parent)
                job_id = job_ids(folder)[0]
                if folder.done.exists() or not _kill_tasks(job_id):
                    continue                  # finished already, or not listed yet
                subprocess.run(["scancel", "--signal=KILL", job_id], check=False)
                if folder.done.exists():      # its DONE came before the kill
                    too_late.append(job_id)
                killed.append(job_id)
                break
            time.sleep(0.5)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = basis("sweep", str(config), "--profile", "local-slurm", "--sweep-dir", str(sweep),
                *args, code=code)
    thread.join(5)
    assert killed, "no annotate job was caught while it trained"
    assert not too_late, f"job {too_late[0]} had finished its stage before it was killed"
    return out, killed[0]


def test_job_killed_by_signal_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    from analysis.io import read
    from tests.jobs.test_sweep_e2e import basis, mlflow_children

    sweep = tmp_path / "sweep"
    # a sweep with failed trials says so in its exit code
    out, killed = _kill_first_annotate_job(sweep, tmp_path / "long.yaml", code=1)
    assert "FAILED " in out.stdout and "--resume" in out.stdout
    trials = read(sweep, "trials")
    assert len(trials) == 4
    failed = trials[trials["status"] == "FAILED"]
    assert len(failed) >= 1 and (trials["status"] == "COMPLETED").sum() >= 1
    for _, row in failed.iterrows():
        assert f"job {killed} ended" in row["error"], row["error"]
        assert Path(row["log_path"]).exists()
    runs = {r.data.tags["trial"]: r.info.status for r in mlflow_children(sweep)[1]}
    assert {runs[t] for t in failed["trial"]} == {"FAILED"}
    assert "failed" in basis("status", str(sweep)).stdout


def test_retries_resubmit_a_killed_job_and_the_trial_completes(tmp_path):
    from analysis.io import read

    sweep = tmp_path / "sweep"
    _, killed = _kill_first_annotate_job(sweep, tmp_path / "long.yaml", "--retries", "1",
                                         code=0)
    trials = read(sweep, "trials")
    assert len(trials) == 4 and set(trials["status"]) == {"COMPLETED"}, trials["error"]
    retried = [d for d in (sweep / "stages").glob("annotate-*") if d.is_dir()
               and job_ids(StageFolder(d))[0] == killed]
    assert len(retried) == 1
    ids = job_ids(StageFolder(retried[0]))
    assert len(ids) == 2 and ids[0] == killed      # the same stage, submitted again
    assert _final_state(killed) in ("CANCELLED", "FAILED")
    assert _final_state(ids[1]) == "COMPLETED"
    using = trials[trials["slurm_job_ids"].str.contains(ids[1])]
    assert len(using) >= 1 and all(killed in s for s in using["slurm_job_ids"])
