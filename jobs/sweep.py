"""The sweep driver: validate, prepare the records, let Ray Tune walk the grid.

Ray Tune holds the grid: one point per `TrialConfig`, whose flat dict is the trial's
Tune config; each trial is `jobs.trial.run_trial`. The driver creates the
MLflow store, experiment and parent run before any trial starts. A sweep folder is
bound to its config: running another config into it is refused unless ``force``.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from analysis.schema import LAYOUT_VERSION, Status, SweepLayout
from hpc.profiles import ClusterProfile
from jobs import tracking
from jobs.config import ConfigError, SweepConfig
from jobs.data import resolved
from jobs.trial import SweepContext, run_trial

log = logging.getLogger(__name__)


def driver_record(pid: int) -> str:
    """``driver.pid``'s line: the driver's pid and the host it runs on (`jobs.ops`
    `cancel` ends it)."""
    import socket

    return f"{pid} {socket.gethostname()}\n"


def read_meta(sweep_dir: Path) -> dict[str, Any]:
    path = SweepLayout(sweep_dir).meta
    return json.loads(path.read_text()) if path.exists() else {}


def check_layout(sweep_dir: Path) -> None:
    """Refuse a sweep folder written by a basis with another folder layout (its stage
    addresses and records would be half reused), in one line."""
    meta = read_meta(sweep_dir)
    if meta and meta.get("layout", 1) != LAYOUT_VERSION:
        raise ConfigError(
            f"{sweep_dir} was written by an older basis (folder layout "
            f"{meta.get('layout', 1)}, this one writes {LAYOUT_VERSION}: stage addresses "
            "changed); run the sweep into a new --sweep-dir")


def prepare(cfg: SweepConfig, sweep_dir: Path, force: bool = False,
            profile: str | None = None, tracking_uri: str | None = None,
            track: bool = True) -> dict[str, Any]:
    """Create or reopen the sweep folder; refuse one that belongs to another config.
    ``track``: also create or reopen the sweep's MLflow experiment and parent run
    (``basis regime`` does not: its stages log nothing there, and it runs without
    MLflow installed)."""
    paths = SweepLayout(sweep_dir)
    check_layout(sweep_dir)
    meta: dict[str, Any] = {}
    if paths.meta.exists():
        meta = json.loads(paths.meta.read_text())
        if meta.get("fingerprint") != cfg.fingerprint() and not force:
            raise ConfigError(
                f"{sweep_dir} holds sweep {meta.get('name')!r} of another config "
                f"(fingerprint {meta.get('fingerprint')} ≠ {cfg.fingerprint()}); use a new "
                "--sweep-dir, or --force to run this config there anyway")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    uri = tracking_uri or meta.get("mlflow_uri") or tracking.default_uri(sweep_dir)
    exp_id, parent = meta.get("experiment_id"), meta.get("parent_run_id")
    if track:
        try:
            exp_id, parent = tracking.open_sweep(
                uri, f"basis/{cfg.name}", {**cfg.flat(), "n_trials": cfg.n_trials()},
                parent_run_id=parent, artifact_root=paths.mlartifacts)
        except Exception as err:
            raise ConfigError(f"MLflow tracking at {uri} cannot be reached or written "
                              f"({type(err).__name__}: {str(err)[:200]})") from err
    from jobs.specs import code_fingerprint

    meta.update(name=cfg.name, fingerprint=cfg.fingerprint(), layout=LAYOUT_VERSION,
                code=code_fingerprint(),
                experiment_id=exp_id,
                profile=profile or meta.get("profile"),
                parent_run_id=parent, mlflow_uri=uri,
                command=" ".join(shlex.quote(a) for a in sys.argv),
                started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    paths.meta.write_text(json.dumps(meta, indent=1))
    return meta


def _ray_init(num_cpus: int) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ray turns "127.0.0.1" into the host's reachable address unless it runs in its
    # single-machine mode; the sweep's Ray is private to the driver: loopback only
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh private instance, never a stale one left by a
        # driver that was killed
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False,
                 logging_level=logging.WARNING, _node_ip_address="127.0.0.1")


def _trainable(config: dict[str, Any], ctx: SweepContext) -> None:
    run_trial(config, ctx)


def _progress(total: int) -> Any:
    """A Tune callback drawing one progress bar over the sweep's trials."""
    from ray.tune import Callback
    from tqdm import tqdm

    class Progress(Callback):
        def __init__(self) -> None:
            self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True)
            self.failed = 0

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            if "epoch" in result and "stage" in result:
                self.bar.set_postfix_str(f"{_key(trial.config)}: {result['stage']} "
                                         f"epoch {result['epoch']}", refresh=True)
            if result.get("status") == "FAILED":
                self.failed += 1
            if "status" in result:
                ap = result.get("ap50")
                msg = f"{_key(trial.config)} {result['status']}"
                if ap is not None and ap == ap:
                    msg += f" AP50={100 * ap:.1f}"
                self.bar.write(msg)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.bar.update(1)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.bar.close()

    return Progress()


def _key(config: dict[str, Any]) -> str:
    """A trial's Tune config (`TrialConfig.to_flat_dict`) as a short label."""
    beta = "" if config.get("beta") is None else f" β={config['beta']}"
    frac = "" if config.get("pool_fraction") is None else f" pool={config['pool_fraction']}"
    sched = f" {config['variant']}" if config.get("variant") else ""
    return (f"[{config.get('mode')}{beta} N={config.get('N')} seed={config.get('seed')}"
            f"{frac}{sched}]")


def search_space(cfg: SweepConfig) -> tuple[dict[str, Any], Any]:
    """The grid for Tune: one point per trial, whose Tune config is exactly the trial's
    flat dict (`TrialConfig.to_flat_dict`) → (param_space, search algorithm)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = [t.to_flat_dict() for t in cfg.trials()]
    space = {k: tune.choice(sorted({p[k] for p in points}, key=repr)) for k in points[0]}
    return space, BasicVariantGenerator(points_to_evaluate=points, max_concurrent=0)


def run(cfg: SweepConfig, profile: ClusterProfile, sweep_dir: Path, force: bool = False,
        verbose: int = 1, tracking_uri: str | None = None,
        reuse_stale: bool = False) -> dict[str, Any]:
    """Run (or resume) every trial of ``cfg``; return the sweep's meta record (with
    ``stale_reused``: the stale stages kept under ``reuse_stale``)."""
    sweep_dir = sweep_dir.resolve()
    cfg = resolved(cfg)
    meta = prepare(cfg, sweep_dir, force=force, profile=profile.name,
                   tracking_uri=tracking_uri or profile.tracking_uri)
    from jobs.specs import pin_code_fingerprint

    pin_code_fingerprint(meta["code"])
    meta["stale_reused"] = _stale(cfg, profile, sweep_dir, reuse_stale)
    ctx = SweepContext(str(sweep_dir), cfg.to_dict(), profile, meta["mlflow_uri"],
                       meta["experiment_id"], meta["parent_run_id"], meta["code"],
                       reuse_stale=reuse_stale)
    if profile.executor == "slurm" and profile.job_arrays:
        submit_init_array(cfg, profile, sweep_dir)
    _ray_init(num_cpus=profile.max_concurrent_trials)
    from ray import tune

    space, search = search_space(cfg)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), {"cpu": 1}),
        param_space=space,
        # reuse_actors: a trial runs in the worker process of the trial before it, so each
        # trial does not pay a new process's imports (torch, MLflow, submitit: seconds)
        tune_config=tune.TuneConfig(max_concurrent_trials=profile.max_concurrent_trials,
                                    search_alg=search, num_samples=cfg.n_trials(),
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=str(SweepLayout(sweep_dir).ray),
                                  verbose=verbose, callbacks=[_progress(cfg.n_trials())]),
    )
    status = Status.COMPLETED.mlflow
    pid_file = SweepLayout(sweep_dir).driver_pid
    pid_file.write_text(driver_record(os.getpid()))    # `basis cancel` ends it
    try:
        tuner.fit()
    except BaseException:
        status = Status.CANCELLED.mlflow
        raise
    finally:
        end_sweep(sweep_dir, meta, status)
        if pid_file.exists() and pid_file.read_text() == driver_record(os.getpid()):
            pid_file.unlink()
    return meta


def _stale(cfg: SweepConfig, profile: ClusterProfile, sweep_dir: Path,
           reuse: bool) -> list[str]:
    """Log the sweep's stale stages (done by other code); under ``reuse`` make this
    process keep them → "new ← kept" lines (empty when not reused)."""
    from jobs import plan
    from jobs.specs import reuse_stale

    stale = plan.build(cfg, profile, sweep_dir, reuse_stale=reuse).stale()
    if not stale:
        return []
    if not reuse:
        log.info("%d stage(s) were computed by other code and are recomputed (keep them "
                 "with --reuse-stale): %s", len(stale), ", ".join(s.name for s in stale))
        return []
    reuse_stale(sweep_dir)
    lines = [f"{s.name} ← {s.stale_folder} (code {s.stale_code or '?'})" for s in stale]
    log.warning("keeping %d stale stage(s) (--reuse-stale): %s", len(lines), "; ".join(lines))
    return lines


def submit_init_array(cfg: SweepConfig, profile: ClusterProfile, sweep_dir: Path) -> list[str]:
    """Submit every seed's init stage at once, before Ray starts: as one Slurm job array
    (a plain job for one seed); the trials then wait for their seed's job instead of
    each submitting it → the job ids."""
    from hpc.profiles import make_executor
    from jobs import dag
    from jobs.stages import job_for
    from jobs.trial import init_spec, job_name

    ensure_pretrain(cfg, profile, sweep_dir)   # every init stage starts from it
    specs = {t.seed: init_spec(cfg, t) for t in cfg.trials()}
    return dag.submit_ahead(
        sweep_dir, list(specs.values()), job_for,
        lambda folder: make_executor(profile, folder, name=job_name(cfg, "init"),
                                     stage="init"))


def ensure_pretrain(cfg: SweepConfig, profile: ClusterProfile, sweep_dir: Path) -> None:
    """Compute the sweep's pretrain stage now (the driver waits), when the config starts
    from it: the init stages submitted next as one array need its encoder."""
    from hpc.profiles import make_executor
    from jobs import dag
    from jobs.stages import job_for
    from jobs.trial import job_name, pretrain_spec

    spec = pretrain_spec(cfg)
    if spec is None or spec.folder(sweep_dir).is_done():
        return
    log.info("pretraining the encoder once for the sweep (stage %s)", spec.dirname)
    dag.ensure(sweep_dir, spec, job_for,
               lambda folder: make_executor(profile, folder, name=job_name(cfg, spec.kind),
                                            stage=spec.kind), retries=profile.retries)


def end_sweep(sweep_dir: Path, meta: dict[str, Any], status: str) -> None:
    """Close the parent run, or leave the status for `basis sync` if MLflow is away."""
    pending = SweepLayout(sweep_dir).tracking / "_parent.status"
    try:
        tracking.finish(meta["mlflow_uri"], meta["parent_run_id"], status)
        pending.unlink(missing_ok=True)
    except Exception as err:
        pending.parent.mkdir(parents=True, exist_ok=True)
        pending.write_text(status)
        log.warning("MLflow unreachable at the end of the sweep (%s); run `basis sync %s`",
                    type(err).__name__, sweep_dir)


def sync(sweep_dir: Path) -> dict[str, int]:
    """Replay every buffered MLflow event of a sweep (after a tracking outage)."""
    meta = read_meta(sweep_dir)
    if not meta:
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no sweep.json)")
    folder = SweepLayout(sweep_dir).tracking
    counts = tracking.sync(folder, meta["mlflow_uri"])
    pending = folder / "_parent.status"
    if pending.exists() and counts["pending"] == 0:
        end_sweep(sweep_dir, meta, pending.read_text().strip())
    return counts


class DriverJob:
    """The sweep driver as a Slurm job (``--detach`` on a Slurm profile)."""

    def __init__(self, cfg: dict[str, Any], profile: ClusterProfile, sweep_dir: str,
                 force: bool, reuse_stale: bool = False) -> None:
        self.cfg, self.profile, self.sweep_dir, self.force = cfg, profile, sweep_dir, force
        self.reuse_stale = reuse_stale

    def __call__(self) -> str:
        logging.basicConfig(level=logging.INFO)
        run(SweepConfig.from_dict(self.cfg), self.profile, Path(self.sweep_dir),
            force=self.force, verbose=0, reuse_stale=self.reuse_stale)
        return self.sweep_dir

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeued: run again; finished trials and stages are skipped."""
        import submitit

        return submitit.helpers.DelayedSubmission(DriverJob(
            self.cfg, self.profile, self.sweep_dir, True, self.reuse_stale))


def detach(cfg: SweepConfig, profile: ClusterProfile, sweep_dir: Path,
           force: bool = False, tracking_uri: str | None = None,
           reuse_stale: bool = False) -> str:
    """Start the driver and return at once → a line saying where it runs.

    Config and folder are checked here first, so an error still comes back at once.
    """
    import dataclasses
    import subprocess

    sweep_dir = sweep_dir.resolve()
    cfg = resolved(cfg)
    prepare(cfg, sweep_dir, force=force, profile=profile.name,
            tracking_uri=tracking_uri or profile.tracking_uri)
    if profile.executor == "slurm":
        from hpc.profiles import make_executor

        driver = dataclasses.replace(profile, tasks_per_node=1, gpus_per_node=0, nodes=1)
        ex = make_executor(driver, SweepLayout(sweep_dir).submitit / "driver")
        ex.update_parameters(name=f"basis-driver-{cfg.name}")
        job = ex.submit(DriverJob(cfg.to_dict(), profile, str(sweep_dir), force,
                                  reuse_stale))
        SweepLayout(sweep_dir).driver_job.write_text(f"{job.job_id}\n")
        return f"Slurm job {job.job_id}, log {job.paths.stderr}"
    log_path = SweepLayout(sweep_dir).driver_log
    cmd = [sys.executable, "-m", "jobs.cli", "sweep", "--resume", str(sweep_dir),
           "--profile", profile.name, "--retries", str(profile.retries)]
    if reuse_stale:
        cmd.append("--reuse-stale")
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    SweepLayout(sweep_dir).driver_pid.write_text(driver_record(proc.pid))
    return f"pid {proc.pid}, log {log_path}"
