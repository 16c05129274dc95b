"""Content-addressed stages: each lives in ``SWEEP/stages/<kind>-<hash>/`` and is done
when its ``DONE`` marker exists. A stage several trials need is computed once: the
first trial takes its lock and submits it, the others wait on the lock and then find
``DONE``. A re-run sweep skips every stage that is done.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from jobs.config import digest

log = logging.getLogger(__name__)
DONE = "DONE"
METRICS = "metrics.jsonl"
RESULT = "result.json"


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
    name: str
    dir: Path
    result: dict[str, Any]
    job_ids: list[str] = field(default_factory=list)
    computed: bool = False      # False when it was found done (reused)


def stage_dir(sweep_dir: Path, kind: str, cfg: dict[str, Any]) -> Path:
    return Path(sweep_dir) / "stages" / f"{kind}-{digest(cfg)}"


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


def job_ids(d: Path) -> list[str]:
    """The job ids a stage was submitted as, oldest first."""
    return [line.split()[0] for line in _job_lines(d)]


def _job_lines(d: Path) -> list[str]:
    f = d / "job_ids"
    return [line for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


#: Slurm states of a job that will still produce an outcome.
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
               "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}


def _reattach(d: Path) -> Any:
    """The stage's last Slurm job if it is still queued or running (a driver that died
    and came back must not submit the same work twice), else None."""
    lines = _job_lines(d)
    if not lines:
        return None
    parts = lines[-1].split()
    if len(parts) < 4 or parts[3] != "slurm":
        return None
    import submitit

    job = submitit.SlurmJob(folder=parts[1], job_id=parts[0], tasks=tuple(range(int(parts[2]))))
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


def _final_state(handle: Any) -> str:
    """The scheduler's word on a finished job (TIMEOUT, CANCELLED, FAILED …), if any."""
    if type(handle).__name__ != "SlurmJob":
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


def epoch_values(rec: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record (not its stage, epoch or time stamp)."""
    return {k: float(v) for k, v in rec.items() if k not in ("stage", "epoch", "time")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _prepare(d: Path, cfg: dict[str, Any], fresh: bool = True) -> None:
    """Ready a stage folder for a submission. ``fresh`` starts the metrics stream over
    (a first attempt); a retry keeps the epochs already streamed, as it resumes from
    the stage's checkpoint."""
    if fresh:
        (d / METRICS).unlink(missing_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str))


def _new_folder(parent: Path) -> Path:
    """A fresh submitit folder per submission: Slurm job ids restart when its state is
    wiped, and a reused folder would hand back an old job's result."""
    folder = parent / time.strftime("%Y%m%d-%H%M%S")
    while folder.exists():      # a retry within the same second
        folder = folder.with_name(folder.name + "x")
    return folder


def _submit(sweep_dir: Path, d: Path, cfg: dict[str, Any], job: Callable[[Path], Any],
            executor: Callable[[Path], Any], fresh: bool = True) -> Any:
    """Submit the stage's job; record its id → the submitit job handle."""
    _prepare(d, cfg, fresh)
    folder = _new_folder(Path(sweep_dir) / "submitit" / d.name)
    handle = executor(folder).submit(job(d))
    _record(d, handle, folder)
    log.info("stage %s submitted as job %s (logs: %s)", d.name, handle.job_id, folder)
    return handle


def _record(d: Path, handle: Any, folder: Path) -> None:
    kind = "slurm" if type(handle).__name__ == "SlurmJob" else "local"
    with open(d / "job_ids", "a") as fh:
        fh.write(f"{handle.job_id} {folder} {len(handle._tasks)} {kind}\n")


def submit_array(sweep_dir: Path, kind: str, cfgs: list[dict[str, Any]],
                 job: Callable[[dict[str, Any], Path], Any],
                 executor: Callable[[Path], Any]) -> list[str]:
    """Submit the stages of ``cfgs`` that are neither done nor queued as one Slurm job
    array (submitit's ``batch``) → the array's job ids. Trials then find each stage
    queued and wait for it (`ensure` reattaches) instead of submitting it again."""
    todo: dict[Path, dict[str, Any]] = {}
    for cfg in cfgs:
        d = stage_dir(sweep_dir, kind, cfg)
        if d in todo or (d / DONE).exists():
            continue
        d.mkdir(parents=True, exist_ok=True)
        if _reattach(d) is None:
            todo[d] = cfg
    if len(todo) < 2:       # one stage is no array: its trial submits it
        return []
    folder = _new_folder(Path(sweep_dir) / "submitit" / f"array-{kind}")
    ex = executor(folder)
    for d, cfg in todo.items():
        _prepare(d, cfg)
    with ex.batch():
        handles = [ex.submit(job(cfg, d)) for d, cfg in todo.items()]
    for d, handle in zip(todo, handles):
        _record(d, handle, folder)
    ids = [h.job_id for h in handles]
    log.info("%d %s stages submitted as one job array: %s", len(ids), kind, ", ".join(ids))
    return ids


def _wait(handle: Any, metrics: Path, offset: int,
          on_metrics: Callable[[dict[str, Any]], None] | None, poll_s: float) -> int:
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


def ensure(sweep_dir: Path, kind: str, cfg: dict[str, Any], job: Callable[[Path], Any],
           executor: Callable[[Path], Any],
           on_metrics: Callable[[dict[str, Any]], None] | None = None,
           poll_s: float = 1.0, retries: int = 0) -> StageResult:
    """Make sure the stage of ``cfg`` is done; submit ``job(stage_dir)`` if it is not.

    Args:
        job: builds the submitit job object for the stage folder.
        executor: builds a submitit executor writing its logs in the given folder.
        on_metrics: called with every per-epoch record the job appends while it runs.
        retries: a failed job is submitted again this often (it resumes from the
            stage's checkpoint) before the stage counts as failed.
    Raises:
        StageFailed: the job failed (every attempt); the message and log path say why.
    """
    d = stage_dir(sweep_dir, kind, cfg)
    if (d / DONE).exists():
        return StageResult(d.name, d, json.loads((d / RESULT).read_text()), job_ids(d))
    with _locked(d.parent / f"{d.name}.lock"):
        if (d / DONE).exists():     # another trial computed it while we waited
            return StageResult(d.name, d, json.loads((d / RESULT).read_text()), job_ids(d))
        d.mkdir(parents=True, exist_ok=True)
        handle = _reattach(d)
        if handle is not None:
            log.info("stage %s: job %s is still %s; waiting for it", d.name, handle.job_id,
                     handle.state)
        else:
            handle = _submit(sweep_dir, d, cfg, job, executor)
        offset, attempt = 0, 0
        while True:
            offset = _wait(handle, d / METRICS, offset, on_metrics, poll_s)
            try:
                handle.results()   # every task's; `result()` refuses multi-task jobs
                break
            except Exception as err:  # submitit: FailedJobError / UncompletedJobError
                short = _summary(err)
                state = _final_state(handle)
                if state:
                    short = f"job {handle.job_id} ended {state}: {short}"
                if attempt < retries:
                    attempt += 1
                    log.warning("stage %s: %s; retry %d of %d", d.name, short[:300], attempt,
                                retries)
                    handle = _submit(sweep_dir, d, cfg, job, executor, fresh=False)
                    continue
                if attempt:
                    short = f"{short} (after {attempt + 1} attempts)"
                raise StageFailed(d.name, short[:500], str(handle.paths.stderr),
                                  job_ids(d)) from err
        ids = job_ids(d)
        if not (d / DONE).exists():
            raise StageFailed(d.name, "job ended without writing DONE",
                              str(handle.paths.stderr), ids)
        return StageResult(d.name, d, json.loads((d / RESULT).read_text()), ids, computed=True)
