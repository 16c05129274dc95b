"""``basis select``: which images of a user's own pool to label next, in rounds.

A round trains the annotation network on every image labelled so far (a
`jobs.specs.LabelledSpec` stage), pseudo-annotates and scores the pool (Eq. 2, a
`jobs.specs.PoolScoreSpec` stage), and selects N' images (`basis.selection.select`,
pure, here). With IL+C counts on the pool's images the network is IoU-W-RSIS, which
takes them as input; without, plain RSIS with the IoU branch, and no IL+C cost is
charged. The stages go through `jobs.dag.ensure` on the profile's executor (local
processes or Slurm), content-addressed, so a round run again reuses what is done.

Everything the user gives is checked before a file is written or a job submitted
(`prepare`). A campaign lives in its ``--out`` folder (`CampaignLayout`):

    campaign.json                 the state: inputs, settings, rounds, labelled ids
    inputs/labelled.json, pool.json   the campaign's copies of the two files
    rounds/r<k>/train.json        what round k trained on (labelled ∪ returned so far)
    rounds/r<k>/returned.json     round k's labels, once added (`add_labels`)
    rounds/r<k>/… and ./          selection.csv, preannotations.json,
                                  image_scores.parquet, budget.json (./: the latest)
    stages/, submitit/, mlflow.db     stage folders, job logs, one MLflow run per round
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from basis.budget import (
    AnnotationCosts,
    budget_seconds,
    image_seconds,
    images_for_days,
    seconds_to_days,
)
from basis.data.labelling import LabelledSet, Pool, label_stats, read_labelled, read_pool
from basis.losses import LossConfig
from basis.models.rsis import ModelConfig
from basis.train import TrainConfig
from hpc import atomic
from hpc.profiles import ClusterProfile, make_executor
from jobs import dag
from jobs.config import ConfigError, DataConfig, build
from jobs.specs import LabelledSpec, PoolScoreSpec, Recipe, code_fingerprint
from jobs.stages import job_for

log = logging.getLogger(__name__)

#: The model fields the data decide (the labelled set's classes, the pool's counts).
DERIVED_MODEL = ("n_classes", "weak", "iou_head")
#: The training flags of ``basis select`` → (section, field).
FLAGS = {"epochs": ("train", "epochs"), "steps": ("train", "steps"),
         "backbone": ("model", "backbone"), "hidden": ("model", "hidden"),
         "encoder_weights": ("model", "encoder_weights"),
         "image_size": (None, "image_size"), "seed": (None, "seed")}


@dataclass(frozen=True)
class Training:
    """How a round's network is trained: ``--config`` YAML (sections ``model``, ``train``,
    ``loss``; keys ``image_size``, ``seed``) and flags over it. The defaults are small,
    for a CPU: ResNet-18, 128 px, 8 + 3 epochs (the paper: ResNet-101 from ImageNet
    weights, 256 px)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    image_size: int = 128
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "config") -> "Training":
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        model = dict(raw.get("model") or {})
        derived = sorted(set(model) & set(DERIVED_MODEL))
        if derived:
            raise ConfigError(f"{where}: model.{derived[0]} is set from the data (classes of "
                              "the labelled set; W-RSIS when the pool has IL+C counts); "
                              "leave it out")
        out = cls(model=build(ModelConfig, model, f"{where}: model"),
                  train=build(TrainConfig, raw.get("train") or {}, f"{where}: train"),
                  loss=build(LossConfig, raw.get("loss") or {}, f"{where}: loss"),
                  image_size=raw.get("image_size", cls.image_size),
                  seed=raw.get("seed", cls.seed))
        for key in ("image_size", "seed"):
            value = getattr(out, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (
                    key == "image_size" and value < 32):
                raise ConfigError(f"{where}: {key}={value!r} must be an integer "
                                  f"{'≥ 32' if key == 'image_size' else '≥ 0'}")
        return out

    @classmethod
    def load(cls, path: Path | None, flags: Mapping[str, Any],
             base: Mapping[str, Any] | None = None) -> "Training":
        """The config file (or ``base``, a campaign's own) with ``flags`` over it."""
        raw: dict[str, Any] = json.loads(json.dumps(base)) if base else {}
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"--config {path}: no such file")
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"--config {path}: not valid YAML: {err}") from err
            if not isinstance(raw, dict):
                raise ConfigError(f"--config {path}: expected a mapping")
        for name, value in flags.items():
            if value is None:
                continue
            section, key = FLAGS[name]
            if section is None:
                raw[key] = value
            else:
                raw[section] = {**(raw.get(section) or {}), key: value}
        return cls.from_dict(raw, f"--config {path}" if path else "training")

    def to_dict(self) -> dict[str, Any]:
        out = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        for key in DERIVED_MODEL:
            out["model"].pop(key, None)
        return out


@dataclass(frozen=True)
class Round:
    """One round of a campaign in ``campaign.json``."""

    round: int
    selected: tuple[int, ...]
    strategy: str
    beta: float | None
    n: int
    init_stage: str
    score_stage: str
    mlflow_run_id: str = ""
    returned: str | None = None      # rounds/r<k>/returned.json, once added
    time: str = ""


@dataclass(frozen=True)
class Campaign:
    """A labelling campaign's state: where its images are, how it trains, its rounds."""

    labelled_images: str
    pool_images: str
    weak: bool
    training: Mapping[str, Any]
    profile: str
    tracking_uri: str
    rounds: tuple[Round, ...] = ()
    version: int = 1

    VERSION: ClassVar[int] = 1

    @classmethod
    def load(cls, path: Path) -> "Campaign":
        try:
            raw = json.loads(path.read_text())
            rounds = tuple(Round(**{**r, "selected": tuple(r["selected"])})
                           for r in raw.pop("rounds"))
            out = cls(**raw, rounds=rounds)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"{path}: not a readable campaign state: {err}") from err
        if out.version != cls.VERSION:
            raise ConfigError(f"{path}: campaign state version {out.version}; this code "
                              f"reads version {cls.VERSION}")
        return out

    def save(self, path: Path) -> None:
        atomic.write_text(path, json.dumps(dataclasses.asdict(self), indent=1))

    @property
    def pending(self) -> Round | None:
        """The last round, when its labels have not come back yet."""
        return self.rounds[-1] if self.rounds and self.rounds[-1].returned is None else None


@dataclass(frozen=True)
class CampaignLayout:
    """The files of a campaign folder, named once."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "campaign.json"

    @property
    def labelled(self) -> Path:
        return self.root / "inputs" / "labelled.json"

    @property
    def pool(self) -> Path:
        return self.root / "inputs" / "pool.json"

    def round_dir(self, k: int) -> Path:
        return self.root / "rounds" / f"r{k}"

    def train(self, k: int) -> Path:
        return self.round_dir(k) / "train.json"

    def returned(self, k: int) -> Path:
        return self.round_dir(k) / "returned.json"

    OUTPUTS: ClassVar[tuple[str, ...]] = ("selection.csv", "preannotations.json",
                                          "image_scores.parquet", "budget.json")


@dataclass(frozen=True)
class Request:
    """What ``basis select`` was asked (the command line, typed)."""

    out: Path
    labelled: Path | None = None
    pool: Path | None = None
    images: Path | None = None
    pool_images: Path | None = None
    n: int | None = None
    days: float | None = None
    beta: float | None = None
    from_sweep: Path | None = None
    strategy: str | None = None
    profile: str | None = None
    config: Path | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    crowd_as_objects: bool = False


@dataclass(frozen=True)
class Plan:
    """A checked round, ready to run: nothing of it is written yet."""

    req: Request
    layout: CampaignLayout
    campaign: Campaign               # with this round not yet added
    round: int
    labelled: LabelledSet
    labelled_data: Mapping[str, Any]
    pool: Pool
    pool_bytes: bytes
    train_data: Mapping[str, Any]
    training: Training
    profile: ClusterProfile
    n: int
    beta: float | None
    strategy: str
    beta_note: str
    already: frozenset[int]          # pool ids labelled before this round
    costs: AnnotationCosts
    init: LabelledSpec
    score: PoolScoreSpec

    @property
    def free(self) -> int:
        return len(self.pool.images) - len(self.already)

    @property
    def network(self) -> str:
        return "IoU-W-RSIS (the pool carries IL+C counts)" if self.pool.has_counts else \
            "RSIS with the IoU branch (the pool has no IL+C counts)"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


def prepare(req: Request) -> Plan:
    """Check everything a round needs, writing nothing → its `Plan`.

    Raises:
        ConfigError, DataError, ProfileError, ValueError: one line naming the file and
            the entry (or the option) at fault.
    """
    from basis.selection import STRATEGIES

    out = req.out.resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {req.out}: a file, not a folder")
    layout = CampaignLayout(out)
    old = Campaign.load(layout.state) if layout.state.is_file() else None
    if old is None:
        if req.labelled is None or req.pool is None:
            raise ConfigError(f"--out {req.out}: no campaign there yet; start one with "
                              "--labelled L.json --pool P.json")
        labelled, data = read_labelled(req.labelled, req.images,
                                       crowd_as_objects=req.crowd_as_objects)
        pool_path = Path(req.pool)
        images = req.pool_images or req.images
        pool = read_pool(pool_path, labelled, images)
        pool_bytes = pool_path.read_bytes()
        training = Training.load(req.config, req.flags)
        returned: list[tuple[Mapping[str, Any], Path]] = []
        rounds: tuple[Round, ...] = ()
        profile_name = req.profile or "local"
    else:
        if req.labelled is not None or req.pool is not None:
            raise ConfigError(f"--out {req.out}: holds a campaign already (round "
                              f"{len(old.rounds)}); its labelled set and pool are fixed: "
                              f"continue with `basis select --out {req.out}`")
        if old.pending is not None:
            p = old.pending
            raise ConfigError(f"--out {req.out}: round {p.round}'s {len(p.selected)} selected "
                              "images have no labels yet; add the annotators' COCO file with "
                              f"`basis select --out {req.out} --add-labels FILE`")
        labelled, data = read_labelled(layout.labelled, old.labelled_images)
        pool = read_pool(layout.pool, labelled, old.pool_images)
        pool_bytes = layout.pool.read_bytes()
        training = Training.load(req.config, req.flags, base=old.training)
        returned = [(json.loads((out / str(r.returned)).read_text()), Path(old.pool_images))
                    for r in old.rounds]
        rounds = old.rounds
        profile_name = req.profile or old.profile
    profile = ClusterProfile.load(profile_name)
    round_no = len(rounds) + 1
    done = {im.id for im in pool.images if im.path in labelled.files}
    for r in rounds:
        done.update(r.selected)
    already = frozenset(done)
    free = len(pool.images) - len(already)

    from basis.data.labelling import merge_training_set

    train_data = merge_training_set([(data, labelled.image_root), *returned],
                                    labelled.categories)
    n_img, opi, cpi = label_stats(train_data)
    costs = AnnotationCosts(n_classes=len(labelled.categories), classes_per_image=cpi,
                            objects_per_image=opi)
    last = rounds[-1] if rounds else None
    n = _count(req, costs, free, pool, last)
    strategy = req.strategy or (last.strategy if last else "closest")
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy}: one of {', '.join(sorted(STRATEGIES))}")
    beta, beta_note = _beta(req, strategy, n_img + n, last)
    model = dataclasses.replace(training.model, n_classes=len(labelled.categories),
                                weak=pool.has_counts, iou_head=True)
    if model.encoder_weights is not None and not Path(model.encoder_weights).is_file():
        raise ConfigError(f"--encoder-weights {model.encoder_weights}: no such file")
    recipe = Recipe(DataConfig(kind="coco", coco_train=str(layout.train(round_no)),
                               image_size=training.image_size, check_images=False),
                    model, training.train, training.loss, training.seed)
    init = LabelledSpec(recipe, _digest(_dump(train_data)))
    score = PoolScoreSpec(init, str(layout.pool), str(pool.image_root), _digest(pool_bytes))
    campaign = old or Campaign(
        labelled_images=str(labelled.image_root.resolve()),
        pool_images=str(pool.image_root.resolve()), weak=pool.has_counts,
        training=training.to_dict(), profile=profile.name,
        tracking_uri=req.tracking_uri or profile.tracking_uri or _default_uri(out))
    campaign = dataclasses.replace(campaign, training=training.to_dict(),
                                   profile=profile.name)
    return Plan(req, layout, campaign, round_no, labelled, data, pool, pool_bytes,
                train_data, training, profile, n, beta, strategy, beta_note, already, costs,
                init, score)


def _count(req: Request, costs: AnnotationCosts, free: int, pool: Pool,
           last: Round | None) -> int:
    """N' of the round: ``--n``, or ``--days`` of mask drawing at Table 1's t_full."""
    if req.n is not None and req.days is not None:
        raise ConfigError("give --n or --days, not both")
    if req.days is not None:
        try:
            n = images_for_days(req.days, costs)
        except ValueError as err:
            raise ConfigError(f"--days {req.days}: {err}") from None
        if n < 1:
            raise ConfigError(f"--days {req.days} buys no image: one costs "
                              f"{costs.t_full:.1f} s of mask drawing (Table 1 with "
                              f"{costs.objects_per_image:.2f} objects and "
                              f"{costs.classes_per_image:.2f} classes per image)")
        source = f"--days {req.days:g} ({n} images at {costs.t_full:.1f} s each)"
    elif req.n is not None or last is not None:
        n = int(req.n if req.n is not None else last.n)   # type: ignore[union-attr]
        source = f"--n {n}"
    else:
        raise ConfigError("give --n N (images to select) or --days D (annotator-days)")
    if n < 1:
        raise ConfigError(f"--n {n}: select at least one image")
    if n > free:
        raise ConfigError(f"{source} is larger than the {free} pool images not labelled yet "
                          f"({pool.path.name}: {len(pool.images)} images, "
                          f"{len(pool.images) - free} labelled)")
    return n


def _beta(req: Request, strategy: str, n_total: int, last: Round | None
          ) -> tuple[float | None, str]:
    """β of the round and where it comes from."""
    from basis.selection import STRATEGIES

    if req.beta is not None and req.from_sweep is not None:
        raise ConfigError("give --beta or --from-sweep, not both")
    if req.from_sweep is not None:
        beta, note = best_beta(req.from_sweep, n_total)
    elif req.beta is not None:
        beta, note = float(req.beta), f"β = {req.beta:g} (--beta)"
    elif last is not None and last.beta is not None:
        beta, note = last.beta, f"β = {last.beta:g} (round {last.round}'s)"
    else:
        beta, note = None, ""
    if beta is not None and not 0.0 <= beta <= 1.0:
        raise ConfigError(f"--beta {beta}: must be in [0, 1]")
    if not STRATEGIES[strategy].needs_beta:
        return beta, ""
    if beta is None:
        raise ConfigError(f"--strategy {strategy} needs a target score: give --beta B "
                          "or --from-sweep SWEEP (the best β of a finished sweep)")
    return beta, note


def best_beta(sweep: Path, n_total: int) -> tuple[float, str]:
    """The β with the best mean AP@0.5 among a finished sweep's ``predicted`` trials at
    the N nearest to ``n_total`` (ties: the smaller N, then the smaller β)."""
    from analysis.io import ResultsError, read
    from analysis.schema import Status
    from basis.planner import expected_ap, results_from_trials

    try:
        trials = read(sweep, "trials")
    except ResultsError as err:
        raise ConfigError(f"--from-sweep {sweep}: {err}") from None
    trials = trials[trials["status"] == Status.COMPLETED.value].astype(object)
    rows = [r for r in results_from_trials(trials.where(trials.notna(), None)
                                           .to_dict("records"))
            if r["mode"] == "predicted" and r["network"] == "annotation"]
    if not rows:
        raise ConfigError(f"--from-sweep {sweep}: no completed `predicted` trial to take "
                          "β from")
    N = min({r["N"] for r in rows}, key=lambda v: (abs(v - n_total), v))
    best = expected_ap(rows, N, "closest", 0.0)
    assert best is not None and best.beta is not None
    return float(best.beta), (f"β = {best.beta:g}, the best of {sweep} at N = {N} "
                              f"(nearest to {n_total}): AP@0.5 {100 * best.ap50:.1f} over "
                              f"{best.n_seeds} seed(s)")


def _default_uri(out: Path) -> str:
    from jobs.tracking import default_uri

    return default_uri(out)


def _job_name(out: Path, kind: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.+-]", "-", out.name).strip("-.+_") or "campaign"
    return f"basis-select-{base[:80]}-{kind}"


def run(plan: Plan) -> dict[str, Any]:
    """Run a checked round: write its inputs, train and score through the stages,
    select, write the outputs, record the MLflow run and the campaign state → the
    round's summary (budget included)."""
    layout, k = plan.layout, plan.round
    out = layout.root
    if k == 1:
        atomic.write_bytes(layout.labelled, _dump(plan.labelled_data))
        atomic.write_bytes(layout.pool, plan.pool_bytes)
    atomic.write_bytes(layout.train(k), _dump(plan.train_data))
    tracker = _Tracker(plan.campaign.tracking_uri, out)
    run_id = tracker.start(k, _params(plan), {"basis.kind": "select", "round": str(k),
                                              "code": code_fingerprint(),
                                              "profile": plan.profile.name})
    try:
        t0 = time.time()
        init = _ensure(plan, plan.init)
        score = _ensure(plan, plan.score)
        summary = _select_and_write(plan, score)
        summary.update(wall_s=round(time.time() - t0, 1), mlflow_run_id=run_id,
                       init_stage=init.folder.name, score_stage=score.folder.name,
                       slurm_job_ids=",".join(init.job_ids + score.job_ids))
        tracker.finish(run_id, summary, init.folder.metrics,
                       [layout.round_dir(k) / f for f in layout.OUTPUTS])
    except BaseException:
        tracker.fail(run_id)
        raise
    entry = Round(round=k, selected=tuple(summary["selected"]), strategy=plan.strategy,
                  beta=plan.beta, n=plan.n, init_stage=init.folder.name,
                  score_stage=score.folder.name, mlflow_run_id=run_id,
                  time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    dataclasses.replace(plan.campaign, rounds=(*plan.campaign.rounds, entry)).save(
        layout.state)
    return summary


def _ensure(plan: Plan, spec: Any) -> dag.StageResult:
    def executor(folder: Path) -> Any:
        return make_executor(plan.profile, folder, name=_job_name(plan.layout.root, spec.kind),
                             stage=spec.kind)
    return dag.ensure(plan.layout.root, spec, job_for, executor, retries=plan.profile.retries)


def _select_and_write(plan: Plan, score: dag.StageResult) -> dict[str, Any]:
    """The selection from the scored pool, and the round's files."""
    import numpy as np

    from basis.data.labelling import preannotations
    from basis.selection import select
    from basis.types import ImagePrediction

    preds = [ImagePrediction(**p) for p in
             json.loads((score.folder.path / "predictions.json").read_text())]
    by_id = {p.image_id: p for p in preds}
    images = plan.pool.by_id()
    if set(by_id) != set(images):
        raise RuntimeError(f"stage {score.folder.name} scored other images than "
                           f"{plan.pool.path}")
    free = {i: by_id[i].image_score for i in images if i not in plan.already}
    rng = np.random.default_rng([plan.training.seed, plan.round])
    chosen = [int(i) for i in select(plan.strategy, free, plan.n, plan.beta, rng)]
    rank = {i: r for r, i in enumerate(chosen, start=1)}
    cats = plan.labelled.categories
    label_to_cat = {k: int(c["id"]) for k, c in enumerate(cats, start=1)}
    expected = {i: _expected_s(images[i], by_id[i], label_to_cat, plan.costs)
                for i in images}

    rows = []
    for im in plan.pool.images:
        p = by_id[im.id]
        rows.append({"image_id": im.id, "file_name": im.file_name, "round": plan.round,
                     "score_pred": p.image_score, "iou_true": p.image_iou_true,
                     "n_objects": len(p.primary()), "n_weak": im.n_weak,
                     "expected_s": expected[im.id], "labelled": im.id in plan.already,
                     "selected": im.id in rank, "rank": rank.get(im.id)})
    selection = sorted((r for r in rows if r["selected"]), key=lambda r: r["rank"])
    raw = {int(im["id"]): im for im in json.loads(plan.pool_bytes)["images"]}
    pre = preannotations([by_id[i] for i in chosen], [images[i] for i in chosen], raw,
                         plan.pool.categories, label_to_cat)
    budget = _budget(plan, selection)
    folder = plan.layout.round_dir(plan.round)
    atomic.write_text(folder / "selection.csv", _csv(selection))
    atomic.write_text(folder / "preannotations.json", json.dumps(pre))
    _write_scores(folder / "image_scores.parquet", rows)
    atomic.write_text(folder / "budget.json", json.dumps(budget, indent=1))
    for name in plan.layout.OUTPUTS:      # the latest round's files, at the top
        atomic.write_bytes(plan.layout.root / name, (folder / name).read_bytes())
    oracle = [r["iou_true"] for r in selection if r["iou_true"] is not None]
    return {"round": plan.round, "selected": chosen, "budget": budget,
            "n_preannotations": len(pre["annotations"]),
            "selected_score_mean": float(np.mean([r["score_pred"] for r in selection])),
            "pool_score_mean": float(np.mean([p.image_score for p in preds])),
            "selected_iou_true_mean": float(np.mean(oracle)) if oracle else None}


def _expected_s(im: Any, pred: Any, label_to_cat: Mapping[int, int],
                costs: AnnotationCosts) -> float:
    """Table 1's seconds to label one image with masks: from its IL+C counts, else from
    the network's masks."""
    if im.counts is not None:
        return image_seconds(int(im.n_weak), int(im.n_classes), costs)
    labels = [pred.labels[k] for k in pred.primary()]
    return image_seconds(len(labels), len(set(labels)), costs)


def _budget(plan: Plan, selection: list[dict[str, Any]]) -> dict[str, Any]:
    """The round's annotation budget (Table 1 cost model, the labelled set's objects and
    classes per image): masks for the N' selected images, plus — for W-RSIS — the IL+C
    labels of the rest of the unlabelled pool, which the selection needed."""
    c = plan.costs
    n_ilc = plan.free - plan.n if plan.pool.has_counts else 0
    total = budget_seconds(plan.n, n_ilc, c)
    own = float(sum(r["expected_s"] for r in selection))
    return {"round": plan.round, "n_selected": plan.n, "network": plan.network,
            "strategy": plan.strategy, "beta": plan.beta,
            "costs": {"n_classes": c.n_classes, "objects_per_image": c.objects_per_image,
                      "classes_per_image": c.classes_per_image, "t_full_s": c.t_full,
                      "t_ilc_s": c.t_ilc},
            "masks_s": plan.n * c.t_full, "n_ilc": n_ilc, "ilc_s": n_ilc * c.t_ilc,
            "total_s": total, "total_days": seconds_to_days(total),
            "selected_expected_s": own, "selected_expected_days": seconds_to_days(own)}


def budget_line(b: Mapping[str, Any]) -> str:
    """The budget as one printed line."""
    line = (f"{b['n_selected']} images × {b['costs']['t_full_s']:.1f} s (masks)")
    if b["n_ilc"]:
        line += f" + {b['n_ilc']} × {b['costs']['t_ilc_s']:.2f} s (IL+C of the rest of the pool)"
    return (f"{line} = {b['total_s']:.0f} s = {b['total_days']:.3f} days (Table 1 with "
            f"{b['costs']['objects_per_image']:.2f} objects, "
            f"{b['costs']['classes_per_image']:.2f} classes per labelled image); the "
            f"selected images' own content: {b['selected_expected_s']:.0f} s")


SELECTION_COLUMNS = ("rank", "image_id", "file_name", "score_pred", "n_objects", "expected_s")


def _csv(selection: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SELECTION_COLUMNS)
    for r in selection:
        w.writerow([r["rank"], r["image_id"], r["file_name"], f"{r['score_pred']:.6f}",
                    r["n_objects"], f"{r['expected_s']:.1f}"])
    return buf.getvalue()


def _write_scores(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis.schema import SELECT_SCORES

    with atomic.atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=SELECT_SCORES), tmp)


def _params(plan: Plan) -> dict[str, Any]:
    """The round's MLflow params: its inputs, selection and training, flat."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value
    walk("", plan.training.to_dict())
    flat.update(round=plan.round, n=plan.n, beta=plan.beta, strategy=plan.strategy,
                network="w-rsis" if plan.pool.has_counts else "rsis",
                labelled=str(plan.labelled.path), pool=str(plan.pool.path),
                n_labelled=len(plan.train_data["images"]),
                n_pool=len(plan.pool.images), n_free=plan.free, profile=plan.profile.name,
                init_stage=plan.init.dirname, score_stage=plan.score.dirname)
    return flat


class _Tracker:
    """The campaign's MLflow store: one experiment per campaign folder, a run per round."""

    def __init__(self, uri: str, out: Path) -> None:
        from jobs.tracking import EXPERIMENT_TAGS, HTTP_DEFAULTS

        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        self.uri, self.client = uri, MlflowClient(tracking_uri=uri)
        name = _job_name(out, "campaign").removesuffix("-campaign")
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            self.exp_id = self.client.create_experiment(
                name, artifact_location=(out / "mlartifacts").resolve().as_uri(),
                tags=EXPERIMENT_TAGS)
        else:
            self.exp_id = exp.experiment_id

    def start(self, k: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.exp_id, run_name=f"round-{k}", tags=dict(tags))
        items = [Param(key, ("None" if v is None else str(v))[:6000])
                 for key, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        return str(run.info.run_id)

    def finish(self, run_id: str, summary: Mapping[str, Any], metrics_file: Path,
               artifacts: list[Path]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        b = summary["budget"]
        values = {"n_selected": b["n_selected"], "budget_s": b["total_s"],
                  "budget_days": b["total_days"], "masks_s": b["masks_s"],
                  "selected_expected_s": b["selected_expected_s"],
                  "selected_score_mean": summary["selected_score_mean"],
                  "pool_score_mean": summary["pool_score_mean"],
                  "n_preannotations": summary["n_preannotations"]}
        if summary.get("selected_iou_true_mean") is not None:
            values["selected_iou_true_mean"] = summary["selected_iou_true_mean"]
        ms = [Metric(k, float(v), now, 0) for k, v in values.items()]
        records, _ = dag.read_metrics(metrics_file, 0)
        for rec in records:
            ms += [Metric(f"init/{k}", v, now, int(rec.get("epoch", 0)))
                   for k, v in dag.epoch_values(rec).items() if math.isfinite(v)]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i:i + 500])
        self.client.set_tag(run_id, "init_stage", summary["init_stage"])
        self.client.set_tag(run_id, "score_stage", summary["score_stage"])
        if summary.get("slurm_job_ids"):
            self.client.set_tag(run_id, "slurm_job_ids", summary["slurm_job_ids"])
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FINISHED")

    def fail(self, run_id: str) -> None:
        try:
            self.client.set_terminated(run_id, status="FAILED")
        except Exception as err:  # the round's own error is the one to report
            log.warning("MLflow run %s not marked FAILED: %r", run_id, err)


def add_labels(out: Path, returned: Path, crowd_as_objects: bool = False
               ) -> tuple[Round, dict[str, Any], list[str]]:
    """Merge the annotators' COCO file for the pending round into the campaign (it is
    checked first: `basis.data.labelling.match_returned`) → (the round, the labels as
    stored, notes on how they were matched)."""
    from basis.data.labelling import match_returned

    layout = CampaignLayout(out.resolve())
    if not layout.state.is_file():
        raise ConfigError(f"--out {out}: no campaign there (no campaign.json); start one "
                          "with --labelled L.json --pool P.json")
    camp = Campaign.load(layout.state)
    pending = camp.pending
    if pending is None:
        last = camp.rounds[-1].round if camp.rounds else 0
        raise ConfigError(f"--add-labels {returned}: round {last}'s labels were added "
                          "already and no round is waiting for labels; run "
                          f"`basis select --out {out}` for the next round")
    labelled, _ = read_labelled(layout.labelled, camp.labelled_images)
    pool = read_pool(layout.pool, labelled, camp.pool_images, check_files=False)
    images = pool.by_id()
    raw = {int(im["id"]): im for im in json.loads(layout.pool.read_text())["images"]}
    selection = [images[i] for i in pending.selected]
    data, notes = match_returned(returned, selection, raw, labelled.categories,
                                 round_no=pending.round, crowd_as_objects=crowd_as_objects)
    target = layout.returned(pending.round)
    atomic.write_bytes(target, _dump(data))
    done = dataclasses.replace(pending, returned=str(target.relative_to(layout.root)))
    dataclasses.replace(camp, rounds=(*camp.rounds[:-1], done)).save(layout.state)
    try:
        _Tracker(camp.tracking_uri, layout.root).client.set_tag(
            pending.mlflow_run_id, "labels_returned", str(target))
    except Exception as err:  # the labels are merged; the tag is a convenience
        log.warning("MLflow tag not set: %r", err)
    shutil.copyfile(returned, layout.round_dir(pending.round) / "returned-as-given.json")
    return done, data, notes
