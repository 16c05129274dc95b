"""``basis sweep CONFIG --dry-run``: what a sweep would submit, from its config and its
folder alone. Nothing is submitted and nothing is written.

Every stage of every trial is listed once (a stage several trials need is *shared*)
with its state in the sweep folder:

- ``done``: computed by this code; a sweep reuses it.
- ``stale``: not done under this code, but a DONE folder of the same spec computed by
  other code exists (`jobs.specs.StageIndex`); a sweep recomputes it, or keeps it with
  ``--reuse-stale``.
- ``new``: to compute. A stage after selection whose selection is not known yet (its
  score stage is not done) is ``new`` and named by its trial, not by its address.

The compute estimate counts each stage's training image·epochs (the epochs a ``steps``
budget gives, as `basis.train.epochs_for_steps` derives them; early stopping can only
shorten it) and its inference images at a third of a training image, and divides by
the profile's ``throughput_img_s`` (images per second of one job at
``throughput_px``, scaled by the pixel count) → job hours, times the job's CPUs (or
GPUs) → CPU-hours (GPU-hours).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.schema import SweepLayout
from basis.train import epochs_for_steps
from hpc.profiles import ClusterProfile
from jobs.config import SweepConfig, TrialConfig
from jobs.specs import InitSpec, Recipe, ScoreSpec, StageIndex, StageSpec
from jobs.trial import _budget, after_selection, init_spec, select_images

NEW, DONE, STALE, REUSED = "new", "done", "stale", "stale, reused"
#: An inference image costs about a third of a training image (forward only).
INFER_WEIGHT = 1.0 / 3.0


@dataclass
class StagePlan:
    """One stage of the sweep: its state, the trials that need it and its workload."""

    kind: str
    name: str                  # its folder name, or "<kind> of <trial>" before selection
    state: str                 # NEW | DONE | STALE | REUSED
    trials: list[str] = field(default_factory=list)
    train_images: float = 0.0  # training image·epochs
    infer_images: float = 0.0  # images run forward only (scoring, evaluation)
    stale_folder: str = ""     # the DONE folder of another code (STALE, REUSED)
    stale_code: str = ""

    @property
    def runs(self) -> bool:
        """The sweep computes it."""
        return self.state in (NEW, STALE)


@dataclass
class SweepPlan:
    cfg: SweepConfig
    profile: ClusterProfile
    sweep_dir: Path
    stages: dict[str, StagePlan]
    notes: list[str]
    trials: dict[str, str]      # trial key → done | stale | to rerun (FAILED …) | new

    def by_kind(self) -> dict[str, list[StagePlan]]:
        out: dict[str, list[StagePlan]] = {}
        for st in self.stages.values():
            out.setdefault(st.kind, []).append(st)
        return out

    def stale(self) -> list[StagePlan]:
        return [s for s in self.stages.values() if s.state in (STALE, REUSED)]

    def hours(self, kind: str, stages: list[StagePlan]) -> float | None:
        """Job hours of the stages that run, or None without a throughput."""
        prof = self.profile.for_stage(kind)
        if not prof.throughput_img_s:
            return None
        rate = prof.throughput_img_s * (prof.throughput_px / _image_size(self.cfg)) ** 2
        work = sum(s.train_images + INFER_WEIGHT * s.infer_images for s in stages if s.runs)
        return work / rate / 3600.0

    def jobs(self, kind: str, n_run: int) -> str:
        """How the stages of a kind that run are submitted."""
        if not n_run:
            return "-"
        if (kind == "init" and self.profile.executor == "slurm" and self.profile.job_arrays
                and n_run > 1):
            return f"1 job array of {n_run}"
        return f"{n_run} job{'s' if n_run > 1 else ''}"

    def render(self) -> str:
        cfg, prof = self.cfg, self.profile
        lines = [f"basis: dry run of sweep {cfg.name!r} on profile {prof.name!r} "
                 f"({prof.executor}), folder {self.sweep_dir}: nothing is submitted",
                 "", f"trials ({cfg.n_trials()}): " + ", ".join(
                     f"{v} {k}" for k, v in sorted(_count(self.trials.values()).items()))]
        lines += [f"  {key:<40} {state}" for key, state in self.trials.items()]
        lines += ["", "stages:", "| kind | total | done | stale | new | shared | jobs "
                  "| resources per job | job hours | compute |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        total: dict[str, float] = {}
        for kind, stages in self.by_kind().items():
            count = {s: sum(st.state == s for st in stages) for s in (DONE, STALE, REUSED,
                                                                      NEW)}
            n_run = count[NEW] + count[STALE]
            shared = sum(len(st.trials) > 1 for st in stages)
            hours = self.hours(kind, stages)
            res = prof.for_stage(kind)
            compute = "?"
            if hours is not None:
                unit, per_job = (("GPU-h", res.gpus_per_node * res.nodes) if res.gpus_per_node
                                 else ("CPU-h", res.world_size * res.cpus_per_task))
                total[unit] = total.get(unit, 0.0) + hours * per_job
                compute = f"{hours * per_job:.3g} {unit}"
            stale = f"{count[STALE]}" + (f" (+{count[REUSED]} reused)" if count[REUSED] else "")
            lines.append(
                f"| {kind} | {len(stages)} | {count[DONE]} | {stale} | {count[NEW]} | {shared} "
                f"| {self.jobs(kind, n_run)} | {_resources(res)} "
                f"| {'?' if hours is None else f'{hours:.3g}'} | {compute} |")
        lines.append("")
        if total:
            lines.append("estimated compute: " + ", ".join(
                f"{v:.3g} {k}" for k, v in sorted(total.items())) + " (an upper bound: "
                "early stopping and shared stages found done later only shorten it)")
        else:
            lines.append(f"estimated compute: unknown; set throughput_img_s in profile "
                         f"{prof.name!r} (benchmarks/bench_throughput.py measures it)")
        stale = self.stale()
        if stale:
            lines += ["", "stale stages (computed by other code than this one, "
                      f"{_code()}):"]
            lines += [f"  {s.name} ← {s.stale_folder} (code {s.stale_code or '?'})"
                      f"{', kept (--reuse-stale)' if s.state == REUSED else ''}"
                      for s in stale]
        lines += ["", "annotation days per arm:", "| mode | N | pool fraction | "
                  "annotation network | segmentation network |", "|---|---|---|---|---|"]
        lines += [f"| {mode} | {n} | {'-' if f is None else f} | {a:.2f} | "
                  f"{'-' if s is None else f'{s:.2f}'} |"
                  for (mode, n, f), (a, s) in arm_days(cfg).items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


Arm = tuple[str, int, "float | None"]


def arm_days(cfg: SweepConfig) -> dict[Arm, tuple[float, float | None]]:
    """(mode, N, pool fraction) → annotation days of the annotation network and of the
    segmentation network (None: no pseudo-labels); equal for every β and seed."""
    out: dict[Arm, tuple[float, float | None]] = {}
    for t in cfg.trials():
        key = (t.mode, t.N, t.pool_fraction)
        if key in out:
            continue
        seg = None
        if t.pool_fraction is not None:
            seg = _budget(cfg, t, round(t.pool_fraction * cfg.data.n_additional)) / 86400
        out[key] = (_budget(cfg, t) / 86400.0, seg)
    return out


def _code() -> str:
    from jobs.specs import code_fingerprint

    return f"code {code_fingerprint()}"


def _resources(p: ClusterProfile) -> str:
    parts = [f"{p.nodes}×{p.tasks_per_node} task(s) × {p.cpus_per_task} CPU"]
    if p.gpus_per_node:
        parts.append(f"{p.gpus_per_node} GPU/node")
    if p.mem_gb:
        parts.append(f"{p.mem_gb:g} GB")
    parts.append(f"{p.timeout_min} min")
    if p.partition:
        parts.append(p.partition)
    return ", ".join(parts)


def _image_size(cfg: SweepConfig) -> int:
    return cfg.data.synthetic.image_size if cfg.data.kind == "synthetic" else \
        cfg.data.image_size


def _train_work(recipe: Recipe, n: int, world: int) -> tuple[float, float]:
    """(training image·epochs, inference images) of training on ``n`` images and
    evaluating on the test split."""
    train = recipe.train
    epochs = (epochs_for_steps(train.steps, n, train.batch_size, world) if train.steps
              else train.epochs)
    iou = train.iou_epochs if train.iou_schedule == "freeze" else 0
    return float(n * epochs), float(n * iou + recipe.data.n_test)


def workload(spec: StageSpec, world: int) -> tuple[float, float]:
    """(training image·epochs, inference images) of a stage."""
    kind = spec.kind
    if kind == "pretrain":
        return float(spec.pretrain.n_images * spec.pretrain.epochs), 0.0  # type: ignore
    if kind == "init":
        return _train_work(spec.recipe, spec.n_init, world)  # type: ignore[attr-defined]
    if kind == "score":
        return 0.0, float(spec.init.recipe.data.n_pool)  # type: ignore[attr-defined]
    if kind in ("annotate", "control"):
        return _train_work(spec.recipe, len(spec.train_ids), world)  # type: ignore
    if kind == "pseudo":
        return 0.0, float(spec.annotate.recipe.data.n_additional)  # type: ignore
    if kind == "segment":
        rec = spec.annotate.recipe  # type: ignore[attr-defined]
        return _train_work(rec, len(spec.annotate.train_ids) + spec.n_pseudo,  # type: ignore
                           world)
    raise ValueError(f"no workload for stage kind {kind!r}")


def build(cfg: SweepConfig, profile: ClusterProfile, sweep_dir: Path,
          reuse_stale: bool = False) -> SweepPlan:
    """The sweep's stages and their states in ``sweep_dir`` (read only)."""
    sweep_dir = Path(sweep_dir)
    index = StageIndex(SweepLayout(sweep_dir).stages)
    stages: dict[str, StagePlan] = {}
    notes: list[str] = []

    def add(spec: StageSpec, trial: str) -> StagePlan:
        name = spec.dirname
        if name not in stages:
            world = profile.for_stage(spec.kind).world_size
            train, infer = workload(spec, world)
            st = StagePlan(spec.kind, name, NEW, [], train, infer)
            if (SweepLayout(sweep_dir).stages / name / "DONE").exists():
                st.state = DONE
            else:
                old = index.stale(spec)
                if old is not None:
                    st.state = REUSED if reuse_stale else STALE
                    st.stale_folder, st.stale_code = old.name, old.read_code() or ""
            stages[name] = st
        stages[name].trials.append(trial)
        return stages[name]

    for trial in cfg.trials():
        own = cfg.with_schedule(trial.variant)
        i_spec: InitSpec = init_spec(cfg, trial)
        if i_spec.recipe.pretrain is not None:
            add(i_spec.recipe.pretrain, trial.key)
        add(i_spec, trial.key)
        s_spec = ScoreSpec(i_spec)
        score = add(s_spec, trial.key)
        after = (_rounds(cfg, own, trial) if cfg.study.rounds > 1 else
                 _after(cfg, own, trial, s_spec, score, sweep_dir, index))
        for spec in after.specs():
            add(spec, trial.key)
        if isinstance(after, _Unknown):
            for kind, key, spec in after.placeholders:
                name = f"{kind} of {key}"
                if name not in stages:
                    world = profile.for_stage(kind).world_size
                    train, infer = workload(spec, world)
                    stages[name] = StagePlan(kind, name, NEW, [], train, infer)
                stages[name].trials.append(trial.key)
    if SweepLayout(sweep_dir).meta.exists():
        import json

        meta = json.loads(SweepLayout(sweep_dir).meta.read_text())
        if meta.get("fingerprint") != cfg.fingerprint():
            notes.append(f"{sweep_dir} holds sweep {meta.get('name')!r} of another config; "
                         "a sweep there needs --force or another --sweep-dir")
    if any(" of " in n for n in stages):
        notes.append("stages named '<kind> of <trial>' follow a selection not made yet "
                     "(its score stage is not done); trials whose selections coincide "
                     "share them, so their count is an upper bound")
    return SweepPlan(cfg, profile, sweep_dir, stages, notes,
                     {t.key: trial_state(sweep_dir, t.key, reuse_stale) for t in cfg.trials()})


def trial_state(sweep_dir: Path, key: str, reuse_stale: bool = False) -> str:
    """What a sweep does with a trial: ``done`` (its COMPLETED row is this code's; with
    ``reuse_stale`` any code's), ``stale`` (another code's: it runs again), ``rerun
    (STATUS)`` for a FAILED or CANCELLED row, ``new`` without a row."""
    from jobs import records
    from jobs.specs import code_fingerprint

    path = records.exists(sweep_dir, "trials", key)
    if path is None:
        return "new"
    import pyarrow.parquet as pq

    row = pq.read_table(path, columns=None).to_pylist()[0]
    if row.get("status") != "COMPLETED":
        return f"rerun ({row.get('status')})"
    if reuse_stale or row.get("code") == code_fingerprint():
        return "done"
    return "stale"


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


@dataclass
class _Unknown:
    """The stages after a selection that is not known yet: placeholders named by the
    trial (without its pool fraction, which only the segment stage depends on)."""

    placeholders: list[tuple[str, str, StageSpec]]

    def specs(self) -> list[Any]:
        return []


def _rounds(cfg: SweepConfig, own: SweepConfig, trial: TrialConfig) -> _Unknown:
    """Placeholders of a multi-round trial (``study.rounds`` > 1): before each round but
    the last, an annotation network on the images labelled so far and its score stage
    (pool inference), then the last round's stages, as `_after` names them."""
    from jobs.trial import round_plan

    base = dataclasses.replace(trial, pool_fraction=None).key
    out: list[tuple[str, str, StageSpec]] = []
    labelled = trial.n_init
    for k, size in enumerate(round_plan(cfg, trial)[:-1], start=1):
        labelled += size
        ann = after_selection(cfg, own, trial, list(range(labelled))).annotate
        out.append(("annotate", f"{base} round {k}", ann))
        out.append(("score", f"{base} round {k}",
                    ScoreSpec(init_spec(cfg, trial))))
    stand_in = after_selection(cfg, own, trial, list(range(trial.N)))
    out += [(spec.kind, trial.key if spec.kind == "segment" else base, spec)
            for spec in stand_in.specs()]
    return _Unknown(out)


def _after(cfg: SweepConfig, own: SweepConfig, trial: TrialConfig, s_spec: ScoreSpec,
           score: StagePlan, sweep_dir: Path, index: StageIndex) -> Any:
    folder = None
    if score.state == DONE:
        folder = s_spec.folder(sweep_dir)
    elif score.state in (STALE, REUSED):
        # the old scores' selection names the old stages after it (a recomputed score
        # stage may select otherwise: those are recomputed either way)
        folder = index.stale(s_spec)
    if folder is not None:
        init_ids, selected = select_images(folder, trial)
        return after_selection(cfg, own, trial, init_ids + selected)
    # a stand-in selection of the right size names the kinds and sizes of the stages
    stand_in = after_selection(cfg, own, trial, list(range(trial.N)))
    base = dataclasses.replace(trial, pool_fraction=None).key
    out = []
    for spec in stand_in.specs():
        key = trial.key if spec.kind == "segment" else base
        out.append((spec.kind, key, spec))
    return _Unknown(out)
