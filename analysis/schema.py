"""The Parquet contract between the jobs that write results and the analysis that reads them.

Defined here, with pyarrow only, so the reader owns it and never imports the writer.
Layout under ``SWEEP/results/``: one folder per table, Hive-partitioned by ``mode``
(``trials/mode=predicted/<trial>.parquet``), one file per trial (or per stage for
``image_scores``), each written to a temporary name and renamed.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pyarrow as pa

#: One row per trial: the flat config (these keys and any extra config columns), its
#: outcome and where to look.
TRIALS = pa.schema([
    pa.field("trial", pa.string()),          # stable key: mode-beta-N-seed
    pa.field("N", pa.int64()),               # strongly annotated images in total
    pa.field("beta", pa.float64()),          # target IoU score; null for random
    pa.field("seed", pa.int64()),
    pa.field("mode", pa.string()),           # predicted | oracle | random, or a baseline of
                                             # study.strategies (lowest, entropy, coreset …)
                                             # (partition)
    pa.field("n_init", pa.int64()),
    pa.field("status", pa.string()),         # a `Status`: COMPLETED | FAILED | CANCELLED
    pa.field("error", pa.string()),
    pa.field("ap50", pa.float64()),          # AP@0.5 of the annotation network, [0, 1]
    pa.field("mae", pa.float64()),           # |predicted − true| image IoU score, [0, 1]
    pa.field("budget_s", pa.float64()),      # annotation cost, seconds
    pa.field("budget_days", pa.float64()),
    pa.field("wall_s", pa.float64()),
    pa.field("slurm_job_ids", pa.string()),  # comma separated, every stage the trial used
    pa.field("mlflow_run_id", pa.string()),
    pa.field("log_path", pa.string()),
    # Optional config/outcome columns for Tables 2 and 5–8 (null where a sweep has none):
    pa.field("iou_schedule", pa.string()),     # train.iou_schedule: joint | freeze (Table 2)
    pa.field("iou_target", pa.string()),       # loss.iou_target: sqrt | square | identity
    pa.field("variant", pa.string()),          # a Table-2 schedule trial ("joint+identity"):
                                               # null for the main study (Tables 3-8)
    pa.field("pool_fraction", pa.float64()),   # share of the additional pool pseudo-labelled:
                                               # 1.0 → Tables 5/6, 0.5 → Tables 7/8
    pa.field("seg_ap50", pa.float64()),        # AP@0.5 of the segmentation network, [0, 1]
    pa.field("seg_budget_s", pa.float64()),    # annotation cost of that configuration, s
    pa.field("seg_budget_days", pa.float64()),
    pa.field("ctl_ap50", pa.float64()),        # AP@0.5 of plain RSIS on the strong images
                                               # alone (Tables 5/7's control), [0, 1]
    pa.field("code", pa.string()),             # fingerprint of the code that ran the trial
])

#: One row per pool image of an init stage: what selection works from (Fig. 5).
IMAGE_SCORES = pa.schema([
    pa.field("image_id", pa.int64()),
    pa.field("seed", pa.int64()),
    pa.field("score_pred", pa.float64()),    # Eq. 2 over predicted IoUs
    pa.field("iou_true", pa.float64()),      # the oracle image score
    pa.field("n_objects", pa.int64()),
    pa.field("mean_object_area", pa.float64()),
    pa.field("in_init", pa.bool_()),
    # Uncertainties of the initial network (acquisition baselines; null in a file written
    # before they were computed): averaged over the image's emitted decoder steps
    pa.field("entropy", pa.float64()),           # class entropy, nats, [0, log C]
    pa.field("least_confidence", pa.float64()),  # 1 − max class probability, [0, 1 − 1/C]
    pa.field("mask_entropy", pa.float64()),      # binary entropy of σ(mask logit), [0, log 2]
])

#: ``basis select``: one row per image of a user's pool in a labelling round (its
#: ``image_scores.parquet``), not a sweep table.
SELECT_SCORES = pa.schema([
    pa.field("image_id", pa.int64()),        # the pool's own COCO image id
    pa.field("file_name", pa.string()),
    pa.field("round", pa.int64()),
    pa.field("score_pred", pa.float64()),    # Eq. 2 over predicted IoUs
    pa.field("iou_true", pa.float64()),      # oracle image IoU (null: the pool has no masks)
    pa.field("n_objects", pa.int64()),       # masks the network predicted
    pa.field("n_weak", pa.int64()),          # instances by the IL+C counts (null: none)
    pa.field("expected_s", pa.float64()),    # Table-1 seconds to label it with masks
    pa.field("labelled", pa.bool_()),        # labelled before this round (never selected)
    pa.field("selected", pa.bool_()),
    pa.field("rank", pa.int64()),            # 1 = first pick; null if not selected
])

#: One row per selected image of a trial.
SELECTIONS = pa.schema([
    pa.field("trial", pa.string()),
    pa.field("image_id", pa.int64()),
    pa.field("rank", pa.int64()),            # 0 = first pick; later rounds follow earlier ones
    pa.field("mode", pa.string()),
    pa.field("round", pa.int64()),           # the selection round, 1 … study.rounds (null:
                                             # written before rounds, i.e. round 1)
])

#: One row per selection round a trial finished (``study.rounds``; one row for the
#: one-shot selection): its annotation network's AP and its annotation budget so far.
ROUNDS = pa.schema([
    pa.field("trial", pa.string()),
    pa.field("mode", pa.string()),           # (partition)
    pa.field("N", pa.int64()),               # images labelled after the last round
    pa.field("beta", pa.float64()),
    pa.field("seed", pa.int64()),
    pa.field("n_init", pa.int64()),
    pa.field("pool_fraction", pa.float64()),
    pa.field("variant", pa.string()),
    pa.field("round", pa.int64()),           # 1 … rounds
    pa.field("rounds", pa.int64()),          # R of the sweep
    pa.field("n_selected", pa.int64()),      # N' of this round
    pa.field("n_labelled", pa.int64()),      # n_init + the images selected so far
    pa.field("ap50", pa.float64()),          # AP@0.5 of this round's annotation network
    pa.field("mae", pa.float64()),
    pa.field("budget_s", pa.float64()),      # annotation cost of the images labelled so
    pa.field("budget_days", pa.float64()),   # far (+ the pool's IL+C for score selections)
    pa.field("status", pa.string()),         # the trial's final `Status`
    pa.field("stage_dir", pa.string()),      # the round's annotate stage folder
    pa.field("code", pa.string()),
])

#: One row per epoch of every training stage a trial ran.
EPOCHS = pa.schema([
    pa.field("trial", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("epoch", pa.int64()),
    pa.field("metric", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("mode", pa.string()),
])

TABLES: dict[str, pa.Schema] = {
    "trials": TRIALS,
    "image_scores": IMAGE_SCORES,
    "selections": SELECTIONS,
    "epochs": EPOCHS,
    "rounds": ROUNDS,
}
#: Hive partition key per table (dropped from the file, recovered from the folder name).
PARTITIONS: dict[str, str | None] = {
    "trials": "mode", "image_scores": None, "selections": "mode", "epochs": "mode",
    "rounds": "mode",
}


def to_table(name: str, rows: list[dict]) -> pa.Table:
    """Rows → a table with the schema of ``name`` (missing columns become null).

    Raises:
        ValueError: a row holds a key the schema does not know.
    """
    schema = TABLES[name]
    known = set(schema.names)
    for row in rows:
        extra = set(row) - known
        if extra:
            raise ValueError(f"{name}: unknown column(s) {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=schema)


class Status(str, Enum):
    """A trial's outcome, as the ``status`` column holds it; ``mlflow`` is the same
    outcome in MLflow's words (a run ends FINISHED, FAILED or KILLED)."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    @property
    def mlflow(self) -> str:
        return {"COMPLETED": "FINISHED", "FAILED": "FAILED", "CANCELLED": "KILLED"}[self.value]


#: Version of a sweep folder's layout (stage addresses, record files). A folder written
#: by another version is refused with one line instead of being half reused.
#: 2: typed stage specs, addressed by their full config and the code's fingerprint;
#:    ``submissions.jsonl`` records in stage folders.
LAYOUT_VERSION = 2


@dataclass(frozen=True)
class SweepLayout:
    """The files of a sweep folder, named once for the writers (`jobs`) and the readers
    (`analysis`, `basis status`)."""

    root: Path

    @property
    def config(self) -> Path:
        """The sweep's full config (what a resume runs again)."""
        return self.root / "config.yaml"

    @property
    def meta(self) -> Path:
        """The sweep's record: name, fingerprint, MLflow ids, profile, layout version."""
        return self.root / "sweep.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def table(self, name: str) -> Path:
        """The folder of one Parquet table (``results/<name>``)."""
        return self.results / name

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    @property
    def tracking(self) -> Path:
        """Where trials buffer their MLflow events (`jobs.tracking.Buffer`)."""
        return self.root / "tracking"

    def trial_events(self, key: str) -> Path:
        return self.tracking / f"{key}.jsonl"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def driver_pid(self) -> Path:
        """The pid of a detached local driver (``basis sweep --detach``)."""
        return self.root / "driver.pid"

    @property
    def driver_job(self) -> Path:
        """The Slurm job id of a detached driver on a Slurm profile."""
        return self.root / "driver.job"

    @property
    def driver_log(self) -> Path:
        return self.root / "driver.log"
