"""Who am I in the job: rank, world size and rendezvous address, from the environment.

One small interface for every launcher (the Lightning Fabric way): Slurm tasks started
by ``srun``/submitit, ``torchrun``, submitit's local executor, or a plain process.
All helpers are no-ops at world size 1, so the same code path serves both.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping

log = logging.getLogger(__name__)

#: How long a collective may wait before the job fails (a crashed peer must not hang
#: us); a profile's ``collective_timeout_s`` reaches the job as this variable.
TIMEOUT_ENV = "BASIS_COLLECTIVE_TIMEOUT_S"
DEFAULT_TIMEOUT = dt.timedelta(minutes=10)


def collective_timeout(environ: Mapping[str, str] | None = None) -> dt.timedelta:
    env = os.environ if environ is None else environ
    value = env.get(TIMEOUT_ENV)
    return dt.timedelta(seconds=float(value)) if value else DEFAULT_TIMEOUT


@dataclass(frozen=True)
class DistEnv:
    """The process's place in a (possibly single-process) job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """First host name of a Slurm node list: ``"gpu[03-05,7],cpu1"`` → ``"gpu03"``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if m is None:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, _, ranges = m.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _port_from(job_id: str) -> int:
    digits = re.sub(r"\D", "", job_id) or "0"
    return 20000 + int(digits) % 20000


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read the launcher's variables, Slurm first, then torchrun, then submitit-local."""
    env = os.environ if environ is None else environ
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            world_size=int(env["SLURM_NTASKS"]),
            master_addr=first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            master_port=int(env.get("MASTER_PORT") or _port_from(env.get("SLURM_JOB_ID", "0"))),
            source="slurm",
        )
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            world_size=int(env["WORLD_SIZE"]),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    if env.get("SUBMITIT_EXECUTOR") == "local" and int(env.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1:
        return DistEnv(
            rank=int(env["SUBMITIT_LOCAL_GLOBALID"]),
            local_rank=int(env.get("SUBMITIT_LOCAL_LOCALID", "0")),
            world_size=int(env["SUBMITIT_LOCAL_NTASKS"]),
            master_addr="127.0.0.1",
            master_port=_port_from(env.get("SUBMITIT_LOCAL_JOB_ID", "0")),
            source="submitit-local",
        )
    return DistEnv()


def init(env: DistEnv | None = None, backend: str | None = None,
         timeout: dt.timedelta | None = None) -> DistEnv:
    """Join the process group (gloo on CPU, nccl on CUDA); nothing at world size 1.

    Collectives fail after ``timeout`` (default: `collective_timeout`), so a job whose
    peer died ends with an error instead of hanging until its wall-time.
    """
    import torch
    import torch.distributed as dist

    env = detect() if env is None else env
    if not env.is_distributed or dist.is_initialized():
        return env
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timeout or collective_timeout(),
    )
    log.info("joined %s process group: rank %d/%d via %s (%s)", backend, env.rank,
             env.world_size, env.source, f"{env.master_addr}:{env.master_port}")
    return env


def shutdown() -> None:
    """Leave the process group if one was joined."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


class RankFilter(logging.Filter):
    """Let records through on rank 0 only (use instead of silencing ``print``)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0
