"""Parquet records of a sweep, written by the schema `analysis.schema` owns."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from analysis.schema import PARTITIONS, SweepLayout, to_table
from hpc.atomic import atomic_path
from jobs.config import TrialConfig
from jobs.events import TrialObserver, TrialOutcome

if TYPE_CHECKING:
    from jobs.dag import StageResult


def write(sweep_dir: str | Path, table: str, key: str, rows: list[dict]) -> Path:
    """Write ``rows`` as ``SWEEP/results/<table>/[<part>=<v>/]<key>.parquet``, atomically.

    The partition column (if the table has one) must hold one value across ``rows``;
    it goes into the folder name, not the file.
    """
    root = SweepLayout(Path(sweep_dir)).table(table)
    part = PARTITIONS[table]
    if part is not None:
        values = {r.get(part) for r in rows}
        if len(values) != 1:
            raise ValueError(f"{table}: rows of one file must share one {part}, got {values}")
        root = root / f"{part}={values.pop()}"
    data = to_table(table, rows)
    if part is not None:
        data = data.drop_columns([part])
    path = root / f"{key}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(data, tmp)
    return path


def exists(sweep_dir: str | Path, table: str, key: str) -> Path | None:
    """The file of ``key`` in ``table`` if one was written."""
    root = SweepLayout(Path(sweep_dir)).table(table)
    hits = [p for p in root.rglob(f"{key}.parquet")] if root.is_dir() else []
    return hits[0] if hits else None


class ParquetObserver(TrialObserver):
    """A trial's Parquet records: its selection when each round makes it (the trial's
    ``selections`` file, rewritten with every round so far), and at its end its epochs
    (every stage it ran), its rows in ``rounds`` and its row in ``trials``."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.stages: list[StageResult] = []
        self.selection: list[dict] = []

    def selected(self, trial: TrialConfig, selected: list[int], round_no: int = 1) -> None:
        start = len(self.selection)
        self.selection += [{"trial": trial.key, "image_id": i, "rank": start + r,
                            "mode": trial.mode, "round": round_no}
                           for r, i in enumerate(selected)]
        write(self.sweep_dir, "selections", trial.key, self.selection)

    def stage_finished(self, result: StageResult) -> None:
        self.stages.append(result)

    def trial_finished(self, outcome: TrialOutcome) -> None:
        from jobs.dag import epoch_values, read_metrics

        trial, rows = outcome.trial, []
        trained: dict[str, int] = {}    # kind → how many of its stages had epochs so far
        for st in self.stages:
            recs, _ = read_metrics(st.folder.metrics, 0)
            if not recs:
                continue
            kind = st.name.split("-")[0]          # the folder: <kind>-<address>
            trained[kind] = nth = trained.get(kind, 0) + 1
            suffix = "" if nth == 1 else f"-r{nth}"   # a later round's annotate: annotate-r2
            for rec in recs:
                rows += [{"trial": trial.key, "stage": f"{rec.get('stage', st.name)}{suffix}",
                          "epoch": int(rec.get("epoch", 0)), "metric": k, "value": v,
                          "mode": trial.mode} for k, v in epoch_values(rec).items()]
        if rows:
            write(self.sweep_dir, "epochs", trial.key, rows)
        if outcome.rounds:
            write(self.sweep_dir, "rounds", trial.key,
                  [{**r, "status": outcome.status.value} for r in outcome.rounds])
        write(self.sweep_dir, "trials", trial.key, [outcome.row])
