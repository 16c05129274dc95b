"""Read the results of a sweep folder (or a copy of it) with pyarrow only."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from analysis.schema import PARTITIONS, TABLES


class ResultsError(RuntimeError):
    """The results folder is missing or holds a file that cannot be read."""


def read(sweep: str | Path, name: str) -> pd.DataFrame:
    """Every file of table ``name`` in ``SWEEP/results/`` as one DataFrame.

    Temporary files (``.*.tmp`` of a write in progress) are never read.
    """
    root = Path(sweep) / "results" / name
    if not root.is_dir():
        raise ResultsError(f"no {name} results under {root} (has the sweep written any?)")
    schema = TABLES[name]
    part = PARTITIONS[name]
    files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame({f.name: pd.Series(dtype=object) for f in schema})
    partitioning = None
    if part is not None:
        import pyarrow as pa

        partitioning = ds.partitioning(pa.schema([schema.field(part)]), flavor="hive")
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet",
                             partitioning=partitioning, partition_base_dir=str(root))
        table = dataset.to_table()
    except Exception as err:  # pyarrow raises several types for a corrupt file
        for f in files:
            try:
                ds.dataset(str(f), format="parquet").to_table()
            except Exception as inner:
                raise ResultsError(f"{f}: not a readable Parquet file ({inner})") from err
        raise ResultsError(f"{root}: {err}") from err
    return table.to_pandas()
