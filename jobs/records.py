"""Parquet records of a sweep, written by the schema `analysis.schema` owns."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from analysis.schema import PARTITIONS, to_table
from hpc.atomic import atomic_path


def write(sweep_dir: str | Path, table: str, key: str, rows: list[dict]) -> Path:
    """Write ``rows`` as ``SWEEP/results/<table>/[<part>=<v>/]<key>.parquet``, atomically.

    The partition column (if the table has one) must hold one value across ``rows``;
    it goes into the folder name, not the file.
    """
    root = Path(sweep_dir) / "results" / table
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
    root = Path(sweep_dir) / "results" / table
    hits = [p for p in root.rglob(f"{key}.parquet")] if root.is_dir() else []
    return hits[0] if hits else None
