"""Sweep operations from the sweep folder alone: ``basis cancel`` and ``basis clean``.

`cancel` stops a sweep and leaves it resumable: it ends the driver (the process in
``driver.pid``, or the Slurm job in ``driver.job``), ``scancel``s the stage jobs that
``submissions.jsonl`` records and that are still pending or running (by their ids,
never by a name pattern), and records every trial that did not finish as CANCELLED
in Parquet and KILLED in MLflow. ``basis sweep --resume`` reruns those trials; the
stages that were done are kept.

`clean` removes what only a stage that is still running needs: the training
checkpoint (``ckpt.pt``) and temporary files of every DONE stage. Final weights,
results, metrics and records stay.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from analysis.schema import Status, SweepLayout
from jobs import records
from jobs.config import ConfigError, SweepConfig
from jobs.dag import submissions
from jobs.specs import StageFolder
from jobs.sweep import end_sweep

log = logging.getLogger(__name__)

#: Seconds a driver gets to end after SIGTERM before it is killed.
DRIVER_GRACE_S = 15.0


def _sweep(sweep_dir: Path) -> tuple[SweepLayout, SweepConfig]:
    layout = SweepLayout(sweep_dir)
    if not layout.config.exists() or not layout.meta.exists():
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no config.yaml / sweep.json)")
    return layout, SweepConfig.from_dict(yaml.safe_load(layout.config.read_text()))


# --------------------------------------------------------------------------- driver


def _read_driver(path: Path) -> tuple[int, str] | None:
    try:
        parts = path.read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else socket.gethostname())
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _is_driver(pid: int) -> bool:
    """The process runs basis (a recycled pid must not be signalled)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "basis" in cmd or "jobs.cli" in cmd or "jobs/cli" in cmd


def stop_driver(layout: SweepLayout, grace_s: float = DRIVER_GRACE_S) -> str | None:
    """End the sweep's local driver process (and the Ray workers and local jobs of its
    process group, when it leads one) → what was done, or None if none runs here."""
    rec = _read_driver(layout.driver_pid)
    if rec is None:
        return None
    pid, host = rec
    if host != socket.gethostname():
        return f"driver pid {pid} runs on {host}, not here: stop it there"
    if not _alive(pid) or not _is_driver(pid):
        return None
    group = os.getpgid(pid) == pid     # a detached driver leads its own session
    send = (lambda s: os.killpg(pid, s)) if group else (lambda s: os.kill(pid, s))
    send(signal.SIGTERM)
    deadline = time.time() + grace_s
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        send(signal.SIGKILL)
    if group:   # what is left of its group: Ray workers, local stage jobs
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return f"ended the driver (pid {pid}{', its process group' if group else ''})"


# --------------------------------------------------------------------------- Slurm


def live_jobs() -> dict[str, str]:
    """The user's Slurm jobs that are pending or running: id → state ({} without
    Slurm). Array tasks are listed one by one (``squeue -r``), as submitit names them."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "--me", "-o", "%i|%T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    jobs = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            job, state = line.strip().split("|", 1)
            jobs[job] = state
    return jobs


def _scancel(ids: list[str]) -> None:
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- cancel


@dataclass
class CancelReport:
    driver: str | None = None
    cancelled_jobs: list[str] = field(default_factory=list)
    cancelled_trials: list[str] = field(default_factory=list)
    local_jobs: list[str] = field(default_factory=list)

    def lines(self, sweep_dir: Path) -> list[str]:
        out = [f"basis: {self.driver}" if self.driver else "basis: no driver was running"]
        out.append(f"basis: scancelled {len(self.cancelled_jobs)} Slurm job(s)"
                   + (f": {', '.join(self.cancelled_jobs)}" if self.cancelled_jobs else ""))
        if self.local_jobs:
            out.append(f"basis: ended {len(self.local_jobs)} local job(s): "
                       f"{', '.join(self.local_jobs)}")
        out.append(f"basis: {len(self.cancelled_trials)} trial(s) recorded CANCELLED; "
                   f"continue with: basis sweep --resume {sweep_dir}")
        return out


def _stage_folders(layout: SweepLayout) -> list[StageFolder]:
    if not layout.stages.is_dir():
        return []
    return [StageFolder(p) for p in sorted(layout.stages.iterdir()) if p.is_dir()]


def cancel(sweep_dir: Path) -> CancelReport:
    """Stop the sweep in ``sweep_dir`` and leave it resumable (see the module doc)."""
    layout, cfg = _sweep(sweep_dir)
    report = CancelReport()
    live = live_jobs()
    ids: list[str] = []
    driver_job = layout.driver_job.read_text().strip() if layout.driver_job.exists() else ""
    if driver_job and driver_job in live:    # first: it would submit more jobs
        _scancel([driver_job])
        report.driver = f"scancelled the driver's Slurm job {driver_job}"
    else:
        report.driver = stop_driver(layout)
    for folder in _stage_folders(layout):
        if folder.is_done():
            continue
        for sub in submissions(folder):
            if sub.executor == "slurm" and sub.job_id in live and sub.job_id not in ids:
                ids.append(sub.job_id)
            elif sub.executor == "local" and _kill_local(sub.job_id):
                report.local_jobs.append(sub.job_id)
    _scancel(ids)
    report.cancelled_jobs = ids
    report.cancelled_trials = _record_cancelled(layout, cfg)
    _end_parent(layout)
    return report


def _kill_local(job_id: str) -> bool:
    """End a submitit local job still alive after its driver (its pid is its id)."""
    try:
        pid = int(job_id)
    except ValueError:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"submitit" not in cmd or not _alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _record_cancelled(layout: SweepLayout, cfg: SweepConfig) -> list[str]:
    """A CANCELLED Parquet row for every trial without a row, and KILLED for every MLflow
    run (trial or stage) that was opened and not ended → the trials."""
    from jobs import tracking
    from jobs.trial import trial_row

    meta = json.loads(layout.meta.read_text())
    uri = meta.get("mlflow_uri", "")
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = []
    for trial in cfg.trials():
        if records.exists(layout.root, "trials", trial.key) is not None:
            continue
        events = layout.trial_events(trial.key)
        started = events.exists()
        row = {**trial_row(trial, cfg.with_schedule(trial.variant)),
               "status": Status.CANCELLED.value,
               "error": f"cancelled by `basis cancel` at {when}"
                        + ("" if started else " before it started"),
               "log_path": str(events) if started else None}
        records.write(layout.root, "trials", trial.key, [row])
        out.append(trial.key)
    buffers = sorted(layout.tracking.glob("*.jsonl")) + \
        sorted(layout.tracking.glob("stages/*/*.jsonl"))
    for path in buffers:
        lines = path.read_text().splitlines()
        if lines and json.loads(lines[-1]).get("op") != "end":
            tracking.Buffer(path, uri).append(tracking.EndRun(Status.CANCELLED.mlflow))
    return out


def _end_parent(layout: SweepLayout) -> None:
    meta = json.loads(layout.meta.read_text())
    if meta.get("parent_run_id"):
        end_sweep(layout.root, meta, Status.CANCELLED.mlflow)
    meta["cancelled"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    layout.meta.write_text(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------- clean


@dataclass
class CleanReport:
    removed: list[tuple[Path, int]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.removed)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {p} ({_size(n)})" for p, n in self.removed]
        out.append(f"basis: {verb} {len(self.removed)} file(s), {_size(self.bytes)} "
                   f"{'would be ' if self.dry_run else ''}freed")
        return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def clean(sweep_dir: Path, dry_run: bool = False) -> CleanReport:
    """Remove the checkpoints and temporary files of every DONE stage (``dry_run``:
    only list them). A stage that is not done keeps its checkpoint: a retry or a
    resume continues from it."""
    layout, _ = _sweep(sweep_dir)
    report = CleanReport(dry_run=dry_run)
    for folder in _stage_folders(layout):
        if not folder.is_done():
            continue
        for path in [folder.ckpt, *folder.path.glob(".*.tmp")]:
            if path.is_file():
                report.removed.append((path, path.stat().st_size))
                if not dry_run:
                    path.unlink()
    return report
