"""Typed stage specs: one frozen dataclass per stage kind.

A spec owns its kind, its inputs (other specs), its content address and its folder:
``SWEEP/stages/<kind>-<address>/``. The address hashes the spec's whole config
(`dataclasses.asdict`, inputs included) and the fingerprint of the code that computes
stages (`code_fingerprint`), so a code change never silently reuses an old result.
Specs hold `basis`'s own config dataclasses, never mappings, and pickle into the
submitit job that computes them.

Adding a stage kind takes: a spec here (its fields, ``kind`` and `inputs`), a job class
in `jobs.stages` (its ``run``) registered in `jobs.stages.JOBS`, and a line in the
trial (`jobs.trial`) that asks for it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from analysis.schema import SweepLayout
from basis.data.synthetic import SyntheticConfig
from basis.losses import LossConfig
from basis.models.rsis import ModelConfig
from basis.pretrain import PretrainConfig
from basis.train import TrainConfig
from jobs.config import DataConfig, digest

ROOT = Path(__file__).resolve().parent.parent
#: The sources whose change changes what a stage computes: the method and the stages.
CODE = ("basis", "jobs/stages.py", "jobs/specs.py", "jobs/data.py", "hpc/distributed.py")


_PINNED: list[str] = []


def pin_code_fingerprint(value: str) -> None:
    """Address every stage of this process with ``value``: a sweep's driver measures
    the code once and its trials use that, so an edit while a sweep runs cannot split
    it between two addresses of the same stage."""
    _PINNED[:] = [value]


def code_fingerprint() -> str:
    """Hash of the source that computes stages (`CODE`): 12 hex digits, the same on
    every node that runs this checkout (or the value a driver pinned)."""
    return _PINNED[0] if _PINNED else _measure_code()


@functools.lru_cache(maxsize=1)
def _measure_code() -> str:
    h = hashlib.sha256()
    for entry in CODE:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class StageFolder:
    """The files of one stage's folder, named once for `jobs.dag` and `jobs.stages`."""

    path: Path

    DONE: ClassVar[str] = "DONE"
    RESULT: ClassVar[str] = "result.json"
    METRICS: ClassVar[str] = "metrics.jsonl"
    SUBMISSIONS: ClassVar[str] = "submissions.jsonl"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def done(self) -> Path:
        """Written last, atomically: the stage is complete."""
        return self.path / self.DONE

    @property
    def result(self) -> Path:
        return self.path / self.RESULT

    @property
    def metrics(self) -> Path:
        """One JSON line per epoch, streamed to Tune and MLflow while the job runs."""
        return self.path / self.METRICS

    @property
    def submissions(self) -> Path:
        """One JSON line per job submitted for the stage (`jobs.dag.Submission`)."""
        return self.path / self.SUBMISSIONS

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def ckpt(self) -> Path:
        """The whole training state, saved atomically every epoch (resume)."""
        return self.path / "ckpt.pt"

    @property
    def model(self) -> Path:
        """The final weights."""
        return self.path / "model.pt"

    @property
    def encoder(self) -> Path:
        """A pretrain stage's encoder weights (`basis.pretrain.save_encoder`)."""
        return self.path / "encoder.pt"

    @property
    def image_scores(self) -> Path:
        return self.path / "image_scores.parquet"

    @property
    def features(self) -> Path:
        """A score stage's pool features for the core-set baseline: ``image_id`` (P,)
        int64 and ``features`` (P, F) float32, the initial network's encoder output
        global-average pooled (`basis.infer.predict`, ``with_features``)."""
        return self.path / "features.npz"

    @property
    def pseudo(self) -> Path:
        return self.path / "pseudo.json"

    @property
    def qualitative(self) -> Path:
        return self.path / "qualitative.png"

    @property
    def lock(self) -> Path:
        return self.path.parent / f"{self.path.name}.lock"

    def is_done(self) -> bool:
        return self.done.exists()

    def read_result(self) -> dict[str, Any]:
        return json.loads(self.result.read_text())

    def of(self, spec: "StageSpec") -> "StageFolder":
        """The folder of another stage of the same sweep (an input of this one)."""
        return _locate(self.path.parent, spec)

    def read_code(self) -> str | None:
        """The code fingerprint the stage was computed with (None: not recorded)."""
        try:
            return json.loads(self.config.read_text()).get("code")
        except (OSError, ValueError):
            return None


def content_key(spec_dict: dict[str, Any]) -> str:
    """A stage's address without the code: equal for the same spec under any code
    (``config.json`` minus its ``code``, or `StageSpec.to_dict`)."""
    return digest({k: v for k, v in spec_dict.items() if k != "code"})


class StageIndex:
    """The DONE stages of a sweep folder by `content_key`: where a stage computed by
    other code than this one lives (a *stale* stage)."""

    def __init__(self, stages_dir: Path) -> None:
        self.stages_dir = Path(stages_dir)
        self.done: dict[str, list[StageFolder]] = {}
        for config in sorted(self.stages_dir.glob("*/config.json")):
            folder = StageFolder(config.parent)
            if not folder.is_done():
                continue
            try:
                key = content_key(json.loads(config.read_text()))
            except ValueError:
                continue
            self.done.setdefault(key, []).append(folder)

    def stale(self, spec: "StageSpec") -> StageFolder | None:
        """A DONE folder of ``spec`` computed by other code, when its own is not done."""
        if (self.stages_dir / spec.dirname / StageFolder.DONE).exists():
            return None
        hits = [f for f in self.done.get(content_key(spec.to_dict()), [])
                if f.name != spec.dirname]
        return hits[-1] if hits else None


#: Sweeps (their stages folders) whose stale stages this process reuses (--reuse-stale).
_REUSE: dict[Path, StageIndex] = {}


def reuse_stale(sweep_dir: str | Path) -> StageIndex:
    """Make this process resolve a stage that is not done under the current code to a
    DONE folder of the same spec computed by other code, if the sweep has one (``basis
    sweep --resume --reuse-stale``) → the index it uses."""
    stages = SweepLayout(Path(sweep_dir)).stages.resolve()
    _REUSE[stages] = StageIndex(stages)
    return _REUSE[stages]


def _locate(stages_dir: Path, spec: "StageSpec") -> StageFolder:
    own = StageFolder(stages_dir / spec.dirname)
    index = _REUSE.get(stages_dir.resolve()) if _REUSE else None
    if index is not None:
        return index.stale(spec) or own
    return own


@dataclass(frozen=True)
class StageSpec:
    """Base of the stage specs: subclasses are frozen dataclasses with a ``kind``."""

    kind: ClassVar[str] = "stage"

    def inputs(self) -> dict[str, "StageSpec"]:
        """The stages this one reads, by name (their folders must be DONE first): its
        spec fields, and the pretrain stage of the recipe it trains with."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if isinstance(getattr(self, f.name), StageSpec)}
        recipe = getattr(self, "recipe", None)
        if isinstance(recipe, Recipe) and recipe.pretrain is not None:
            out["pretrain"] = recipe.pretrain
        return out

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (``config.json``; what the address hashes)."""
        return json.loads(json.dumps({"kind": self.kind, **dataclasses.asdict(self)},
                                     default=str))

    @property
    def address(self) -> str:
        return digest({"spec": self.to_dict(), "code": code_fingerprint()})

    @property
    def dirname(self) -> str:
        return f"{self.kind}-{self.address}"

    def folder(self, sweep_dir: str | Path) -> StageFolder:
        """Its folder in the sweep (or, under `reuse_stale`, a stale one of the same
        spec that is done)."""
        return _locate(SweepLayout(Path(sweep_dir)).stages, self)

    def flat(self) -> dict[str, Any]:
        """The spec as MLflow params: its address and the code's fingerprint, nested keys
        joined by '.', an input stage by its folder name, long id lists by their count."""
        out: dict[str, Any] = {"address": self.address, "code": code_fingerprint()}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StageSpec):
                out[f.name] = value.dirname
            else:
                out.update(_flatten(f.name, value))
        return out


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return {prefix: f"<{len(value)} ids>"}
    return {prefix: value}


@dataclass(frozen=True)
class PretrainSpec(StageSpec):
    """Per sweep: the encoder pretrained on a large synthetic set disjoint from the
    study's data (`basis.pretrain`), the stand-in for ImageNet weights. Shared by every
    seed and trial whose config has ``model.encoder_weights: pretrain``."""

    kind: ClassVar[str] = "pretrain"
    pretrain: PretrainConfig
    synthetic: SyntheticConfig       # the study's image size, generator and classes
    backbone: str


@dataclass(frozen=True)
class Recipe:
    """How a network of a trial is trained: its data, model, training, loss and seed
    (``train.seed`` is the trial's seed), and the pretrain stage its encoder starts
    from (None: ``model.encoder_weights`` as given, a path or random)."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    loss: LossConfig
    seed: int
    pretrain: PretrainSpec | None = None


@dataclass(frozen=True)
class InitSpec(StageSpec):
    """Per seed: the initial network, trained on ``n_init`` random pool images."""

    kind: ClassVar[str] = "init"
    recipe: Recipe
    n_init: int


@dataclass(frozen=True)
class ScoreSpec(StageSpec):
    """Per seed: the initial network's image scores of the pool (Eq. 2) and the oracle's."""

    kind: ClassVar[str] = "score"
    init: InitSpec


@dataclass(frozen=True)
class AnnotateSpec(StageSpec):
    """An annotation network trained on ``train_ids`` (initial ∪ selected); addressed by
    the ids, not by (N, β, mode), so trials whose selections coincide share it."""

    kind: ClassVar[str] = "annotate"
    recipe: Recipe
    train_ids: tuple[int, ...]


@dataclass(frozen=True)
class RoundScoreSpec(StageSpec):
    """``study.rounds`` > 1: a round's annotation network scores the pool for the next
    round, as the score stage does for round 1 (Eq. 2, oracle, uncertainties, pooled
    features); ``in_init`` of its ``image_scores.parquet`` marks the network's training
    images (``annotate.train_ids``, labelled before the next round). Its kind is
    ``score``: the same work, so the profile's ``score`` resources apply."""

    kind: ClassVar[str] = "score"
    annotate: AnnotateSpec


@dataclass(frozen=True)
class PseudoSpec(StageSpec):
    """The annotation network's pseudo-labels of the additional pool."""

    kind: ClassVar[str] = "pseudo"
    annotate: AnnotateSpec


@dataclass(frozen=True)
class SegmentSpec(StageSpec):
    """The segmentation network (plain RSIS) on the strong images ∪ the first
    ``n_pseudo`` pseudo-labelled images."""

    kind: ClassVar[str] = "segment"
    pseudo: PseudoSpec
    n_pseudo: int

    @property
    def annotate(self) -> AnnotateSpec:
        return self.pseudo.annotate

    @property
    def recipe(self) -> Recipe:
        """The annotation network's recipe, which a fresh segmentation network trains
        with (so its pretrain stage is an input of this one)."""
        return self.pseudo.annotate.recipe


@dataclass(frozen=True)
class ControlSpec(StageSpec):
    """Tables 5/7's control: plain RSIS trained on the strong images ``train_ids``
    alone (the same N and selection as the segmentation network, no pseudo-labels)."""

    kind: ClassVar[str] = "control"
    recipe: Recipe
    train_ids: tuple[int, ...]


@dataclass(frozen=True)
class LabelledSpec(StageSpec):
    """``basis select``: a labelling round's annotation network, trained on every image
    labelled so far — the COCO file ``recipe.data.coco_train`` the command writes, whose
    content digest is ``labels`` (the address follows the labels, not the file name).
    A sweep's init stage on the user's own data: the profile's ``init`` resources."""

    kind: ClassVar[str] = "init"
    recipe: Recipe
    labels: str


@dataclass(frozen=True)
class PoolScoreSpec(StageSpec):
    """``basis select``: the round's network pseudo-annotates the user's pool — given
    its IL+C counts (W-RSIS) or not (RSIS) — and scores every image (Eq. 2), with the
    oracle image IoU where the pool file carries masks (never shown to the network)."""

    kind: ClassVar[str] = "score"
    init: LabelledSpec
    pool: str           # the pool's COCO JSON
    image_root: str     # the folder of its images
    digest: str         # of the pool file's content
