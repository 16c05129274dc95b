"""A Ray Tune trial: a thin adapter from a grid point to the stages it needs.

config dict → `TrialConfig` → make sure the shared ``init`` stage exists (or wait for
the trial computing it) → submit the ``annotate`` stage → stream its per-epoch
metrics into `tune.report` and MLflow → write the trial's Parquet row. Ray never
trains: the stages run as submitit jobs on the profile's executor.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hpc.profiles import ClusterProfile, make_executor
from jobs import dag, records
from jobs.config import SweepConfig, TrialConfig, trial_of
from jobs.stages import AnnotateStage, InitStage, PseudoStage, ScoreStage, SegmentStage
from jobs.tracking import TrialRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares (passed once through `tune.with_parameters`)."""

    sweep_dir: str
    config: dict[str, Any]           # SweepConfig.to_dict()
    profile: ClusterProfile
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str


def trial_from(config: dict[str, Any], n_init: int) -> TrialConfig:
    """The trial of a Tune config ``{"N", "seed", "arm"}`` (see `SweepConfig.arms`)."""
    return trial_of(config["arm"], int(config["N"]), int(config["seed"]), n_init)


def init_spec(cfg: SweepConfig, trial: TrialConfig) -> dict[str, Any]:
    """The config that addresses the trial's init stage: shared by every N, β and mode
    of a seed (and independent of the profile)."""
    return {"data": cfg.to_dict()["data"], "model": cfg.section("model"),
            "train": dict(cfg.train), "loss": dict(cfg.loss), "seed": trial.seed,
            "n_init": trial.n_init}


def select_images(score_dir: Path, trial: TrialConfig) -> tuple[list[int], list[int]]:
    """The select stage (pure and cheap, so it runs in the trial itself): the N − n_init
    images of the scored pool chosen by the trial's mode → (initial ids, selected ids).

    ``predicted`` ranks by the network's image score, ``oracle`` by the true image IoU
    (Sec. 6.2.1), both closest to β; ``random`` draws from a generator seeded by
    (seed, N), so it is the same for every β.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from basis.selection import select

    scores = pq.read_table(score_dir / "image_scores.parquet").to_pandas()
    init_ids = sorted(int(i) for i in scores.loc[scores["in_init"], "image_id"])
    pool = scores[~scores["in_init"]]
    column = "iou_true" if trial.mode == "oracle" else "score_pred"
    by_id = dict(zip(pool["image_id"].astype(int), pool[column].astype(float)))
    rng = np.random.default_rng([trial.seed, trial.N])
    strategy = "random" if trial.mode == "random" else "closest"
    chosen = select(strategy, by_id, trial.N - len(init_ids), trial.beta, rng)
    return init_ids, [int(i) for i in chosen]


def run_trial(config: dict[str, Any], ctx: SweepContext,
              report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one grid point to its end; never raises: whatever fails is recorded as the
    trial's FAILED row (with the error and where to look), and the sweep goes on."""
    if report is None:
        from ray import tune

        report = tune.report
    try:
        return _run_trial(config, ctx, report)
    except Exception as err:   # before the trial's own bookkeeping could start
        trial = trial_from(config, int(ctx.config["study"]["n_init"]))
        row = {**trial.to_flat_dict(), "trial": trial.key, "status": "FAILED",
               "error": f"{type(err).__name__}: {err}"[:2000],
               "log_path": traceback.format_exc()[-2000:]}
        records.write(Path(ctx.sweep_dir), "trials", trial.key, [row])
        report({k: v for k, v in row.items() if k != "log_path"})
        return row


def _run_trial(config: dict[str, Any], ctx: SweepContext,
               report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = SweepConfig.from_dict(ctx.config)
    trial = trial_from(config, cfg.study.n_init)
    # a Table-2 schedule changes the trial's own training, not the shared init/score
    own = cfg.with_schedule(config["arm"].get("schedule"))
    sweep_dir = Path(ctx.sweep_dir)
    done = _completed_row(sweep_dir, trial.key)
    if done is not None:
        report({**done, "reused": True})
        return done

    t0 = time.time()
    tags = {"N": trial.N, "beta": trial.beta, "seed": trial.seed, "mode": trial.mode,
            "trial": trial.key, "tune_trial_id": _tune_trial_id()}
    run = TrialRun(ctx.mlflow_uri, ctx.experiment_id, ctx.parent_run_id, trial.key,
                   {**trial.to_flat_dict(), **own.flat(), "profile": ctx.profile.name}, tags,
                   buffer_dir=sweep_dir / "tracking")

    def on_metrics(rec: dict[str, Any]) -> None:
        stage, epoch = rec.get("stage", "stage"), int(rec.get("epoch", 0))
        values = {f"{stage}/{k}": v for k, v in dag.epoch_values(rec).items()}
        run.metrics(values, step=epoch)
        report({**values, "stage": stage, "epoch": epoch})

    def executor(kind: str) -> Callable[[Path], Any]:
        return lambda folder: make_executor(ctx.profile, folder, name=job_name(cfg, kind))

    i_spec = init_spec(cfg, trial)
    job_ids: list[str] = []
    row: dict[str, Any] = {**trial.to_flat_dict(), "trial": trial.key,
                           "mlflow_run_id": run.run_id,
                           **own.schedule()}
    stages: list[dag.StageResult] = []

    def stage(kind: str, spec: dict[str, Any], job_cls: type) -> dag.StageResult:
        d = dag.stage_dir(sweep_dir, kind, spec)
        nested = run.stage(kind, flat_spec(spec), {"stage_dir": d})
        try:
            result = dag.ensure(sweep_dir, kind, spec, lambda d: job_cls(spec, d),
                                executor(kind), on_metrics, retries=ctx.profile.retries)
        except dag.StageFailed as err:
            nested.tag("error", str(err)[:5000])
            nested.tag("slurm_job_id", ",".join(err.job_ids))
            nested.end("FAILED")
            raise
        stages.append(result)
        job_ids.extend(j for j in result.job_ids if j not in job_ids)
        run.tag("slurm_job_id", ",".join(job_ids))
        _log_stage(nested, result)
        return result

    try:
        budget_s = _budget(cfg, trial)
        init = stage("init", i_spec, InitStage)
        score = stage("score", {**i_spec, "init_dir": str(init.dir)}, ScoreStage)
        init_ids, selected = select_images(score.dir, trial)
        ann_spec = {**init_spec(own, trial), "train_ids": sorted(init_ids + selected)}
        records.write(sweep_dir, "selections", trial.key, [
            {"trial": trial.key, "image_id": i, "rank": r, "mode": trial.mode}
            for r, i in enumerate(selected)])
        ann = stage("annotate", ann_spec, AnnotateStage)
        row.update(ap50=ann.result["ap50"], mae=ann.result["mae"], budget_s=budget_s,
                   budget_days=budget_s / 86400.0, log_path=str(ann.dir))
        metrics = {"ap50": row["ap50"], "mae": row["mae"], "init_ap50": init.result["ap50"],
                   "budget_days": row["budget_days"]}
        if trial.pool_fraction is not None:
            pseudo = stage("pseudo", {**ann_spec, "annotate_dir": str(ann.dir)}, PseudoStage)
            n_pseudo = round(trial.pool_fraction * cfg.data.n_additional)
            seg = stage("segment", {**ann_spec, "pseudo_dir": str(pseudo.dir),
                                    "n_pseudo": n_pseudo}, SegmentStage)
            seg_s = _budget(cfg, trial, n_additional=n_pseudo)
            row.update(seg_ap50=seg.result["ap50"], seg_budget_s=seg_s,
                       seg_budget_days=seg_s / 86400.0, log_path=str(seg.dir))
            metrics.update(seg_ap50=row["seg_ap50"], pseudo_iou=pseudo.result["pseudo_iou"],
                           seg_budget_days=row["seg_budget_days"])
        row["status"] = "COMPLETED"
        run.metrics(metrics)
        _log_artifacts(run, sweep_dir, trial, selected,
                       [score.dir / "image_scores.parquet", ann.dir / "qualitative.png"])
        status = "FINISHED"
    except dag.StageFailed as err:
        job_ids.extend(j for j in err.job_ids if j not in job_ids)
        row.update(status="FAILED", error=str(err), log_path=err.log_path)
        status = "FAILED"
    except Exception as err:  # a bug must not stop the sweep: record it with its trace
        row.update(status="FAILED", error=f"{type(err).__name__}: {err}",
                   log_path=traceback.format_exc()[-2000:])
        status = "FAILED"
    row.update(slurm_job_ids=",".join(job_ids), wall_s=time.time() - t0)
    _write_epochs(sweep_dir, trial, stages)
    run.end(status)
    row["mlflow_run_id"] = run.run_id      # None if the tracking server was unreachable
    records.write(sweep_dir, "trials", trial.key, [row])
    final = {k: v for k, v in row.items() if k != "log_path"}
    report(final)
    return final


def job_name(cfg: SweepConfig, kind: str) -> str:
    """The Slurm job name of a sweep's stage: ``basis-<sweep>-<kind>`` (``sacct --name``)."""
    return f"basis-{cfg.name}-{kind}"


def flat_spec(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A stage spec as MLflow params: nested keys joined by '.', long id lists counted."""
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if isinstance(v, dict):
            out.update(flat_spec(v, f"{prefix}{k}."))
        elif isinstance(v, list) and len(v) > 8:
            out[f"{prefix}{k}"] = f"<{len(v)} ids>"
        else:
            out[f"{prefix}{k}"] = v
    return out


def _log_stage(nested: Any, result: dag.StageResult) -> None:
    """A stage's nested run: its per-epoch metrics, its result numbers, whether this
    trial computed it or found it done (shared with another trial), its job ids."""
    recs, _ = dag.read_metrics(result.dir / dag.METRICS, 0)
    nested.history([(int(r.get("epoch", 0)), dag.epoch_values(r)) for r in recs])
    nested.metrics({k: v for k, v in result.result.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    nested.tag("reused", str(not result.computed).lower())
    nested.tag("slurm_job_id", ",".join(result.job_ids))
    nested.end("FINISHED")


def _log_artifacts(run: TrialRun, sweep_dir: Path, trial: TrialConfig,
                   selected: list[int], outputs: list[Path]) -> None:
    """config.yaml, the selected image ids, and the stage outputs that exist (the pool's
    image scores, the annotation network's qualitative PNG), attached to the trial's
    MLflow run (kept in the sweep folder: a buffered event may upload them later)."""
    import json

    run.artifact(sweep_dir / "config.yaml")
    for path in outputs:
        if path.exists():
            run.artifact(path)
    path = sweep_dir / "tracking" / "artifacts" / trial.key / "selected_ids.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"trial": trial.key, "selected": selected}))
    run.artifact(path)


def _budget(cfg: SweepConfig, trial: TrialConfig, n_additional: int | None = None) -> float:
    """Annotation cost in seconds: N masks, plus IL+C labels for the rest of the pool
    whenever the selection needs the pool scored (every mode but random), plus IL+C
    labels for the ``n_additional`` pseudo-labelled images (segmentation network)."""
    from basis.budget import annotation_budget, segmentation_budget

    strategy = "random" if trial.mode == "random" else "closest"
    if n_additional is None:
        return annotation_budget(trial.N, strategy, pool_size=cfg.data.n_pool).seconds
    return segmentation_budget(trial.N, n_additional, strategy,
                               pool_size=cfg.data.n_pool).seconds


def _write_epochs(sweep_dir: Path, trial: TrialConfig, stages: list[dag.StageResult]) -> None:
    rows = []
    for st in stages:
        recs, _ = dag.read_metrics(st.dir / dag.METRICS, 0)
        for rec in recs:
            rows += [{"trial": trial.key, "stage": rec.get("stage", st.name),
                      "epoch": int(rec.get("epoch", 0)), "metric": k, "value": v,
                      "mode": trial.mode} for k, v in dag.epoch_values(rec).items()]
    if rows:
        records.write(sweep_dir, "epochs", trial.key, rows)


def _completed_row(sweep_dir: Path, key: str) -> dict[str, Any] | None:
    path = records.exists(sweep_dir, "trials", key)
    if path is None:
        return None
    import pyarrow.parquet as pq

    row = pq.read_table(path).to_pylist()[0]
    return row if row.get("status") == "COMPLETED" else None


def _tune_trial_id() -> str:
    try:
        from ray import tune

        return str(tune.get_context().get_trial_id())
    except Exception:
        return ""
