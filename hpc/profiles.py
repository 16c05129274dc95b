"""Cluster profiles: every cluster fact comes from ``slurm/profiles/<name>.yaml``.

A profile names the submitit executor and the resources of a job. It is validated
before anything is submitted: unknown keys, wrong types and values that could smuggle
extra ``#SBATCH`` lines into the generated script are refused with one clear line.

A profile may also give resources per stage kind (``stages: {score: {gpus_per_node: 1,
…}}``): :meth:`ClusterProfile.for_stage` applies them, and ``make_executor(…, stage=KIND)``
builds that stage's executor.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

#: Where the shipped profiles live (the repository's ``slurm/profiles``).
PROFILES_DIR = Path(__file__).resolve().parent.parent / "slurm" / "profiles"
EXECUTORS = ("local", "slurm", "debug")
_UNSAFE = re.compile(r"[\n\r;]|#SBATCH")
#: The stage kinds of a sweep (see DESIGN.md "How data flows"); ``stages:`` keys.
STAGE_KINDS = ("pretrain", "init", "score", "annotate", "pseudo", "segment", "select",
               "control")
#: The resource fields a ``stages.<kind>`` entry may override.
STAGE_FIELDS = ("partition", "account", "qos", "nodes", "tasks_per_node", "gpus_per_node",
                "cpus_per_task", "mem_gb", "timeout_min", "throughput_img_s")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the field."""


@dataclass(frozen=True)
class ClusterProfile:
    """Resources and placement of every job of a sweep.

    ``setup`` lines run in the job's shell before Python starts (module loads, venv
    activation): they are shell by design, so only put there what you would type.
    """

    name: str
    executor: str = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    max_concurrent_trials: int = 2
    collective_timeout_s: int = 600    # a DDP collective waiting longer fails the job
    retries: int = 0                   # a failed stage job is submitted again this often
    job_arrays: bool = True            # same-shape stages go in one Slurm job array
    tracking_uri: str | None = None    # MLflow server (http://…); None: sqlite in the sweep
    # training images per second of one job at throughput_px (dry-run estimates only)
    throughput_img_s: float | None = None
    throughput_px: int = 64
    setup: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # per stage kind, resource overrides: {"score": {"gpus_per_node": 1, …}}
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ProfileError(f"profile {self.name}: executor={self.executor!r}, "
                               f"allowed: {', '.join(EXECUTORS)}")
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min",
                    "max_concurrent_trials", "collective_timeout_s"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ProfileError(f"profile {self.name}: {key}={value!r}, must be an integer ≥ 1")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) \
                or self.retries < 0:
            raise ProfileError(f"profile {self.name}: retries={self.retries!r}, must be an "
                               "integer ≥ 0")
        if self.tracking_uri is not None and (
                not isinstance(self.tracking_uri, str)
                or not re.match(r"^(https?://|sqlite:///|file:|databricks)", self.tracking_uri)
                or _UNSAFE.search(self.tracking_uri)):
            raise ProfileError(f"profile {self.name}: tracking_uri={self.tracking_uri!r}, "
                               "expected http(s)://host:port, sqlite:///path or file:")
        if not isinstance(self.job_arrays, bool):
            raise ProfileError(f"profile {self.name}: job_arrays={self.job_arrays!r}, must be "
                               "true or false")
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise ProfileError(f"profile {self.name}: gpus_per_node={self.gpus_per_node!r}, "
                               "must be an integer ≥ 0")
        if self.gpus_per_node and self.tasks_per_node > self.gpus_per_node:
            raise ProfileError(
                f"profile {self.name}: tasks_per_node={self.tasks_per_node} > "
                f"gpus_per_node={self.gpus_per_node}; DDP runs one task per GPU")
        if self.throughput_img_s is not None and (
                not isinstance(self.throughput_img_s, (int, float))
                or isinstance(self.throughput_img_s, bool) or self.throughput_img_s <= 0):
            raise ProfileError(f"profile {self.name}: throughput_img_s="
                               f"{self.throughput_img_s!r}, must be a number > 0")
        if not isinstance(self.throughput_px, int) or self.throughput_px < 1:
            raise ProfileError(f"profile {self.name}: throughput_px={self.throughput_px!r}, "
                               "must be an integer ≥ 1")
        if self.mem_gb is not None and (not isinstance(self.mem_gb, (int, float))
                                        or isinstance(self.mem_gb, bool) or self.mem_gb <= 0):
            raise ProfileError(f"profile {self.name}: mem_gb={self.mem_gb!r}, must be a "
                               "number > 0")
        for key in ("name", "partition", "account", "qos"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or _UNSAFE.search(value)):
                raise ProfileError(f"profile {self.name!r}: {key}={value!r} holds a newline, "
                                   "';' or '#SBATCH'")
        self._check_stages()

    def _check_stages(self) -> None:
        if not isinstance(self.stages, Mapping):
            raise ProfileError(f"profile {self.name}: stages={self.stages!r}, expected a mapping "
                               f"of stage kinds ({', '.join(STAGE_KINDS)})")
        for kind, over in self.stages.items():
            if kind not in STAGE_KINDS:
                raise ProfileError(f"profile {self.name}: stages.{kind}: unknown stage kind; "
                                   f"allowed: {', '.join(STAGE_KINDS)}")
            if not isinstance(over, Mapping):
                raise ProfileError(f"profile {self.name}: stages.{kind}={over!r}, expected a "
                                   f"mapping of resource keys ({', '.join(STAGE_FIELDS)})")
            unknown = sorted(map(str, set(over) - set(STAGE_FIELDS)))
            if unknown:
                raise ProfileError(f"profile {self.name}: stages.{kind}: unknown key(s) "
                                   f"{', '.join(unknown)}; allowed: "
                                   f"{', '.join(STAGE_FIELDS)}")
            # the overridden profile must pass every check above; its name locates the error
            dataclasses.replace(self, name=f"{self.name}: stages.{kind}", stages={}, **over)

    def for_stage(self, kind: str) -> "ClusterProfile":
        """This profile with the ``stages.<kind>`` overrides applied; ``self`` if none.

        The returned profile keeps the name and has no ``stages`` of its own: it is the
        resolved resources of that one stage, so it is not resolved again for another.
        """
        if kind not in STAGE_KINDS:
            raise ProfileError(f"profile {self.name}: stage kind {kind!r} unknown; allowed: "
                               f"{', '.join(STAGE_KINDS)}")
        over = self.stages.get(kind)
        if not over:
            return self
        return dataclasses.replace(self, stages={}, **over)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "ClusterProfile":
        """Load ``slurm/profiles/NAME.yaml`` or a YAML file path."""
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = PROFILES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
            raise ProfileError(f"profile {name_or_path!r} not found (known: {', '.join(known)})")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ProfileError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise ProfileError(f"{path}: expected a mapping of profile keys")
        raw.setdefault("name", path.stem)
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ProfileError(f"{path}: unknown key(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(sorted(allowed))}")
        raw["setup"] = tuple(raw.get("setup") or ())
        if raw.get("stages") is None:
            raw["stages"] = {}
        try:
            return cls(**raw)
        except ProfileError as err:
            raise ProfileError(f"{path}: {err}") from None

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def make_executor(profile: ClusterProfile, folder: str | Path, name: str | None = None,
                  stage: str | None = None) -> Any:
    """A submitit executor for ``profile`` writing its logs under ``folder``.

    Every parameter reaches ``sbatch`` through submitit's own typed parameters.
    ``name`` is the Slurm job name (``squeue``, ``sacct --name``), e.g. ``basis-demo-init``.
    ``stage`` is a stage kind (one of ``STAGE_KINDS``): its ``stages:`` overrides apply.
    """
    if name is not None and not _JOB_NAME.fullmatch(name):
        raise ProfileError(f"job name {name!r}: use letters, digits, '_', '.', '+', '-'")
    if stage is not None:
        profile = profile.for_stage(stage)
    import submitit

    from hpc.distributed import TIMEOUT_ENV

    folder = Path(folder)
    if profile.executor == "debug":
        return submitit.DebugExecutor(folder=folder)
    env_line = f"export {TIMEOUT_ENV}={int(profile.collective_timeout_s)}"
    if profile.executor == "local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=profile.timeout_min, nodes=1,
                                tasks_per_node=profile.tasks_per_node, setup=[env_line])
        return local
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = dict(
        timeout_min=profile.timeout_min,
        nodes=profile.nodes,
        tasks_per_node=profile.tasks_per_node,
        cpus_per_task=profile.cpus_per_task,
    )
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.mem_gb is not None:
        params["mem_gb"] = profile.mem_gb
    if profile.partition:
        params["slurm_partition"] = profile.partition
    if profile.account:
        params["slurm_account"] = profile.account
    if profile.qos:
        params["slurm_qos"] = profile.qos
    params["slurm_setup"] = [env_line, *profile.setup]
    if name:
        params["name"] = name
    # one failed rank ends the whole step, so its peers do not wait out the wall-time
    params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    params.update({f"slurm_{k}": v for k, v in profile.extra.items()})
    ex.update_parameters(**params)
    return ex
