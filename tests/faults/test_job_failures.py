"""Jobs that fail on the real Slurm: the failure is seen, bounded in time, and recorded."""
from __future__ import annotations

import dataclasses
import subprocess
import time

import pytest

from hpc.profiles import ClusterProfile, make_executor

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
