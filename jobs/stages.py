"""The stages of a trial as submitit jobs: small classes with ``__call__`` and
``checkpoint()``. Every task of a job runs ``__call__``; DDP joins them; rank 0 writes.

A stage writes into its content-addressed folder: ``metrics.jsonl`` (one line per
epoch, streamed to Tune and MLflow by the trial), ``ckpt.pt`` (every epoch, atomic;
a requeued job resumes from it), its outputs, ``result.json``, and ``DONE`` last.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import submitit

from hpc import atomic, distributed
from jobs.config import build
from jobs.data import splits as data_splits

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


class StageJob:
    """Common frame of a stage: join the process group, run, write ``DONE``."""

    kind = "stage"

    def __init__(self, spec: dict[str, Any], stage_dir: str | Path) -> None:
        self.spec = spec
        self.stage_dir = Path(stage_dir)

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
                atomic.write_text(self.stage_dir / "result.json", json.dumps(result, indent=1))
                atomic.write_text(self.stage_dir / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            distributed.barrier()
            return result
        finally:
            distributed.shutdown()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """On preemption or timeout: resubmit the same stage; it resumes from ``ckpt.pt``."""
        return submitit.helpers.DelayedSubmission(type(self)(self.spec, self.stage_dir))

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared pieces -------------------------------------------------------------
    def datasets(self) -> tuple[Any, Any]:
        """(pool, test) of the stage's data spec."""
        got = data_splits(self.spec["data"])
        return got["pool"], got["test"]

    def additional(self) -> Any:
        extra = data_splits(self.spec["data"])["additional"]
        if extra is None:
            raise ValueError("this sweep's data has no additional pool (data.n_additional)")
        return extra

    def train(self, env: distributed.DistEnv, ids: list[int], pool: Any,
              model_cfg: dict[str, Any] | None = None) -> Any:
        """Train a fresh network (IoU-W-RSIS unless ``model_cfg`` says otherwise) on the
        images ``ids`` of ``pool`` (resuming if a checkpoint of this stage exists)
        → the trained model, unwrapped."""
        import torch

        from basis.models.rsis import RSIS
        from basis.train import train

        torch.manual_seed(int(self.spec["seed"]))
        model = RSIS(build("model", model_cfg or self.spec["model"]))
        ckpt = self.stage_dir / "ckpt.pt"
        state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
        if state is not None:
            log.info("resuming %s from %s", self.stage_dir.name, ckpt)
        hooks = [MetricsFile(self.stage_dir / "metrics.jsonl", self.kind),
                 Checkpointer(ckpt)] if env.is_rank0 else []
        tcfg = build("train", {**self.spec["train"], "seed": int(self.spec["seed"])})
        result = train(model, pool.subset(sorted(ids)), tcfg, build("loss", self.spec["loss"]),
                       hooks=hooks, state=state, progress=False)
        return result.model

    def evaluate(self, model: Any, test: Any, keep: list[Any] | None = None
                 ) -> dict[str, float]:
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

        preds = predict(model, test, loss_cfg=build("loss", self.spec["loss"]))
        if keep is not None:
            keep.extend(preds)
        # void pixels leave a detection's union, as in RSIS's patched evaluation
        ap = evaluate_ap(test, preds, n_classes=model.cfg.n_classes, void_iou="exclude")
        if not model.cfg.iou_head:
            return {"ap50": float(ap["ap50"]), "mae": None}
        mae = image_score_mae([p.image_score for p in preds],
                              [p.image_iou_true or 0.0 for p in preds])
        return {"ap50": float(ap["ap50"]), "mae": float(mae)}

    def load_model(self, stage_dir: str | Path, model_cfg: dict[str, Any]) -> Any:
        import torch

        from basis.models.rsis import RSIS

        model = RSIS(build("model", model_cfg))
        model.load_state_dict(torch.load(Path(stage_dir) / "model.pt", weights_only=True))
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


class InitStage(StageJob):
    """Per seed: train the initial network on ``n_init`` random pool images."""

    kind = "init"

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        import numpy as np

        pool, test = self.datasets()
        rng = np.random.default_rng(int(self.spec["seed"]))
        drawn = rng.choice(pool.ids, self.spec["n_init"], replace=False)
        init_ids = sorted(int(i) for i in drawn)
        model = self.train(env, init_ids, pool)
        if not env.is_rank0:
            return {}
        atomic.torch_save(model.state_dict(), self.stage_dir / "model.pt")
        return {"init_ids": init_ids, **self.evaluate(model, test)}


class ScoreStage(StageJob):
    """Per seed: the initial network pseudo-annotates the pool and scores every image
    (Eq. 2), next to its oracle score, object count and object size (Fig. 5)."""

    kind = "score"

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        from basis.infer import predict

        if not env.is_rank0:
            return {}
        pool, _ = self.datasets()
        init_dir = Path(self.spec["init_dir"])
        in_init = set(json.loads((init_dir / "result.json").read_text())["init_ids"])
        model = self.load_model(init_dir, self.spec["model"])
        preds = predict(model, pool, loss_cfg=build("loss", self.spec["loss"]))
        rows = []
        for i, p in enumerate(preds):
            stats = pool.stats(i) if hasattr(pool, "stats") else pool[i]
            rows.append({"image_id": p.image_id, "seed": int(self.spec["seed"]),
                         "score_pred": p.image_score, "iou_true": p.image_iou_true,
                         "n_objects": stats.n_objects,
                         "mean_object_area": stats.mean_object_area,
                         "in_init": p.image_id in in_init})
        _write_parquet(self.stage_dir / "image_scores.parquet", "image_scores", rows)
        return {"n_images": len(rows)}


class AnnotateStage(StageJob):
    """Train a fresh annotation network on ``train_ids`` (initial ∪ selected), evaluate.

    Addressed by the ids, not by (N, β, mode): trials whose selections coincide share it.
    """

    kind = "annotate"

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        pool, test = self.datasets()
        ids = [int(i) for i in self.spec["train_ids"]]
        model = self.train(env, ids, pool)
        if not env.is_rank0:
            return {}
        atomic.torch_save(model.state_dict(), self.stage_dir / "model.pt")
        preds: list[Any] = []
        metrics = self.evaluate(model, test, keep=preds)
        self.save_qualitative(test, preds)
        return {"n_train": len(ids), **metrics}

    def save_qualitative(self, test: Any, preds: list[Any]) -> None:
        """Fig. 7-style ``qualitative.png`` of the first test images; a failure to draw
        is logged, never raised (the picture is a by-product of the stage)."""
        try:
            from basis.viz import qualitative, save_qualitative

            save_qualitative(self.stage_dir / "qualitative.png", qualitative(test, preds))
        except Exception as err:  # any drawing error must not fail the stage
            log.warning("qualitative picture of %s not written: %r", self.stage_dir.name, err)


class PseudoStage(StageJob):
    """The annotation network labels the additional pool from its IL+C labels."""

    kind = "pseudo"

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        import dataclasses

        from basis.infer import predict

        if not env.is_rank0:
            return {}
        extra = self.additional()
        model = self.load_model(self.spec["annotate_dir"], self.spec["model"])
        preds = predict(model, extra, loss_cfg=build("loss", self.spec["loss"]))
        atomic.write_text(self.stage_dir / "pseudo.json",
                          json.dumps([dataclasses.asdict(p) for p in preds]))
        true = [p.image_iou_true for p in preds if p.image_iou_true is not None]
        return {"n_images": len(preds),
                "pseudo_iou": float(sum(true) / len(true)) if true else None}


class SegmentStage(StageJob):
    """Train the segmentation network (plain RSIS) on strong ∪ pseudo-labelled images."""

    kind = "segment"

    def run(self, env: distributed.DistEnv) -> dict[str, Any]:
        from basis.data.pseudo import Concat, PseudoLabelled
        from basis.types import ImagePrediction

        pool, test = self.datasets()
        extra = self.additional()
        raw = json.loads((Path(self.spec["pseudo_dir"]) / "pseudo.json").read_text())
        preds = [ImagePrediction(**p) for p in raw][: int(self.spec["n_pseudo"])]
        pseudo = PseudoLabelled(extra.subset([p.image_id for p in preds]), preds)
        strong = pool.subset(sorted(int(i) for i in self.spec["train_ids"]))
        data = Concat([strong, pseudo])
        model_cfg = {**self.spec["model"], "weak": False, "iou_head": False}
        model = self.train(env, list(range(len(data))), _Indexed(data), model_cfg)
        if not env.is_rank0:
            return {}
        return {"n_strong": len(strong), "n_pseudo": len(pseudo),
                **self.evaluate(model, test)}


class _Indexed:
    """Adapter giving a dataset the ``subset(ids)`` of positions `StageJob.train` uses."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def subset(self, positions: list[int]) -> Any:
        return self.data


def _write_parquet(path: Path, table: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow.parquet as pq

    from analysis.schema import to_table

    with atomic.atomic_path(path) as tmp:
        pq.write_table(to_table(table, rows), tmp)
