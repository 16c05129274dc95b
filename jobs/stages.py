"""The stages of a trial as submitit jobs: small classes built from their typed spec
(`jobs.specs`) and folder, with ``__call__`` and ``checkpoint()``. Every task of a job
runs ``__call__``; DDP joins them; rank 0 writes.

A stage writes into its content-addressed folder (`jobs.specs.StageFolder`):
``metrics.jsonl`` (one line per epoch, streamed to Tune and MLflow by the trial),
``ckpt.pt`` (every epoch, atomic; a requeued job resumes from it), its outputs,
``result.json``, and ``DONE`` last.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

import submitit

from basis.models.rsis import ModelConfig
from hpc import atomic, distributed
from jobs.data import splits as data_splits
from jobs.specs import (
    AnnotateSpec,
    ControlSpec,
    InitSpec,
    LabelledSpec,
    PoolScoreSpec,
    PretrainSpec,
    PseudoSpec,
    Recipe,
    RoundScoreSpec,
    ScoreSpec,
    SegmentSpec,
    StageFolder,
    StageSpec,
)

log = logging.getLogger(__name__)


class MetricsFile:
    """Training hook: append each epoch's metrics as a JSON line (rank 0 only)."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path, self.stage = path, stage

    def before_train(self, state: Any) -> None: ...

    def after_epoch(self, state: Any, metrics: dict[str, float]) -> None:
        rec = {"stage": self.stage, "epoch": int(state.epoch), **metrics, "time": time.time()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def after_train(self, state: Any) -> None: ...


class Checkpointer:
    """Training hook: save the whole training state atomically after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def before_train(self, state: Any) -> None: ...

    def after_epoch(self, state: Any, metrics: dict[str, float]) -> None:
        atomic.torch_save(state.state_dict(), self.path)

    def after_train(self, state: Any) -> None: ...


S = TypeVar("S", bound=StageSpec)


class StageJob(Generic[S]):
    """Common frame of a stage: join the process group, run, write ``DONE``."""

    def __init__(self, spec: S, folder: StageFolder | str | Path,
                 inputs: dict[str, StageFolder] | None = None) -> None:
        """
        Args:
            spec: what to compute.
            folder: where (the spec's content-addressed folder).
            inputs: the folders of the stages it reads, by the spec's field name —
                resolved by the driver, never by the job, whose copy of the code may
                give another address.
        """
        self.spec = spec
        self.folder = folder if isinstance(folder, StageFolder) else StageFolder(Path(folder))
        self.inputs = dict(inputs or {})

    def input(self, name: str) -> StageFolder:
        """The folder of the input stage in the spec's field ``name``."""
        try:
            return self.inputs[name]
        except KeyError:
            raise ValueError(f"stage {self.folder.name}: its input {name!r} was not "
                             "given (build the job with `jobs.stages.job_for`)") from None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def stage_dir(self) -> Path:
        return self.folder.path

    @property
    def device(self) -> str:
        """Where this job's networks train and predict: its task's GPU when the job has
        one (`hpc.distributed.init` selected it by local rank), else the CPU."""
        import torch

        return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"

    def __call__(self) -> dict[str, Any]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        env = distributed.init()
        logging.getLogger().addFilter(distributed.RankFilter(env.rank))
        import torch

        # the CPUs Slurm gave each task (a local job: 1, as jobs run side by side)
        torch.set_num_threads(max(1, int(os.environ.get("SLURM_CPUS_PER_TASK", "1"))))
        try:
            result = _unmask_exit(self.run, env)
            if env.is_rank0:
                atomic.write_text(self.folder.result, json.dumps(result, indent=1))
                atomic.write_text(self.folder.done, time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            distributed.barrier()
            return result
        finally:
            distributed.shutdown()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """On preemption or timeout: resubmit the same stage; it resumes from ``ckpt.pt``."""
        return submitit.helpers.DelayedSubmission(type(self)(self.spec, self.folder,
                                                             self.inputs))

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared pieces -------------------------------------------------------------
    def datasets(self, recipe: Recipe) -> tuple[Any, Any]:
        """(pool, test) of the recipe's data."""
        got = data_splits(recipe.data)
        return got["pool"], got["test"]

    def additional(self, recipe: Recipe) -> Any:
        extra = data_splits(recipe.data)["additional"]
        if extra is None:
            raise ValueError("this sweep's data has no additional pool (data.n_additional)")
        return extra

    def train(self, env: distributed.DistEnv, recipe: Recipe, ids: list[int], pool: Any,
              model_cfg: ModelConfig | None = None) -> Any:
        """Train a fresh network (the recipe's, IoU-W-RSIS, unless ``model_cfg`` says
        otherwise) on the images ``ids`` of ``pool`` (resuming if a checkpoint of this
        stage exists) → the trained model, unwrapped."""
        import torch

        from basis.models.rsis import RSIS
        from basis.train import train

        torch.manual_seed(recipe.seed)
        model = RSIS(self.start_from(recipe, model_cfg or recipe.model))
        ckpt = self.folder.ckpt
        state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
        if state is not None:
            log.info("resuming %s from %s", self.folder.name, ckpt)
        hooks = [MetricsFile(self.folder.metrics, self.kind),
                 Checkpointer(ckpt)] if env.is_rank0 else []
        tcfg = dataclasses.replace(recipe.train, seed=recipe.seed)
        result = train(model, pool.subset(sorted(ids)), tcfg, recipe.loss,
                       hooks=hooks, state=state, progress=False, device=self.device)
        return result.model

    def start_from(self, recipe: Recipe, model_cfg: ModelConfig) -> ModelConfig:
        """The model config a fresh network is built from: ``encoder_weights: pretrain``
        becomes the pretrain stage's encoder file."""
        if recipe.pretrain is None:
            return model_cfg
        return dataclasses.replace(model_cfg,
                                   encoder_weights=str(self.input("pretrain").encoder))

    def evaluate(self, recipe: Recipe, model: Any, test: Any, keep: list[Any] | None = None
                 ) -> dict[str, float | None]:
        """AP@0.5 on the test split and the MAE of the image IoU score there.

        Args:
            model: the trained network.
            test: the test split.
            keep: if given, the test predictions (`ImagePrediction`s) are appended to
                it, so a caller can reuse them without predicting twice.
        """
        from basis.infer import predict
        from basis.metrics.ap import evaluate_ap
        from basis.metrics.iou import image_score_mae

        preds = predict(model, test, loss_cfg=recipe.loss, device=self.device)
        if keep is not None:
            keep.extend(preds)
        # void pixels leave a detection's union, as in RSIS's patched evaluation
        ap = evaluate_ap(test, preds, n_classes=model.cfg.n_classes, void_iou="exclude")
        if not model.cfg.iou_head:
            return {"ap50": float(ap["ap50"]), "mae": None}
        mae = image_score_mae([p.image_score for p in preds],
                              [p.image_iou_true or 0.0 for p in preds])
        return {"ap50": float(ap["ap50"]), "mae": float(mae)}

    def score_pool(self, recipe: Recipe, network: StageFolder, labelled: set[int]
                   ) -> dict[str, Any]:
        """Score the pool with the network of the stage ``network`` (trained under
        ``recipe``); write ``image_scores.parquet`` (``in_init``: the image is in
        ``labelled``, the network's training images) and ``features.npz`` → the result,
        whose ``network`` names the kind of stage that trained it (init or annotate)."""
        import numpy as np

        from basis.infer import predict

        pool, _ = self.datasets(recipe)
        model = self.load_model(network, recipe.model)
        preds = predict(model, pool, loss_cfg=recipe.loss, with_features=True,
                        device=self.device)
        rows = []
        for i, p in enumerate(preds):
            stats = pool.stats(i) if hasattr(pool, "stats") else pool[i]
            rows.append({"image_id": p.image_id, "seed": recipe.seed,
                         "score_pred": p.image_score, "iou_true": p.image_iou_true,
                         "n_objects": stats.n_objects,
                         "mean_object_area": stats.mean_object_area,
                         "in_init": p.image_id in labelled, **(p.extras or {})})
        _write_parquet(self.folder.image_scores, "image_scores", rows)
        with atomic.atomic_path(self.folder.features) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, image_id=np.asarray([p.image_id for p in preds], dtype=np.int64),
                     features=np.asarray([p.features for p in preds], dtype=np.float32))
        return {"n_images": len(rows), "network": network.name.split("-")[0]}

    def load_model(self, folder: StageFolder, model_cfg: ModelConfig) -> Any:
        """The final weights of another stage's network (an input of this one)."""
        import torch

        from basis.models.rsis import RSIS

        # the whole network's weights follow: no encoder file to start from
        model = RSIS(dataclasses.replace(model_cfg, encoder_weights=None))
        model.load_state_dict(torch.load(folder.model, map_location="cpu", weights_only=True))
        return model.eval()


def _unmask_exit(fn: Any, *args: Any) -> Any:
    """Run ``fn``; if a library turned a ``SystemExit`` (submitit's exit after it
    requeued the job) into another exception while cleaning up, re-raise the exit,
    so the job ends as preempted, not as failed."""
    try:
        return fn(*args)
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None:
            if isinstance(cause, SystemExit):
                raise cause from None
            cause = cause.__context__
        raise


class PretrainStage(StageJob[PretrainSpec]):
    """Per sweep: pretrain the encoder on the disjoint synthetic set; write
    ``encoder.pt`` (loadable as ``model.encoder_weights``)."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        import torch

        from basis.pretrain import pretrain_data, pretrain_encoder, save_encoder

        spec = self.spec
        data = pretrain_data(spec.synthetic, spec.pretrain)
        ckpt = self.folder.ckpt
        state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
        hooks = [MetricsFile(self.folder.metrics, self.kind),
                 Checkpointer(ckpt)] if env.is_rank0 else []
        model_cfg = ModelConfig(backbone=spec.backbone, n_classes=spec.synthetic.n_classes)
        result = pretrain_encoder(model_cfg, data, spec.pretrain, hooks=hooks, state=state,
                                  device=self.device)
        if not env.is_rank0:
            return {}
        atomic.torch_save(save_encoder(result), self.folder.encoder)
        return {"n_images": len(data), **{k: float(v) for k, v in result.metrics.items()}}


class InitStage(StageJob[InitSpec]):
    """Per seed: train the initial network on ``n_init`` random pool images."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        import numpy as np

        recipe = self.spec.recipe
        pool, test = self.datasets(recipe)
        rng = np.random.default_rng(recipe.seed)
        drawn = rng.choice(pool.ids, self.spec.n_init, replace=False)
        init_ids = sorted(int(i) for i in drawn)
        model = self.train(env, recipe, init_ids, pool)
        if not env.is_rank0:
            return {}
        atomic.torch_save(model.state_dict(), self.folder.model)
        return {"init_ids": init_ids, **self.evaluate(recipe, model, test)}


class ScoreStage(StageJob[ScoreSpec]):
    """Per seed: the initial network pseudo-annotates the pool and scores every image
    (Eq. 2), next to its oracle score, object count and object size (Fig. 5), its
    uncertainties (the acquisition baselines' columns) and — in ``features.npz`` — its
    pooled encoder features (the core-set baseline), all from one forward pass."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        if not env.is_rank0:
            return {}
        init = self.input("init")
        return self.score_pool(self.spec.init.recipe, init, set(init.read_result()["init_ids"]))


class RoundScoreStage(StageJob[RoundScoreSpec]):
    """``study.rounds`` > 1: a round's annotation network scores the pool for the next
    round, by the score stage's code; ``in_init`` marks its training images."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        if not env.is_rank0:
            return {}
        annotate = self.spec.annotate
        return self.score_pool(annotate.recipe, self.input("annotate"),
                               {int(i) for i in annotate.train_ids})


class AnnotateStage(StageJob[AnnotateSpec]):
    """Train a fresh annotation network on ``train_ids`` (initial ∪ selected), evaluate.

    Addressed by the ids, not by (N, β, mode): trials whose selections coincide share it.
    """

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        recipe = self.spec.recipe
        pool, test = self.datasets(recipe)
        ids = [int(i) for i in self.spec.train_ids]
        model = self.train(env, recipe, ids, pool)
        if not env.is_rank0:
            return {}
        atomic.torch_save(model.state_dict(), self.folder.model)
        preds: list[Any] = []
        metrics = self.evaluate(recipe, model, test, keep=preds)
        self.save_qualitative(test, preds)
        return {"n_train": len(ids), **metrics}

    def save_qualitative(self, test: Any, preds: list[Any]) -> None:
        """Fig. 7-style ``qualitative.png`` of the first test images; a failure to draw
        is logged, never raised (the picture is a by-product of the stage)."""
        try:
            from basis.viz import qualitative, save_qualitative

            save_qualitative(self.folder.qualitative, qualitative(test, preds))
        except Exception as err:  # any drawing error must not fail the stage
            log.warning("qualitative picture of %s not written: %r", self.stage_dir.name, err)


class PseudoStage(StageJob[PseudoSpec]):
    """The annotation network labels the additional pool from its IL+C labels."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        from basis.infer import predict

        if not env.is_rank0:
            return {}
        recipe = self.spec.annotate.recipe
        extra = self.additional(recipe)
        model = self.load_model(self.input("annotate"), recipe.model)
        preds = predict(model, extra, loss_cfg=recipe.loss, device=self.device)
        atomic.write_text(self.folder.pseudo,
                          json.dumps([dataclasses.asdict(p) for p in preds]))
        true = [p.image_iou_true for p in preds if p.image_iou_true is not None]
        return {"n_images": len(preds),
                "pseudo_iou": float(sum(true) / len(true)) if true else None}


class SegmentStage(StageJob[SegmentSpec]):
    """Train the segmentation network (plain RSIS) on strong ∪ pseudo-labelled images."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        from basis.data.pseudo import Concat, PseudoLabelled
        from basis.types import ImagePrediction

        recipe = self.spec.annotate.recipe
        pool, test = self.datasets(recipe)
        extra = self.additional(recipe)
        raw = json.loads(self.input("pseudo").pseudo.read_text())
        preds = [ImagePrediction(**p) for p in raw][: self.spec.n_pseudo]
        pseudo = PseudoLabelled(extra.subset([p.image_id for p in preds]), preds)
        # no object is dropped silently: what the empty-mask policy did is logged and kept
        log.info("%s: %s", self.folder.name, pseudo.summary())
        if env.is_rank0:
            atomic.write_text(self.folder.path / "pseudo_reasons.json",
                              json.dumps({str(k): v for k, v in pseudo.reasons.items()}))
        strong = pool.subset(sorted(int(i) for i in self.spec.annotate.train_ids))
        data = Concat([strong, pseudo])
        model_cfg = dataclasses.replace(recipe.model, weak=False, iou_head=False)
        model = self.train(env, recipe, list(range(len(data))), _Indexed(data), model_cfg)
        if not env.is_rank0:
            return {}
        counts = {f"pseudo_{k}": int(v) for k, v in pseudo.counts.items()}
        return {"n_strong": len(strong), "n_pseudo": len(pseudo), **counts,
                **self.evaluate(recipe, model, test)}


class ControlStage(StageJob[ControlSpec]):
    """Tables 5/7's control: plain RSIS on the strong images alone, evaluated like the
    segmentation network."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        recipe = self.spec.recipe
        pool, test = self.datasets(recipe)
        ids = [int(i) for i in self.spec.train_ids]
        model_cfg = dataclasses.replace(recipe.model, weak=False, iou_head=False)
        model = self.train(env, recipe, ids, pool, model_cfg)
        if not env.is_rank0:
            return {}
        return {"n_train": len(ids), **self.evaluate(recipe, model, test)}


class LabelledStage(StageJob[LabelledSpec]):
    """``basis select``: train the round's annotation network on every labelled image
    (resized to ``data.image_size``); write ``model.pt``."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        from basis.data.coco import COCOInstances
        from basis.data.transforms import eval_transform

        recipe = self.spec.recipe
        data = COCOInstances(str(recipe.data.coco_train),
                             transform=eval_transform(int(recipe.data.image_size)))
        model = self.train(env, recipe, list(data.ids), data)
        if not env.is_rank0:
            return {}
        atomic.torch_save(model.state_dict(), self.folder.model)
        return {"n_train": len(data), "n_classes": len(data.category_ids),
                "weak": bool(recipe.model.weak)}


class PoolScoreStage(StageJob[PoolScoreSpec]):
    """``basis select``: pseudo-annotate the user's pool and score each image (Eq. 2);
    write ``predictions.json`` (one `ImagePrediction` per image at the network's size,
    ``iou_true`` from the pool's own masks when it has any)."""

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        from basis.data.coco import COCOInstances
        from basis.data.labelling import WeakPool, read_pool
        from basis.infer import predict

        if not env.is_rank0:
            return {}
        recipe = self.spec.init.recipe
        size = int(recipe.data.image_size)
        init = self.input("init")
        train = COCOInstances(str(recipe.data.coco_train))
        label_of = {cid: k for k, cid in enumerate(train.category_ids, start=1)}
        pool = read_pool(self.spec.pool, _labelled_of(train), self.spec.image_root,
                         check_files=False)
        model = self.load_model(init, recipe.model)
        preds = predict(model, WeakPool(pool.images, size, label_of), loss_cfg=recipe.loss,
                        with_iou_true=False, device=self.device)
        if pool.has_annotations:
            self.oracle(preds, label_of, size)
        atomic.write_text(self.folder.path / "predictions.json",
                          json.dumps([dataclasses.asdict(p) for p in preds]))
        scores = [p.image_score for p in preds]
        return {"n_images": len(preds), "weak": bool(recipe.model.weak),
                "oracle": pool.has_annotations,
                "score_mean": float(sum(scores) / len(scores)) if scores else None}

    def oracle(self, preds: list[Any], label_of: dict[int, int], size: int) -> None:
        """Fill each prediction's ``iou_true`` from the pool file's masks, resized to the
        network's size, their classes in the network's labels."""
        import torch

        from basis.data.coco import COCOInstances
        from basis.data.pseudo import decode
        from basis.data.transforms import eval_transform
        from basis.metrics.iou import match_true_iou

        gt = COCOInstances(self.spec.pool, self.spec.image_root,
                           transform=eval_transform(size))
        for i, pred in enumerate(preds):
            s = gt[i]
            masks, labels = decode(pred, min_pixels=0)
            gt_labels = torch.tensor([label_of[gt.category_ids[int(c) - 1]]
                                      for c in s.labels.tolist()], dtype=torch.long)
            pred.iou_true = [float(x) for x in match_true_iou(
                masks, labels, s.masks, gt_labels, s.ignore)]


def _labelled_of(train: Any) -> Any:
    """The `basis.data.labelling.LabelledSet` a pool is checked against, from the
    training file (its categories are all the pool check reads)."""
    from basis.data.labelling import LabelledSet

    cats = sorted(train.coco.dataset["categories"], key=lambda c: c["id"])
    return LabelledSet(train.json_path, train.image_root, tuple(cats), len(train), 0, 0.0,
                       0.0, frozenset())


class _Indexed:
    """Adapter giving a dataset the ``subset(ids)`` of positions `StageJob.train` uses."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def subset(self, positions: list[int]) -> Any:
        return self.data


#: The job class of each stage kind.
JOBS: dict[type[StageSpec], type[StageJob[Any]]] = {
    PretrainSpec: PretrainStage, InitSpec: InitStage, ScoreSpec: ScoreStage,
    AnnotateSpec: AnnotateStage, PseudoSpec: PseudoStage, SegmentSpec: SegmentStage,
    ControlSpec: ControlStage, LabelledSpec: LabelledStage, PoolScoreSpec: PoolScoreStage,
    RoundScoreSpec: RoundScoreStage,
}


def job_for(spec: StageSpec, folder: StageFolder) -> StageJob[Any]:
    """The submitit job that computes ``spec`` into ``folder`` (`jobs.dag.JobFactory`),
    with the folders of its inputs resolved here, in the driver."""
    inputs = {name: folder.of(inp) for name, inp in spec.inputs().items()}
    return JOBS[type(spec)](spec, folder, inputs)


def _write_parquet(path: Path, table: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow.parquet as pq

    from analysis.schema import to_table

    with atomic.atomic_path(path) as tmp:
        pq.write_table(to_table(table, rows), tmp)
