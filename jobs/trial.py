"""A Ray Tune trial: a thin adapter from a grid point to the stages it needs.

Tune config (`TrialConfig.to_flat_dict`) → `TrialConfig` → a short list of typed stages
(`jobs.specs`): init and score (shared by every N, β and mode of a seed), select (pure
and cheap, run here), annotate — with ``study.rounds`` > 1 select and annotate once per
round, the pool scored again by each round's annotation network in between — and
optionally pseudo and segment. `TrialRunner` makes
sure each stage exists (`jobs.dag.ensure`) and tells the trial's observers — MLflow,
Parquet and Tune — what happened (`jobs.events`). Ray never trains: the stages run as
submitit jobs on the profile's executor.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import submitit

from analysis.schema import Status, SweepLayout
from basis.selection import UNCERTAINTIES
from hpc.profiles import ClusterProfile, make_executor
from jobs import dag, records
from jobs.config import SweepConfig, TrialConfig
from jobs.events import TrialObserver, TrialOutcome
from jobs.specs import (
    AnnotateSpec,
    ControlSpec,
    InitSpec,
    PretrainSpec,
    PseudoSpec,
    Recipe,
    RoundScoreSpec,
    ScoreSpec,
    SegmentSpec,
    StageFolder,
    StageSpec,
    code_fingerprint,
    pin_code_fingerprint,
    reuse_stale,
)
from jobs.stages import job_for
from jobs.tracking import MlflowObserver

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares (passed once through `tune.with_parameters`)."""

    sweep_dir: str
    config: dict[str, Any]           # SweepConfig.to_dict()
    profile: ClusterProfile
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    code: str = ""                   # the driver's code fingerprint (`jobs.specs`)
    reuse_stale: bool = False        # keep stages computed by other code (--reuse-stale)


def pretrain_spec(cfg: SweepConfig) -> PretrainSpec | None:
    """The sweep's pretrain stage, shared by every seed and trial (None: the config
    gives its encoder weights itself, or none)."""
    if not cfg.uses_pretrain():
        return None
    return PretrainSpec(cfg.pretrain, cfg.data.synthetic, cfg.model.backbone)


def recipe(cfg: SweepConfig, seed: int) -> Recipe:
    """How the networks of a seed are trained under ``cfg``."""
    return Recipe(cfg.data, cfg.model, cfg.train, cfg.loss, int(seed), pretrain_spec(cfg))


def init_spec(cfg: SweepConfig, trial: TrialConfig) -> InitSpec:
    """The trial's init stage: shared by every N, β and mode of a seed (and independent
    of the profile)."""
    return InitSpec(recipe(cfg, trial.seed), trial.n_init)


def select_images(scores: Path | StageFolder, trial: TrialConfig, n: int | None = None,
                  rng: "np.random.Generator | None" = None, labelled: Sequence[int] = ()
                  ) -> tuple[list[int], list[int]]:
    """The select stage (pure and cheap, so it runs in the trial itself): ``n`` images
    (default: N − the labelled ones) of the scored pool, chosen by the trial's mode,
    none labelled yet → (labelled ids, selected ids).

    ``predicted`` ranks by the network's image score, ``oracle`` by the true image IoU
    (Sec. 6.2.1), both closest to β; ``random`` draws from a generator seeded by
    (seed, N) (`selection_rng`), so it is the same for every β. A baseline of
    ``study.strategies`` (`SELECTION_RULES`): band/lowest/highest/stratified rank the
    image score, an uncertainty takes the highest values of its column, ``coreset`` runs
    k-center greedy on the stage's ``features.npz`` from the labelled images; the same
    generator breaks their ties.

    Args:
        scores: a score stage's folder (or any folder holding its image_scores.parquet,
            and features.npz for ``coreset``): the initial network's, or a round's
            annotation network's (`jobs.specs.RoundScoreSpec`).
        n: images to select (a round's N', `round_plan`).
        rng: the trial's generator, used in turn by every round (default: a fresh
            `selection_rng`).
        labelled: ids labelled before, besides the file's ``in_init`` rows.

    Returns:
        (labelled ids ascending: the ``in_init`` rows and ``labelled``, selected ids in
        rank order). For the initial network's scores the first are the initial images.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from basis.selection import k_center_greedy, select_round

    folder = scores if isinstance(scores, StageFolder) else StageFolder(Path(scores))
    table = pq.read_table(folder.image_scores).to_pandas()
    done = {int(i) for i in table.loc[table["in_init"], "image_id"]} | {int(i) for i in labelled}
    already = sorted(done)
    pool = table[~table["image_id"].astype(int).isin(done)]
    rng = selection_rng(trial) if rng is None else rng
    n = trial.N - len(already) if n is None else int(n)
    if trial.mode in ("coreset", *UNCERTAINTIES) and not _has_baseline_inputs(folder, pool):
        raise ValueError(f"{folder.path} has no uncertainties or features (a score stage of "
                         "older code?): run the sweep again without --reuse-stale")
    if trial.mode == "coreset":
        with np.load(folder.features) as npz:
            chosen = k_center_greedy(npz["features"], npz["image_id"], already, n, rng)
        return already, chosen
    column, strategy = SELECTION_RULES[trial.mode]
    by_id = dict(zip(pool["image_id"].astype(int), pool[column].astype(float)))
    chosen = select_round(strategy, by_id, already, n, trial.beta, rng)
    return already, [int(i) for i in chosen]


def selection_rng(trial: TrialConfig) -> "np.random.Generator":
    """The trial's selection generator, seeded by (seed, N): the same for every β and
    mode; one generator serves every round of the trial in turn."""
    import numpy as np

    return np.random.default_rng([trial.seed, trial.N])


def round_plan(cfg: SweepConfig, trial: TrialConfig) -> list[int]:
    """N' per selection round (`basis.selection.plan_rounds` over ``study.rounds``):
    ``[N − n_init]`` for the one-shot selection."""
    from basis.selection import plan_rounds

    return plan_rounds(trial.n_init, trial.N, cfg.study.rounds)


def _has_baseline_inputs(folder: StageFolder, pool: Any) -> bool:
    """Whether a score stage wrote the uncertainty columns and the features file."""
    return folder.features.exists() and all(
        c in pool and not pool[c].isna().any() for c in UNCERTAINTIES)


#: A trial mode → (image_scores column, `basis.selection` strategy) its selection ranks
#: by (``coreset`` is k-center greedy on features instead).
SELECTION_RULES: dict[str, tuple[str, str]] = {
    "predicted": ("score_pred", "closest"), "oracle": ("iou_true", "closest"),
    "random": ("score_pred", "random"),
    **{m: ("score_pred", m) for m in ("band", "lowest", "highest", "stratified")},
    **{m: (m, "highest") for m in UNCERTAINTIES},   # the most uncertain first
}


class TuneObserver(TrialObserver):
    """Streams a trial's epochs and its final row into `tune.report`."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def epoch(self, record: dict[str, Any]) -> None:
        stage, epoch = record.get("stage", "stage"), int(record.get("epoch", 0))
        values = {f"{stage}/{k}": v for k, v in dag.epoch_values(record).items()}
        self.report({**values, "stage": stage, "epoch": epoch})

    def trial_finished(self, outcome: TrialOutcome) -> None:
        self.report(outcome.final())


class TrialRunner:
    """Runs the stages of one trial and tells its observers (in order) what happened."""

    def __init__(self, ctx: SweepContext, cfg: SweepConfig, trial: TrialConfig,
                 observers: Sequence[TrialObserver], job: dag.JobFactory = job_for) -> None:
        self.ctx, self.cfg, self.trial = ctx, cfg, trial
        self.sweep_dir = Path(ctx.sweep_dir)
        self.observers = list(observers)
        self.job = job
        self.job_ids: list[str] = []

    def executor(self, kind: str) -> dag.ExecutorFactory:
        """The profile's executor for a stage kind (its own resources, if the profile
        sets any), naming its jobs ``basis-<sweep>-<kind>``."""
        def make(folder: Path) -> submitit.Executor:
            return make_executor(self.ctx.profile, folder, name=job_name(self.cfg, kind),
                                 stage=kind)
        return make

    def _emit(self, event: str, *args: Any) -> None:
        for obs in self.observers:
            getattr(obs, event)(*args)

    def start(self, params: dict[str, Any], tags: dict[str, Any]) -> None:
        self._emit("trial_started", self.trial, params, tags)

    def _add_jobs(self, ids: list[str]) -> None:
        self.job_ids.extend(j for j in ids if j not in self.job_ids)

    def stage(self, spec: StageSpec) -> dag.StageResult:
        """Make sure the stage of ``spec`` is done (computing it if needed)."""
        self._emit("stage_started", spec, spec.folder(self.sweep_dir))
        try:
            result = dag.ensure(self.sweep_dir, spec, self.job, self.executor(spec.kind),
                                lambda rec: self._emit("epoch", rec),
                                retries=self.ctx.profile.retries)
        except dag.StageFailed as err:
            self._add_jobs(err.job_ids)
            self._emit("stage_failed", spec, err)
            raise
        self._add_jobs(result.job_ids)
        self._emit("stage_finished", result)
        return result

    def selected(self, ids: list[int], round_no: int = 1) -> None:
        """The images selection round ``round_no`` chose, in rank order."""
        self._emit("selected", self.trial, ids, round_no)

    def finish(self, outcome: TrialOutcome) -> None:
        outcome.row["slurm_job_ids"] = ",".join(self.job_ids)
        self._emit("trial_finished", outcome)


def trial_row(trial: TrialConfig, cfg: SweepConfig) -> dict[str, Any]:
    """The start of a trial's Parquet row: its flat config and its IoU-branch schedule."""
    return {**trial.to_flat_dict(), "trial": trial.key, **cfg.schedule()}


def run_trial(config: dict[str, Any], ctx: SweepContext,
              report: Report | None = None) -> dict[str, Any]:
    """Run one grid point to its end; never raises: whatever fails is recorded as the
    trial's FAILED row (with the error and where to look), and the sweep goes on.

    Args:
        config: the trial's Tune config, `TrialConfig.to_flat_dict()`.
    """
    if report is None:
        from ray import tune

        report = tune.report
    try:
        return _run_trial(config, ctx, report)
    except Exception as err:   # before the trial's own bookkeeping could start
        trial = TrialConfig.from_flat_dict(config)
        row = {**trial.to_flat_dict(), "trial": trial.key, "status": Status.FAILED.value,
               "error": f"{type(err).__name__}: {err}"[:2000],
               "log_path": traceback.format_exc()[-2000:]}
        records.write(Path(ctx.sweep_dir), "trials", trial.key, [row])
        report({k: v for k, v in row.items() if k != "log_path"})
        return row


def _run_trial(config: dict[str, Any], ctx: SweepContext, report: Report) -> dict[str, Any]:
    if ctx.code:
        pin_code_fingerprint(ctx.code)
    if ctx.reuse_stale:
        reuse_stale(ctx.sweep_dir)
    cfg = SweepConfig.from_dict(ctx.config)
    trial = TrialConfig.from_flat_dict(config)
    # a Table-2 schedule changes the trial's own training, not the shared init/score
    own = cfg.with_schedule(trial.variant)
    sweep_dir = Path(ctx.sweep_dir)
    done = _completed_row(sweep_dir, trial.key, None if ctx.reuse_stale else ctx.code)
    if done is not None:
        report({**done, "reused": True})
        return done

    t0 = time.time()
    layout = SweepLayout(sweep_dir)
    mlflow = MlflowObserver(ctx.mlflow_uri, ctx.experiment_id, ctx.parent_run_id,
                            layout.tracking, config_file=layout.config)
    runner = TrialRunner(ctx, cfg, trial, [mlflow, records.ParquetObserver(sweep_dir),
                                           TuneObserver(report)])
    rounds = {"study.rounds": cfg.study.rounds} if cfg.study.rounds > 1 else {}
    runner.start({**trial.to_flat_dict(), **own.flat(), **rounds, "profile": ctx.profile.name},
                 {"N": trial.N, "beta": trial.beta, "seed": trial.seed, "mode": trial.mode,
                  "trial": trial.key, "tune_trial_id": _tune_trial_id(),
                  "code": code_fingerprint()})
    outcome = TrialOutcome(trial, Status.FAILED,
                           {**trial_row(trial, own), "code": code_fingerprint()})
    try:
        _stages(runner, cfg, own, trial, outcome)
        outcome.status = Status.COMPLETED
    except dag.StageFailed as err:
        outcome.row.update(error=str(err), log_path=err.log_path)
    except Exception as err:  # a bug must not stop the sweep: record it with its trace
        outcome.row.update(error=f"{type(err).__name__}: {err}",
                           log_path=traceback.format_exc()[-2000:])
    outcome.row.update(status=outcome.status.value, wall_s=time.time() - t0)
    runner.finish(outcome)
    return outcome.final()


def _stages(runner: TrialRunner, cfg: SweepConfig, own: SweepConfig, trial: TrialConfig,
            outcome: TrialOutcome) -> None:
    """The trial's stages, in order; fills the outcome's row, metrics, round rows and
    artifacts.

    Round r (1 … ``study.rounds``) selects its N' images from the scores of the initial
    network (r = 1) or of round r − 1's annotation network (a `RoundScoreSpec` stage;
    random needs none), then trains the annotation network on initial ∪ selected so far;
    the last round's network is the trial's result.
    """
    row, metrics = outcome.row, outcome.metrics
    i_spec = init_spec(cfg, trial)
    if i_spec.recipe.pretrain is not None:     # computed once per sweep, shared by all
        runner.stage(i_spec.recipe.pretrain)
    init = runner.stage(i_spec)
    score = runner.stage(ScoreSpec(i_spec))
    sizes = round_plan(cfg, trial)
    rng = selection_rng(trial)
    scores = score.folder
    init_ids: list[int] = []
    selected: list[int] = []
    for r, n in enumerate(sizes, start=1):
        labelled, chosen = select_images(scores, trial, n, rng, init_ids + selected)
        if r == 1:
            init_ids = labelled
        selected += chosen
        runner.selected(chosen, r)
        after = after_selection(cfg, own, trial, init_ids + selected)
        ann = runner.stage(after.annotate)
        n_labelled = len(init_ids) + len(selected)
        round_s = _budget(cfg, trial, n_strong=n_labelled)
        outcome.rounds.append({
            **round_columns(trial), "round": r, "rounds": len(sizes), "n_selected": len(chosen),
            "n_labelled": n_labelled, "ap50": ann.result["ap50"], "mae": ann.result["mae"],
            "budget_s": round_s, "budget_days": round_s / 86400.0, "stage_dir": str(ann.dir),
            "code": row.get("code")})
        if r < len(sizes) and trial.mode != "random":   # random reads no scores
            scores = runner.stage(RoundScoreSpec(after.annotate)).folder
    budget_s = _budget(cfg, trial)
    row.update(ap50=ann.result["ap50"], mae=ann.result["mae"], budget_s=budget_s,
               budget_days=budget_s / 86400.0, log_path=str(ann.dir))
    metrics.update(ap50=row["ap50"], mae=row["mae"], init_ap50=init.result["ap50"],
                   budget_days=row["budget_days"])
    outcome.artifacts += [score.folder.image_scores, ann.folder.qualitative]
    if trial.pool_fraction is None:
        return
    assert after.pseudo is not None and after.segment is not None
    pseudo = runner.stage(after.pseudo)
    n_pseudo = after.segment.n_pseudo
    seg = runner.stage(after.segment)
    seg_s = _budget(cfg, trial, n_additional=n_pseudo)
    row.update(seg_ap50=seg.result["ap50"], seg_budget_s=seg_s,
               seg_budget_days=seg_s / 86400.0, log_path=str(seg.dir))
    metrics.update(seg_ap50=row["seg_ap50"], pseudo_iou=pseudo.result["pseudo_iou"],
                   seg_budget_days=row["seg_budget_days"])
    if after.control is not None:
        ctl = runner.stage(after.control)
        row["ctl_ap50"] = metrics["ctl_ap50"] = ctl.result["ap50"]


def round_columns(trial: TrialConfig) -> dict[str, Any]:
    """The trial's columns of a ``rounds`` row (its key and grid coordinates)."""
    return {"trial": trial.key, "mode": trial.mode, "N": trial.N, "beta": trial.beta,
            "seed": trial.seed, "n_init": trial.n_init, "pool_fraction": trial.pool_fraction,
            "variant": trial.variant}


@dataclass(frozen=True)
class AfterSelection:
    """The stages of a trial that follow its selection."""

    annotate: AnnotateSpec
    pseudo: PseudoSpec | None = None      # when the trial trains a segmentation network
    segment: SegmentSpec | None = None
    control: ControlSpec | None = None    # strong-only RSIS (``study.control``)

    def specs(self) -> list[StageSpec]:
        return [s for s in (self.annotate, self.pseudo, self.segment, self.control)
                if s is not None]


def after_selection(cfg: SweepConfig, own: SweepConfig, trial: TrialConfig,
                    train_ids: Sequence[int]) -> AfterSelection:
    """The specs of the stages after selection, for the strong images ``train_ids``
    (``own``: the sweep's config with the trial's Table-2 schedule)."""
    a_spec = AnnotateSpec(recipe(own, trial.seed), tuple(sorted(int(i) for i in train_ids)))
    if trial.pool_fraction is None:
        return AfterSelection(a_spec)
    p_spec = PseudoSpec(a_spec)
    n_pseudo = round(trial.pool_fraction * cfg.data.n_additional)
    # the control has the same strong images and no pseudo-labels: shared by fractions
    control = ControlSpec(a_spec.recipe, a_spec.train_ids) if cfg.study.control else None
    return AfterSelection(a_spec, p_spec, SegmentSpec(p_spec, n_pseudo), control)


def job_name(cfg: SweepConfig, kind: str) -> str:
    """The Slurm job name of a sweep's stage: ``basis-<sweep>-<kind>`` (``sacct --name``)."""
    return f"basis-{cfg.name}-{kind}"


def _budget(cfg: SweepConfig, trial: TrialConfig, n_additional: int | None = None, *,
            n_strong: int | None = None) -> float:
    """Annotation cost in seconds: N masks (``n_strong``: the masks of a round, the
    images labelled so far), plus IL+C labels for the rest of the pool whenever the
    selection needs the pool scored (every mode but random), plus IL+C labels for the
    ``n_additional`` pseudo-labelled images (segmentation network)."""
    from basis.budget import annotation_budget, segmentation_budget

    # Every baseline but random is charged the pool's IL+C like predicted: the score-
    # ranking ones need Eq. 2, and although the uncertainty and core-set baselines would
    # need no IL+C from a plain RSIS, they read the sweep's annotation network, IoU-W-RSIS,
    # which runs on the pool only given its IL+C labels.
    strategy = "random" if trial.mode == "random" else "closest"
    n = trial.N if n_strong is None else int(n_strong)
    if n_additional is None:
        return annotation_budget(n, strategy, pool_size=cfg.data.n_pool).seconds
    return segmentation_budget(n, n_additional, strategy, pool_size=cfg.data.n_pool).seconds


def _completed_row(sweep_dir: Path, key: str, code: str | None = None
                   ) -> dict[str, Any] | None:
    """The trial's COMPLETED row, if it has one computed by ``code`` (None: by any
    code; a row of other code is stale and the trial runs again)."""
    path = records.exists(sweep_dir, "trials", key)
    if path is None:
        return None
    import pyarrow.parquet as pq

    row = pq.read_table(path).to_pylist()[0]
    if row.get("status") != Status.COMPLETED.value:
        return None
    if code and row.get("code") != code:
        log.info("trial %s was computed by code %s, this is %s: it runs again", key,
                 row.get("code"), code)
        return None
    return row


def _tune_trial_id() -> str:
    try:
        from ray import tune

        return str(tune.get_context().get_trial_id())
    except Exception:
        return ""
