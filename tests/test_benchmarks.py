"""Every benchmark script runs at ``--tiny`` size and prints its ratio, so none can rot.

The numbers themselves are not checked: speed is measured by the scripts, as ratios
against a floor in the same process, never asserted in tests.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RATIO = re.compile(r"^ratio \S+ = [0-9.]+(e[+-]?\d+)?\b", re.MULTILINE)


def run_script(name: str, *args: str, timeout: int = 600) -> str:
    cmd = [sys.executable, str(BENCH / name), "--tiny", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, (f"{cmd} exited {out.returncode}:\n{out.stdout[-3000:]}\n"
                                 f"{out.stderr[-3000:]}")
    assert out.stdout.startswith("machine: cpus="), out.stdout[:500]
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bench_step.py", "bench_eval.py", "bench_scoring.py",
                                  "bench_stage_reuse.py"])
def test_benchmark_prints_a_ratio(name):
    # bench_step also takes its CUDA variants: they run on a GPU, and skip with a line here
    extra = ("--cuda-variants",) if name == "bench_step.py" else ()
    out = run_script(name, *extra)
    assert RATIO.search(out), out
    if extra:
        import torch

        assert torch.cuda.is_available() or "cuda-variants: skipped, no CUDA device" in out, out


@pytest.mark.slow
@pytest.mark.slurm
def test_sweep_overhead_benchmark_on_local_slurm(slurm_cluster):
    out = run_script("bench_sweep_overhead.py", timeout=900)
    assert "ratio sweep_vs_bare_submitit = " in out, out
    assert re.search(r"= -?[0-9.]+ s per job", out), out


@pytest.mark.slow
@pytest.mark.slurm
def test_throughput_benchmark_on_local_slurm(slurm_cluster):
    out = run_script("bench_throughput.py", timeout=900)
    assert "ratio study_throughput_local-slurm = " in out, out
    assert re.search(r"\d+ jobs x \d+ task\(s\) x \d+ thread\(s\): +[0-9.]+ img/s", out), out
