"""Shared fixtures. Slurm-marked tests need the local cluster (slurm/local/start.sh).

Under ``BASIS_REQUIRE_SLURM=1`` (CI) a missing cluster fails those tests instead of
skipping them, so a green run always means Slurm was exercised.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _slurm_answers() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed (run slurm/local/install.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except subprocess.TimeoutExpired:
        return False, "sinfo timed out"
    states = out.stdout.split()
    if out.returncode != 0 or not states:
        return False, f"sinfo failed: {out.stderr.strip() or 'no nodes'} (run slurm/local/start.sh)"
    if not any(s.startswith(("idle", "mixed", "alloc")) for s in states):
        return False, f"no usable node, states: {states}"
    return True, ""


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (or fail, under BASIS_REQUIRE_SLURM=1) unless a Slurm cluster answers."""
    ok, why = _slurm_answers()
    if not ok:
        if os.environ.get("BASIS_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required (BASIS_REQUIRE_SLURM=1) but {why}")
        pytest.skip(why)
