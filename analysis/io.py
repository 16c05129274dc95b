"""Read the results of a sweep folder (or a copy of it) with pyarrow only."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from analysis.schema import PARTITIONS, TABLES, SweepLayout


class ResultsError(RuntimeError):
    """The results folder is missing or holds a file that cannot be read."""


def read(sweep: str | Path, name: str) -> pd.DataFrame:
    """Every file of table ``name`` in ``SWEEP/results/`` as one DataFrame.

    Temporary files (``.*.tmp`` of a write in progress) are never read.
    """
    root = SweepLayout(Path(sweep)).table(name)
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
        # the contract's schema, not the first file's: files written before a column
        # was added read it as null instead of dropping it from every file
        dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema,
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


def read_optional(sweep: str | Path, name: str) -> pd.DataFrame | None:
    """Like `read`, but ``None`` when the sweep has no folder for table ``name``.

    ``image_scores`` falls back to the score stages' own files
    (``SWEEP/stages/score-*/image_scores.parquet``) when ``results/image_scores`` is absent:
    the initial networks' scores, not those of a later round's annotation network.
    """
    try:
        return read(sweep, name)
    except ResultsError:
        if not (SweepLayout(Path(sweep)).table(name)).exists() and name == "image_scores":
            return _stage_image_scores(Path(sweep))
        if (SweepLayout(Path(sweep)).table(name)).exists():
            raise
        return None


def _stage_image_scores(sweep: Path) -> pd.DataFrame | None:
    # only finished stages: a stage writes its files before its DONE marker
    files = sorted(p for p in sweep.glob("stages/*/image_scores.parquet")
                   if (p.parent / "DONE").exists() and not _round_scores(p.parent))
    if not files:
        return None
    frames = []
    for f in files:
        try:
            frames.append(ds.dataset(str(f), format="parquet").to_table().to_pandas())
        except Exception as err:
            raise ResultsError(f"{f}: not a readable Parquet file ({err})") from err
    return pd.concat(frames, ignore_index=True)


def _round_scores(stage: Path) -> bool:
    """Whether a stage folder holds a round's re-scoring of the pool by an annotation
    network (``study.rounds`` > 1; its result names the ``network``), not the initial
    network's scores."""
    import json

    try:
        return json.loads((stage / "result.json").read_text()).get("network") == "annotate"
    except (OSError, ValueError, AttributeError):
        return False


def _scalar(text: str) -> object:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~", ""):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_simple_yaml(text: str) -> dict:
    """The block-style YAML subset that ``yaml.safe_dump`` writes for a sweep config:
    nested mappings, lists of scalars (block ``- x`` or flow ``[x, y]``) and scalars.

    Enough to read a sweep's grid without a YAML library; anything fancier (anchors,
    multi-line strings) is not supported and may be read as a plain string.
    """
    root: dict = {}
    stack: list[tuple[int, dict | list]] = [(-1, root)]
    pending: tuple[int, dict, str] | None = None   # a "key:" whose value is on later lines
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        if pending is not None:
            p_indent, p_parent, p_key = pending
            pending = None
            if line.startswith("- ") or line == "-":
                p_parent[p_key] = []
                stack.append((p_indent, p_parent[p_key]))
            elif indent > p_indent:
                p_parent[p_key] = {}
                stack.append((p_indent, p_parent[p_key]))
            else:
                p_parent[p_key] = None
        while len(stack) > 1 and indent <= stack[-1][0] and not (
                isinstance(stack[-1][1], list) and line.startswith("-")
                and indent == stack[-1][0]):
            stack.pop()
        container = stack[-1][1]
        if line.startswith("-") and isinstance(container, list):
            container.append(_scalar(line[1:]))
            continue
        if ":" not in line or not isinstance(container, dict):
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().strip("'\""), value.strip()
        if not value:
            pending = (indent, container, key)
        elif value.startswith("[") and value.endswith("]"):
            inner = value[1:-1].strip()
            container[key] = [_scalar(v) for v in inner.split(",")] if inner else []
        elif value in ("{}",):
            container[key] = {}
        else:
            container[key] = _scalar(value)
    if pending is not None:
        pending[1][pending[2]] = None
    return root


def sweep_config(sweep: str | Path) -> tuple[str | None, dict]:
    """``SWEEP/config.yaml`` as (text, parsed dict); (None, {}) when absent."""
    path = SweepLayout(Path(sweep)).config
    if not path.is_file():
        return None, {}
    text = path.read_text()
    try:
        return text, parse_simple_yaml(text)
    except Exception:  # a config we cannot parse still goes into the report as text
        return text, {}


def sweep_meta(sweep: str | Path) -> dict:
    """``SWEEP/sweep.json`` (name, command, started, MLflow URI …); {} when absent."""
    import json

    path = SweepLayout(Path(sweep)).meta
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
