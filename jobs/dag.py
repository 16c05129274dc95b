"""Content-addressed stages: each lives in ``SWEEP/stages/<kind>-<address>/`` (its typed
spec's `jobs.specs.StageSpec.folder`) and is done when its ``DONE`` marker exists. A
stage several trials need is computed once: the first trial takes its lock and submits
it, the others wait on the lock and then find ``DONE``. A re-run sweep skips every
stage that is done, and reattaches to a Slurm job that is still queued or running.

Every submission of a stage is one JSON line of ``submissions.jsonl`` (`Submission`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import submitit

from jobs import specs as stage_specs
from jobs.specs import StageFolder, StageSpec

log = logging.getLogger(__name__)

#: Builds the submitit job object of a stage from its spec and folder.
JobFactory = Callable[[StageSpec, StageFolder], Callable[[], Any]]
#: Builds a submitit executor writing its logs in the given folder.
ExecutorFactory = Callable[[Path], submitit.Executor]
#: Receives every per-epoch record a running job appends to its metrics file.
MetricsSink = Callable[[dict[str, Any]], None]

#: Slurm states of a job that will still produce an outcome.
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
               "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}


class StageFailed(RuntimeError):
    """A stage's job failed; carries where its log is."""

    def __init__(self, stage: str, message: str, log_path: str | None,
                 job_ids: list[str]) -> None:
        super().__init__(f"stage {stage} failed: {message}")
        self.stage = stage
        self.log_path = log_path
        self.job_ids = job_ids


@dataclass
class StageResult:
    spec: StageSpec
    folder: StageFolder
    result: dict[str, Any]
    job_ids: list[str] = field(default_factory=list)
    computed: bool = False      # False when it was found done (reused)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def dir(self) -> Path:
        return self.folder.path


@dataclass(frozen=True)
class Submission:
    """One job submitted for a stage: a line of its ``submissions.jsonl``."""

    job_id: str
    folder: str                 # the submitit folder of the job's logs
    tasks: int
    executor: str               # "slurm" | "local" | "debug"
    submitted: str              # ISO time
    array: str | None = None    # the job array's folder, when submitted as one

    @classmethod
    def of(cls, handle: submitit.Job, folder: Path, array: bool = False) -> "Submission":
        executor = ("slurm" if isinstance(handle, submitit.SlurmJob) else
                    "debug" if isinstance(handle, submitit.DebugJob) else "local")
        return cls(str(handle.job_id), str(folder), int(handle.num_tasks), executor,
                   time.strftime("%Y-%m-%dT%H:%M:%S"), str(folder) if array else None)

    def handle(self) -> submitit.SlurmJob | None:
        """The Slurm job, to poll again after the driver came back (None if local:
        a local job died with its driver)."""
        if self.executor != "slurm":
            return None
        return submitit.SlurmJob(folder=self.folder, job_id=self.job_id,
                                 tasks=tuple(range(self.tasks)))


def submissions(folder: StageFolder) -> list[Submission]:
    """The stage's submissions, oldest first."""
    path = folder.submissions
    if not path.exists():
        return []
    return [Submission(**json.loads(line)) for line in path.read_text().splitlines()
            if line.strip()]


def job_ids(folder: StageFolder) -> list[str]:
    """The job ids a stage was submitted as, oldest first."""
    return [s.job_id for s in submissions(folder)]


def _record(folder: StageFolder, sub: Submission) -> None:
    with open(folder.submissions, "a") as fh:
        fh.write(json.dumps(asdict(sub)) + "\n")


def read_metrics(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """New complete lines of a metrics file since ``offset`` → (records, new offset)."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n") + 1
    lines = chunk[:end].decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()], offset + end


def epoch_values(rec: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record (not its stage, epoch or time stamp)."""
    return {k: float(v) for k, v in rec.items() if k not in ("stage", "epoch", "time")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _reattach(folder: StageFolder) -> submitit.SlurmJob | None:
    """The stage's last Slurm job if it is still queued or running (a driver that died
    and came back must not submit the same work twice), else None."""
    subs = submissions(folder)
    job = subs[-1].handle() if subs else None
    if job is None:
        return None
    try:
        state = job.state
    except Exception:  # sacct unreachable: resubmitting is the safe choice
        return None
    return job if state.split()[0] in LIVE_STATES else None


_EXC_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Exit|Interrupt))(:.*)?$")


def _summary(err: BaseException) -> str:
    """The line of a job's trace that says what went wrong (its last exception line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    hits = [line for line in lines if _EXC_LINE.match(line)]
    return hits[-1] if hits else (lines[0] if lines else type(err).__name__)


#: What a task's log says when the task died without a Python trace.
_DEATH_LINE = re.compile(r"(Segmentation fault|Killed|killed by signal|Bus error|"
                         r"out of memory|oom-kill|CANCELLED|DUE TO TIME LIMIT)", re.I)

_RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s?")


def _peer_errors(stderr0: Path, job_id: str) -> str:
    """The other tasks' own last error lines, from their logs next to task 0's
    (``<job>_<task>_log.err``): when a peer dies, task 0 only reports "Connection closed
    by peer", and the cause is in the peer's log. ``""`` when none says more."""
    found = []
    for path in sorted(stderr0.parent.glob(f"{job_id}_*_log.err")):
        task = path.name[len(job_id) + 1:].split("_", 1)[0]
        if task == "0" or not task.isdigit():
            continue
        try:
            lines = [_RANK_PREFIX.sub("", ln).strip()     # torch's "[rank1]: " prefix
                     for ln in path.read_text(errors="replace").splitlines()]
        except OSError:
            continue
        hits = [ln for ln in lines if _EXC_LINE.match(ln) or _DEATH_LINE.search(ln)]
        if hits:
            found.append(f"task {task}: {hits[-1][:200]} ({path})")
    return "; ".join(found)


def _final_state(handle: submitit.Job) -> str:
    """The scheduler's word on a finished job (TIMEOUT, CANCELLED, FAILED …), if any."""
    if not isinstance(handle, submitit.SlurmJob):
        return ""
    state = ""
    for _ in range(10):    # the accounting record may trail the job's end by a moment
        try:
            state = str(handle.get_info(mode="force").get("State", "")).split()[0]
        except Exception:
            return ""
        if state not in ("RUNNING", "COMPLETING", "PENDING"):
            return state
        time.sleep(1)
    return state


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare(spec: StageSpec, folder: StageFolder, fresh: bool = True) -> None:
    """Ready a stage folder for a submission. ``fresh`` starts the metrics stream over
    (a first attempt); a retry keeps the epochs already streamed, as it resumes from
    the stage's checkpoint."""
    folder.path.mkdir(parents=True, exist_ok=True)
    if fresh:
        folder.metrics.unlink(missing_ok=True)
    folder.config.write_text(json.dumps({**spec.to_dict(), "code": stage_specs.code_fingerprint()},
                                        indent=1, sort_keys=True))


def _new_folder(parent: Path) -> Path:
    """A fresh submitit folder per submission: Slurm job ids restart when its state is
    wiped, and a reused folder would hand back an old job's result."""
    folder = parent / time.strftime("%Y%m%d-%H%M%S")
    while folder.exists():      # a retry within the same second
        folder = folder.with_name(folder.name + "x")
    return folder


def _submitit_dir(folder: StageFolder) -> Path:
    """``SWEEP/submitit``: beside ``SWEEP/stages``."""
    return folder.path.parent.parent / "submitit"


def _submit(spec: StageSpec, folder: StageFolder, job: JobFactory,
            executor: ExecutorFactory, fresh: bool = True) -> submitit.Job:
    """Submit the stage's job; record the submission → the submitit job handle."""
    _prepare(spec, folder, fresh)
    logs = _new_folder(_submitit_dir(folder) / folder.name)
    handle = executor(logs).submit(job(spec, folder))
    _record(folder, Submission.of(handle, logs))
    log.info("stage %s submitted as job %s (logs: %s)", folder.name, handle.job_id, logs)
    return handle


def submit_ahead(sweep_dir: Path, specs: Sequence[StageSpec], job: JobFactory,
                 executor: ExecutorFactory) -> list[str]:
    """Submit the stages of ``specs`` that are neither done nor queued, ahead of the
    trials that need them: two or more as one Slurm job array (submitit's ``batch``),
    a single one as a plain job → the job ids. Trials then find each stage queued and
    wait for it (`ensure` reattaches) instead of submitting it again, so the first
    stage runs while the driver starts Ray and the trials' workers."""
    todo: dict[Path, tuple[StageSpec, StageFolder]] = {}
    for spec in specs:
        folder = spec.folder(sweep_dir)
        if folder.path in todo or folder.is_done():
            continue
        folder.path.mkdir(parents=True, exist_ok=True)
        if _reattach(folder) is None:
            todo[folder.path] = (spec, folder)
    if not todo:
        return []
    if len(todo) == 1:      # one stage is no array
        (spec, folder), = todo.values()
        return [_submit(spec, folder, job, executor).job_id]
    kinds = sorted({spec.kind for spec, _ in todo.values()})
    logs = _new_folder(Path(sweep_dir) / "submitit" / f"array-{'+'.join(kinds)}")
    ex = executor(logs)
    for spec, folder in todo.values():
        _prepare(spec, folder)
    with ex.batch():
        handles = [ex.submit(job(spec, folder)) for spec, folder in todo.values()]
    for (_, folder), handle in zip(todo.values(), handles):
        _record(folder, Submission.of(handle, logs, array=True))
    ids = [h.job_id for h in handles]
    log.info("%d %s stages submitted as one job array: %s", len(ids), "+".join(kinds),
             ", ".join(ids))
    return ids


def _stream(handle: submitit.Job, metrics: Path, offset: int,
            on_metrics: MetricsSink | None, poll_s: float) -> int:
    """Poll ``handle`` until it is done, passing each new metrics record on → the
    offset in the metrics file reached."""
    while True:
        finished = handle.done()
        records, offset = read_metrics(metrics, offset)
        for rec in records:
            if on_metrics is not None:
                on_metrics(rec)
        if finished:
            return offset
        time.sleep(poll_s)


def _attach_or_submit(spec: StageSpec, folder: StageFolder, job: JobFactory,
                      executor: ExecutorFactory) -> submitit.Job:
    """The stage's live Slurm job if a driver before this one submitted it, else a new
    submission."""
    handle = _reattach(folder)
    if handle is None:
        return _submit(spec, folder, job, executor)
    log.info("stage %s: job %s is still %s; waiting for it", folder.name, handle.job_id,
             handle.state)
    return handle


def _await_done(spec: StageSpec, folder: StageFolder, handle: submitit.Job, job: JobFactory,
                executor: ExecutorFactory, on_metrics: MetricsSink | None, poll_s: float,
                retries: int) -> None:
    """Wait for the stage's job, streaming its metrics; submit it again after a failure,
    up to ``retries`` times (it resumes from the stage's checkpoint).

    Raises:
        StageFailed: the last attempt failed, or the job ended without ``DONE``.
    """
    offset = 0
    for attempt in range(retries + 1):
        if attempt:
            handle = _submit(spec, folder, job, executor, fresh=False)
        offset = _stream(handle, folder.metrics, offset, on_metrics, poll_s)
        try:
            handle.results()   # every task's; `result()` refuses multi-task jobs
        except Exception as err:  # submitit: FailedJobError / UncompletedJobError
            short = _summary(err)
            state = _final_state(handle)
            if state:
                short = f"job {handle.job_id} ended {state}: {short}"
            peers = _peer_errors(Path(handle.paths.stderr), str(handle.job_id))
            if peers:
                short = f"{short} [{peers}]"
            if attempt < retries:
                log.warning("stage %s: %s; retry %d of %d", folder.name, short[:600],
                            attempt + 1, retries)
                continue
            if attempt:
                short = f"{short} (after {attempt + 1} attempts)"
            raise StageFailed(folder.name, short[:1000], str(handle.paths.stderr),
                              job_ids(folder)) from err
        if not folder.is_done():
            raise StageFailed(folder.name, "job ended without writing DONE",
                              str(handle.paths.stderr), job_ids(folder))
        return


def ensure(sweep_dir: Path, spec: StageSpec, job: JobFactory, executor: ExecutorFactory,
           on_metrics: MetricsSink | None = None, poll_s: float = 1.0,
           retries: int = 0) -> StageResult:
    """Make sure the stage of ``spec`` is done; submit ``job(spec, folder)`` if it is not.

    Args:
        job: builds the submitit job object for the stage.
        executor: builds a submitit executor writing its logs in the given folder.
        on_metrics: called with every per-epoch record the job appends while it runs.
        retries: a failed job is submitted again this often (it resumes from the
            stage's checkpoint) before the stage counts as failed.
    Raises:
        StageFailed: the job failed (every attempt); the message and log path say why.
    """
    folder = spec.folder(sweep_dir)
    if folder.is_done():
        return StageResult(spec, folder, folder.read_result(), job_ids(folder))
    with _locked(folder.lock):
        if folder.is_done():     # another trial computed it while we waited
            return StageResult(spec, folder, folder.read_result(), job_ids(folder))
        folder.path.mkdir(parents=True, exist_ok=True)
        handle = _attach_or_submit(spec, folder, job, executor)
        _await_done(spec, folder, handle, job, executor, on_metrics, poll_s, retries)
        return StageResult(spec, folder, folder.read_result(), job_ids(folder), computed=True)
