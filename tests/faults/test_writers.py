"""Concurrent writers and crashes mid-write leave a complete, readable results set."""
import multiprocessing as mp
import os

import pytest

from analysis.io import read
from hpc.atomic import atomic_path
from jobs import records

pytestmark = pytest.mark.faults


def _row(i):
    return {"trial": f"t{i}", "N": 40 + i, "beta": 0.3, "seed": i, "mode": "predicted",
            "n_init": 20, "status": "COMPLETED", "ap50": i / 100}


def _writer(args):
    sweep, i, barrier = args
    barrier.wait()                      # all 20 finish "at once"
    records.write(sweep, "trials", f"t{i}", [_row(i)])


def test_twenty_jobs_finishing_at_once(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(20)
    procs = [ctx.Process(target=_writer, args=((tmp_path, i, barrier),)) for i in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 20
    df = read(tmp_path, "trials").sort_values("seed")
    assert df["trial"].tolist() == [f"t{i}" for i in range(20)]
    assert df["ap50"].tolist() == [i / 100 for i in range(20)]
    assert not list(tmp_path.rglob("*.tmp"))


def _crash_mid_write(path):
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"PAR1 half a parquet file")
        os._exit(9)                     # killed between the write and the rename


def test_crash_between_write_and_rename_leaves_nothing_visible(tmp_path):
    records.write(tmp_path, "trials", "t0", [_row(0)])
    target = tmp_path / "results" / "trials" / "mode=predicted" / "t1.parquet"
    p = mp.get_context("fork").Process(target=_crash_mid_write, args=(target,))
    p.start()
    p.join(30)
    assert p.exitcode == 9
    assert not target.exists()
    leftovers = list(target.parent.glob(".t1.parquet.*.tmp"))
    assert leftovers, "the crash should have left its temporary file behind"
    df = read(tmp_path, "trials")       # the reader skips it: one complete row
    assert df["trial"].tolist() == ["t0"]
