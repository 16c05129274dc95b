import pytest

from hpc.distributed import DistEnv, detect, first_host

CASES = [
    ({}, DistEnv()),
    ({"SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "123",
      "SLURM_JOB_NODELIST": "gpu[07-09]"},
     DistEnv(1, 1, 2, "gpu07", 20123, "slurm")),
    # a one-task Slurm job launched with torchrun inside: torchrun's variables win
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "RANK": "3", "WORLD_SIZE": "4",
      "LOCAL_RANK": "3", "MASTER_ADDR": "node1", "MASTER_PORT": "29400"},
     DistEnv(3, 3, 4, "node1", 29400, "torchrun")),
    ({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1",
      "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_JOB_ID": "4242"},
     DistEnv(1, 1, 2, "127.0.0.1", 24242, "submitit-local")),
    ({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0"},
     DistEnv()),
]


@pytest.mark.parametrize("environ,expected", CASES)
def test_detect(environ, expected):
    assert detect(environ) == expected


@pytest.mark.parametrize("nodelist,host", [
    ("localhost", "localhost"), ("gpu[03-05,7]", "gpu03"), ("cn12,cn13", "cn12"),
    ("a[1,4]", "a1"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_rank_zero_flags():
    assert DistEnv().is_rank0 and not DistEnv().is_distributed
    assert not DistEnv(rank=1, world_size=2).is_rank0
