"""Frozen configs of a sweep and its trials.

A `SweepConfig` holds `basis`'s own config dataclasses (`ModelConfig`, `TrainConfig`,
`LossConfig`, `SyntheticConfig`) once, built and validated when the sweep is loaded,
before a single job is submitted: each error names the field and what is allowed. A
`TrialConfig` is one grid point; its `to_flat_dict()` is at once the Tune keys, the
Parquet columns and the trial's own MLflow params.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from basis.data.synthetic import SyntheticConfig
from basis.losses import LossConfig
from basis.models.rsis import ModelConfig
from basis.pretrain import PretrainConfig
from basis.selection import UNCERTAINTIES
from basis.train import TrainConfig

MODES = ("predicted", "oracle", "random")
#: ``study.strategies``: acquisition baselines, each one more trial ``mode`` value. The
#: first four rank the predicted image score (Eq. 2, `basis.selection.select`), the
#: uncertainties take the initial network's most uncertain images, ``coreset`` is k-center
#: greedy on its pooled encoder features (`basis.selection.k_center_greedy`).
STUDY_STRATEGIES = ("band", "lowest", "highest", "stratified", *UNCERTAINTIES, "coreset")
#: The strategies that take β (one trial per β, like ``predicted``); the rest are β-free
#: (one trial per N and seed, β null, like ``random``). ``stratified`` spreads over the
#: whole score range and ignores β.
BETA_STRATEGIES = ("band",)
#: The data kinds `jobs.data` opens.
DATA_KINDS = ("synthetic", "voc_sbd", "coco")
#: The `basis` config class of each method section of a sweep config.
SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "loss": LossConfig,
                             "pretrain": PretrainConfig}
#: ``model.encoder_weights`` naming the sweep's own pretrain stage (`jobs.specs.PretrainSpec`).
PRETRAIN = "pretrain"

C = TypeVar("C")


class ConfigError(ValueError):
    """A sweep config that cannot run; the message names the field."""


def build(cls: type[C], values: Mapping[str, Any] | C, section: str) -> C:
    """The dataclass ``cls`` from a mapping (or itself), with a clear error naming
    ``section`` and the keys it allows."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}: expected a mapping, got {type(values).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    hints = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    # YAML and JSON give lists where a config holds tuples
    values = {k: tuple(v) if isinstance(v, list) and "tuple" in str(hints.get(k)) else v
              for k, v in values.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section}: {err}") from err


@dataclass(frozen=True)
class DataConfig:
    """Which images (see `jobs.data`): ``synthetic`` (the default), ``voc_sbd`` or ``coco``.

    For synthetic data the split sizes are settings; for real data they are read from
    disk when the sweep starts (`jobs.data.resolved`) and recorded in its config.yaml.
    """

    kind: str = "synthetic"
    n_pool: int = 240          # the strong pool selection draws from (VOC12 train: 1464)
    n_test: int = 64           # evaluation images (VOC12 val: 1449)
    n_additional: int = 0      # weakly labelled pool to pseudo-label (SBD: 9118)
    data_seed: int = 0         # identity of the synthetic dataset, not a trial seed
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    image_size: int = 256      # real images are resized to this (RSIS: 256×256)
    voc_root: str | None = None        # VOCdevkit/VOC2012 (voc_sbd)
    sbd_root: str | None = None        # benchmark_RELEASE/dataset (voc_sbd)
    coco_train: str | None = None      # COCO JSON of the strong pool (coco)
    coco_test: str | None = None       # COCO JSON of the test images (coco)
    coco_additional: str | None = None  # COCO JSON of the additional pool (coco, optional)
    image_root: str | None = None      # folder of the COCO images
    check_images: bool = True          # read every image before submitting (real data)
    sizes_from_disk: bool = False      # set by `jobs.data.resolved` for real data

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "DataConfig":
        raw = dict(raw)
        synth = build(SyntheticConfig, raw.pop("synthetic", None) or {}, "data.synthetic")
        return dataclasses.replace(build(cls, raw, "data"), synthetic=synth)

    def paths(self) -> dict[str, str | None]:
        """The path fields the kind needs → their values."""
        need = {"synthetic": (), "voc_sbd": ("voc_root", "sbd_root"),
                "coco": ("coco_train", "coco_test")}[self.kind]
        return {k: getattr(self, k) for k in need}

    def n_classes(self) -> int:
        """Classes the model predicts: the synthetic config's, VOC's 20, or the COCO
        file's."""
        if self.kind == "synthetic":
            return int(self.synthetic.n_classes)
        if self.kind == "voc_sbd":
            return 20
        from basis.data.coco import COCOInstances

        return len(COCOInstances(str(self.coco_train), self.image_root).category_ids)


#: The IoU-branch settings a Table-2 schedule may change (train.iou_schedule, loss.iou_target).
SCHEDULE_KEYS = {"iou_schedule": "train", "iou_target": "loss"}


@dataclass(frozen=True)
class StudyConfig:
    """The grid: N × β × seed per selection mode, plus the random baseline.

    ``schedules`` adds Table 2's rows: each mapping (``iou_schedule``, ``iou_target``)
    overrides the sweep's IoU-branch settings for extra trials of the random arm — the
    paper's "N random images" — on the same images as the main random trials, so the
    rows differ by the schedule alone. The sweep's own settings are the main row.
    ``segment_modes`` / ``segment_betas`` limit which arms also train the segmentation
    network (Tables 5/7); empty means every arm.
    ``strategies`` adds acquisition baselines (`STUDY_STRATEGIES`), each a ``mode`` value
    of its own: ``band`` for every β, the others once per N and seed (β-free).
    ``rounds`` splits each trial's N − n_init selected images over R selection rounds
    (`basis.selection.plan_rounds`): round 1 selects from the initial network's scores,
    round r + 1 from those of round r's annotation network, trained on the initial and
    the selected images so far; 1 is the paper's one-shot selection.
    """

    n_init: int = 20
    N: tuple[int, ...] = (40, 80)
    beta: tuple[float, ...] = (0.3, 0.6)
    seed: tuple[int, ...] = (0,)
    modes: tuple[str, ...] = ("predicted",)
    random_baseline: bool = True
    strategies: tuple[str, ...] = ()           # baselines: lowest, entropy, coreset, …
    segment: bool = False      # also pseudo-label the additional pool, train RSIS (Tables 5/7)
    pool_fractions: tuple[float, ...] = (1.0,)   # shares of it used (Table 5: 1.0, 7: 0.5)
    segment_modes: tuple[str, ...] = ()          # arms that segment (random, predicted, …)
    segment_betas: tuple[float, ...] = ()        # β of those arms that segment
    control: bool = True       # with segment: also RSIS on the strong images alone (Table 5)
    schedules: tuple[Mapping[str, str], ...] = ()  # Table 2: extra IoU-branch settings
    rounds: int = 1            # selection rounds per trial (1: the paper's one-shot selection)


@dataclass(frozen=True)
class Arm:
    """One arm of the grid, crossed with N and seed: a selection mode and β (None for
    random), the pool fraction when it segments, and a Table-2 schedule name (None:
    the sweep's own IoU-branch settings)."""

    mode: str
    beta: float | None
    pool_fraction: float | None = None
    variant: str | None = None


@dataclass(frozen=True)
class SweepConfig:
    name: str
    profile: str = "local"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # with encoder_weights:
    study: StudyConfig = field(default_factory=StudyConfig)            # pretrain

    @classmethod
    def load(cls, path: str | Path) -> "SweepConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping of sections, got "
                              f"{type(raw).__name__}")
        return cls.from_dict(raw, default_name=path.stem)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], default_name: str = "sweep") -> "SweepConfig":
        """A validated config from its mapping (a YAML file, or `to_dict` again)."""
        raw = dict(raw)
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - top)
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(top))}")
        data_raw = raw.pop("data", {}) or {}
        if not isinstance(data_raw, Mapping):
            raise ConfigError(f"data: expected a mapping, got {type(data_raw).__name__}")
        data = DataConfig.from_dict(data_raw)
        if data.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind={data.kind!r}; allowed: {', '.join(DATA_KINDS)}")
        _check_paths(data)
        study = build(StudyConfig, raw.pop("study", {}) or {}, "study")
        for key in ("N", "beta", "seed", "modes", "strategies", "pool_fractions",
                    "segment_modes", "segment_betas", "schedules"):
            study = dataclasses.replace(study, **{key: tuple(_as_list(getattr(study, key)))})
        sections = {k: dict(raw.get(k) or {}) if isinstance(raw.get(k) or {}, Mapping)
                    else raw[k] for k in SECTIONS}
        n_classes = data.n_classes()
        given = sections["model"].get("n_classes", n_classes) if isinstance(
            sections["model"], Mapping) else n_classes
        if given != n_classes:
            raise ConfigError(f"model.n_classes={given} differs from the data's "
                              f"n_classes={n_classes}; leave it out, it is taken from the data")
        if isinstance(sections["model"], Mapping):   # the model predicts the data's classes
            sections["model"] = {**sections["model"], "n_classes": n_classes}
        built = {k: build(SECTIONS[k], v, k) for k, v in sections.items()}
        cfg = cls(name=str(raw.pop("name", default_name)), data=data, study=study, **built,
                  **({"profile": raw["profile"]} if "profile" in raw else {}))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise `ConfigError` on anything that would fail later in a job."""
        s, d = self.study, self.data
        if d.kind != "synthetic" and not d.sizes_from_disk:
            return self._validate_grid()   # sizes are checked once read from disk
        for key in ("n_pool", "n_test"):
            if getattr(d, key) < 1:
                raise ConfigError(f"data.{key}={getattr(d, key)} must be ≥ 1")
        if not 1 <= s.n_init < d.n_pool:
            raise ConfigError(f"study.n_init={s.n_init} must be in [1, data.n_pool={d.n_pool})")
        for n in s.N:
            if not s.n_init < n <= d.n_pool:
                raise ConfigError(f"study.N={n} must be in (study.n_init={s.n_init}, "
                                  f"data.n_pool={d.n_pool}]")
        if s.segment:
            if d.n_additional < 1:
                raise ConfigError("study.segment needs data.n_additional ≥ 1 images to "
                                  "pseudo-label")
            for f in s.pool_fractions:
                if not 0.0 < float(f) <= 1.0:
                    raise ConfigError(f"study.pool_fractions has {f}; allowed: (0, 1]")
        if not s.modes and not s.random_baseline and not s.strategies:
            raise ConfigError("study has no modes, strategies or random baseline: "
                              "nothing to run")
        self._validate_grid()
        if s.segment and not any(a.pool_fraction is not None for a in self.arms()):
            raise ConfigError("study.segment_modes / segment_betas leave no arm to segment")

    def uses_pretrain(self) -> bool:
        """Whether the encoder starts from the sweep's own pretrain stage."""
        return self.model.encoder_weights == PRETRAIN

    def warnings(self) -> list[str]:
        """What will run, but not as the paper did (printed before a sweep starts)."""
        out = []
        if self.model.encoder_weights is None:
            out.append("the encoder starts from random weights; the paper (and RSIS) start "
                       "from ImageNet weights with lr_encoder 1e-6: set model.encoder_weights "
                       "to a local torchvision state dict" + (
                           ", or to `pretrain` for the sweep's own synthetic pretraining"
                           if self.data.kind == "synthetic" else ""))
        elif self.train.lr_encoder > 1e-4:
            out.append(f"train.lr_encoder={self.train.lr_encoder:g} on a pretrained encoder; "
                       "RSIS uses 1e-6")
        return out

    def _validate_grid(self) -> None:
        """The checks that need no split sizes."""
        weights = self.model.encoder_weights
        if weights == PRETRAIN and self.data.kind != "synthetic":
            raise ConfigError("model.encoder_weights: pretrain pretrains on synthetic images "
                              f"and needs data.kind synthetic (here {self.data.kind}); give "
                              "the local path of an ImageNet state dict instead")
        if weights not in (None, PRETRAIN) and not Path(str(weights)).is_file():
            raise ConfigError(f"model.encoder_weights={weights} does not exist (a local "
                              "torchvision state dict file, or `pretrain`)")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            raise ConfigError(f"name={self.name!r}: use letters, digits, '_', '.', '-' "
                              "(it becomes a folder, an MLflow experiment and a job name)")
        s = self.study
        if not s.seed:
            raise ConfigError("study.seed is empty")
        bad_modes = [m for m in s.modes if m not in MODES or m == "random"]
        if bad_modes:
            raise ConfigError(f"study.modes has {bad_modes}; allowed: predicted, oracle "
                              "(random is study.random_baseline)")
        bad = [m for m in s.strategies if m not in STUDY_STRATEGIES]
        if bad:
            raise ConfigError(f"study.strategies has {bad}; allowed: "
                              f"{', '.join(STUDY_STRATEGIES)}")
        if len(set(s.strategies)) != len(s.strategies):
            raise ConfigError(f"study.strategies repeats a strategy: {list(s.strategies)}")
        self._validate_rounds()
        if not s.beta and set(s.strategies) & set(BETA_STRATEGIES):
            raise ConfigError("study.strategies: band selects around β and needs study.beta")
        for b in s.beta:
            if not 0.0 <= float(b) <= 1.0:
                raise ConfigError(f"study.beta={b} is outside [0, 1]")
        bad = [m for m in s.segment_modes if m not in MODES + STUDY_STRATEGIES]
        if bad:
            raise ConfigError(f"study.segment_modes has {bad}; allowed: "
                              f"{', '.join(MODES + STUDY_STRATEGIES)}")
        bad = [b for b in s.segment_betas if float(b) not in [float(x) for x in s.beta]]
        if bad:
            raise ConfigError(f"study.segment_betas has {bad}, not in study.beta")
        self._validate_schedules()

    def _validate_rounds(self) -> None:
        """``study.rounds`` ≥ 1, and every round selects ≥ 1 image for every N."""
        s = self.study
        r = s.rounds
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ConfigError(f"study.rounds={r!r} must be an int ≥ 1 (1: one selection)")
        for n in s.N:
            if s.n_init < int(n) < s.n_init + r:   # N ≤ n_init is refused with study.N
                raise ConfigError(f"study.rounds={r} is more than the {int(n) - s.n_init} "
                                  f"images to select at study.N={n} (n_init {s.n_init}): "
                                  "every round must select at least one image")

    def _validate_schedules(self) -> None:
        seen = set()
        for i, sched in enumerate(self.study.schedules):
            if not isinstance(sched, Mapping) or not sched:
                raise ConfigError(f"study.schedules[{i}]: expected a mapping with "
                                  f"{' and/or '.join(SCHEDULE_KEYS)}")
            unknown = sorted(set(sched) - set(SCHEDULE_KEYS))
            if unknown:
                raise ConfigError(f"study.schedules[{i}]: unknown key(s) {', '.join(unknown)}; "
                                  f"allowed: {', '.join(SCHEDULE_KEYS)}")
            try:
                variant = self._apply_schedule(sched)
            except ConfigError as err:
                raise ConfigError(f"study.schedules[{i}]: {err}") from err
            name = schedule_name(variant.schedule())
            if name == schedule_name(self.schedule()) or name in seen:
                raise ConfigError(f"study.schedules[{i}] repeats the schedule {name}")
            seen.add(name)

    def schedule(self) -> dict[str, str]:
        """The sweep's own IoU-branch settings."""
        return {"iou_schedule": self.train.iou_schedule, "iou_target": self.loss.iou_target}

    def _apply_schedule(self, sched: Mapping[str, Any]) -> "SweepConfig":
        train = {k: v for k, v in sched.items() if SCHEDULE_KEYS[k] == "train"}
        loss = {k: v for k, v in sched.items() if SCHEDULE_KEYS[k] == "loss"}
        return dataclasses.replace(
            self, train=build(TrainConfig, {**dataclasses.asdict(self.train), **train}, "train"),
            loss=build(LossConfig, {**dataclasses.asdict(self.loss), **loss}, "loss"))

    def with_schedule(self, sched: Mapping[str, Any] | str | None) -> "SweepConfig":
        """This config under a Table-2 schedule, given as its overrides or its name
        (`schedule_name`, a trial's ``variant``); itself for None."""
        if not sched:
            return self
        if isinstance(sched, str):
            for cand in self.study.schedules:
                variant = self._apply_schedule(cand)
                if schedule_name(variant.schedule()) == sched:
                    return variant
            raise ConfigError(f"variant {sched!r} is none of study.schedules")
        return self._apply_schedule(sched)

    def arms(self) -> list[Arm]:
        """The arms of the grid, crossed with N and seed: one per (mode, β) — times the
        pool fractions where the arm segments — plus random, plus one per baseline
        strategy (per β for `BETA_STRATEGIES`), plus one random arm per Table-2
        schedule."""
        s = self.study
        base = [Arm(m, float(b)) for m in s.modes for b in s.beta]
        base += [Arm(m, b) for m in s.strategies for b in (
            [float(x) for x in s.beta] if m in BETA_STRATEGIES else [None])]
        if s.random_baseline:
            base.insert(0, Arm("random", None))
        arms = [dataclasses.replace(arm, pool_fraction=f)
                for arm in base for f in self._fractions(arm)]
        arms += [Arm("random", None, None, schedule_name(self._apply_schedule(sched).schedule()))
                 for sched in s.schedules]
        return arms

    def _fractions(self, arm: Arm) -> list[float | None]:
        """The pool fractions an arm segments with ([None]: it does not segment)."""
        s = self.study
        segments = (s.segment and (not s.segment_modes or arm.mode in s.segment_modes)
                    and (not s.segment_betas or arm.beta is None
                         or float(arm.beta) in [float(b) for b in s.segment_betas]))
        return [float(f) for f in s.pool_fractions] if segments else [None]

    def n_trials(self) -> int:
        return len(self.arms()) * len(self.study.N) * len(self.study.seed)

    def trials(self) -> list["TrialConfig"]:
        """Every grid point, in a stable order."""
        return [TrialConfig(N=int(n), beta=arm.beta, seed=int(seed), mode=arm.mode,
                            n_init=self.study.n_init, pool_fraction=arm.pool_fraction,
                            variant=arm.variant)
                for seed in self.study.seed for n in self.study.N for arm in self.arms()]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the profile). ``study.rounds``
        counts only when set above 1, so a one-shot sweep keeps the fingerprint it had
        before rounds existed."""
        d = self.to_dict()
        d.pop("profile")
        if d["study"].get("rounds") == 1:
            d["study"].pop("rounds")
        return digest(d)

    def flat(self) -> dict[str, Any]:
        """``section.key`` → value for the method's settings (the sweep's MLflow params)."""
        out: dict[str, Any] = {"data.n_pool": self.data.n_pool, "data.n_test": self.data.n_test,
                               "data.n_additional": self.data.n_additional,
                               "data.data_seed": self.data.data_seed}
        out.update({f"data.{k}": v for k, v in dataclasses.asdict(self.data.synthetic).items()})
        for section in SECTIONS:
            for k, v in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{k}"] = v
        return out


@dataclass(frozen=True)
class TrialConfig:
    """One cell of the grid. `to_flat_dict` is at once its Tune config, its Parquet
    columns and its MLflow params (`from_flat_dict` reads it back)."""

    N: int
    beta: float | None
    seed: int
    mode: str
    n_init: int
    pool_fraction: float | None = None   # set when the trial trains a segmentation network
    variant: str | None = None           # a Table-2 schedule ("joint+identity"); None: the sweep's

    @property
    def key(self) -> str:
        beta = "none" if self.beta is None else f"{self.beta:.2f}"
        key = f"{self.mode}-b{beta}-N{self.N}-s{self.seed}"
        if self.pool_fraction is not None:
            key += f"-f{self.pool_fraction:.2f}"
        return key if self.variant is None else f"{key}-{self.variant}"

    def to_flat_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_flat_dict(cls, flat: Mapping[str, Any]) -> "TrialConfig":
        def opt(v: Any) -> float | None:
            return None if v is None or v != v else float(v)

        return cls(N=int(flat["N"]), beta=opt(flat.get("beta")), seed=int(flat["seed"]),
                   mode=str(flat["mode"]), n_init=int(flat["n_init"]),
                   pool_fraction=opt(flat.get("pool_fraction")),
                   variant=flat.get("variant") or None)


def schedule_name(sched: Mapping[str, Any]) -> str:
    """``joint+identity``: a Table-2 schedule as a name (trial keys, the variant column)."""
    return f"{sched['iou_schedule']}+{sched['iou_target']}"


def digest(obj: Any) -> str:
    """Short stable hash of a JSON-able object (content address of a stage)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _check_paths(data: DataConfig) -> None:
    for key, path in data.paths().items():
        if not path:
            raise ConfigError(f"data.{key} is required for data.kind={data.kind}")
        if not Path(path).exists():
            raise ConfigError(f"data.{key}={path} does not exist")
