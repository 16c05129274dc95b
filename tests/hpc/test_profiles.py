"""Cluster profiles: loading, validation, per-stage resources and the sbatch they produce.

The sbatch script submitit generates for every shipped Slurm profile (and for every
``stages:`` override in it) is compared, line by line, with a stored reference in
``tests/hpc/reference/<profile>.sbatch`` / ``<profile>.<stage>.sbatch``, as submitit's own
``slurm/test_slurm.py`` does. Volatile parts are normalised first: the submitit folder
becomes ``{FOLDER}``, the Python executable ``{PYTHON}`` and the repository root
``{REPO}``. After an intended change (a profile edit, a new profile, a submitit upgrade)
regenerate the references and review the diff before committing it::

    BASIS_UPDATE_REFERENCE=1 .venv/bin/python -m pytest tests/hpc/test_profiles.py -q
    git diff tests/hpc/reference/
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from pathlib import Path

import pytest

from hpc.profiles import (PROFILES_DIR, STAGE_FIELDS, STAGE_KINDS, ClusterProfile,
                          ProfileError, make_executor)

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
UPDATE = os.environ.get("BASIS_UPDATE_REFERENCE") == "1"


@pytest.fixture(autouse=True)
def _srun_on_path(tmp_path_factory, monkeypatch):
    """submitit's SlurmExecutor refuses to start without ``srun`` on PATH; scripts are only
    generated here, never submitted, so a stub that fails if ever run stands in for it."""
    bin_dir = tmp_path_factory.getbasetemp() / "fake-slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "srun"
    stub.write_text("#!/bin/sh\necho 'stub srun from tests/hpc/test_profiles.py' >&2\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def _shipped() -> list[ClusterProfile]:
    return [ClusterProfile.load(p) for p in sorted(PROFILES_DIR.glob("*.yaml"))]


def _cases() -> list[tuple[str, str | None]]:
    """(profile, stage) for every Slurm profile and every stage override it sets."""
    cases: list[tuple[str, str | None]] = []
    for profile in _shipped():
        if profile.executor == "slurm":
            cases.append((profile.name, None))
            cases += [(profile.name, kind) for kind in profile.stages]
    return cases


def _reference_path(profile: str, stage: str | None) -> Path:
    return REFERENCE_DIR / (f"{profile}.{stage}.sbatch" if stage else f"{profile}.sbatch")


def sbatch_text(profile: ClusterProfile, folder: Path, stage: str | None = None) -> str:
    """The sbatch script submitit would submit for ``profile``, volatile parts normalised."""
    ex = make_executor(profile, folder, name=f"basis-ref-{stage or 'job'}", stage=stage)
    slurm = ex._executor
    text = slurm._make_submission_file_text(slurm._submitit_command_str, "uid")
    replacements = {str(slurm.folder): "{FOLDER}", slurm.python: "{PYTHON}",
                    shlex.quote(sys.executable): "{PYTHON}", sys.executable: "{PYTHON}",
                    str(PROFILES_DIR.parent.parent): "{REPO}"}
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


def _differences(text: str, recorded: str) -> list[str]:
    new, old = text.splitlines(), recorded.splitlines()
    changes = [f"line {k + 1}: {b!r} -> {a!r}" for k, (a, b) in enumerate(zip(new, old)) if a != b]
    if len(new) != len(old):
        changes.append(f"{len(old)} lines recorded, {len(new)} generated")
    return changes


@pytest.mark.parametrize("profile_name,stage", _cases())
def test_sbatch_matches_the_reference(tmp_path, profile_name, stage):
    text = sbatch_text(ClusterProfile.load(profile_name), tmp_path / "submitit", stage)
    assert "{FOLDER}" in text and "{PYTHON}" in text and str(tmp_path) not in text
    ref = _reference_path(profile_name, stage)
    if UPDATE:
        REFERENCE_DIR.mkdir(exist_ok=True)
        ref.write_text(text)
    assert ref.is_file(), f"{ref} missing: run with BASIS_UPDATE_REFERENCE=1 to create it"
    changes = _differences(text, ref.read_text())
    assert not changes, "\n".join([f"{ref.name} differs from the generated sbatch:", *changes,
                                   "if intended: BASIS_UPDATE_REFERENCE=1 (see module doc)"])


def test_no_stale_reference_files():
    expected = {_reference_path(p, s).name for p, s in _cases()}
    assert {p.name for p in REFERENCE_DIR.glob("*.sbatch")} == expected


def test_reference_pins_the_resources():
    """Spot-check the stored references themselves, so a wrong regeneration is noticed."""
    base = _reference_path("example-gpu", None).read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=my_project",
                 "#SBATCH --qos=normal", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=240", "#SBATCH --job-name=basis-ref-job",
                 "module load cuda/12.4", "export BASIS_COLLECTIVE_TIMEOUT_S=600",
                 "--kill-on-bad-exit=1", "{FOLDER}", "{PYTHON} -u -m submitit.core._submit"):
        assert line in base, line
    score = _reference_path("example-gpu", "score").read_text()
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --mem=32GB", "#SBATCH --time=60", "#SBATCH --partition=gpu"):
        assert line in score, line


@pytest.mark.parametrize("change", [
    {"cpus_per_task": 9}, {"partition": "gpu-long"}, {"timeout_min": 241},
    {"gpus_per_node": 8}, {"setup": ("module load cuda/12.5",)}, {"collective_timeout_s": 60},
])
def test_a_profile_change_breaks_the_comparison(tmp_path, change):
    gpu = ClusterProfile.load("example-gpu")
    recorded = _reference_path("example-gpu", None).read_text()
    assert _differences(sbatch_text(gpu, tmp_path / "a"), recorded) == []
    mutated = sbatch_text(dataclasses.replace(gpu, **change), tmp_path / "b")
    assert len(_differences(mutated, recorded)) >= 1


def test_a_stage_override_change_breaks_the_comparison(tmp_path):
    gpu = ClusterProfile.load("example-gpu")
    recorded = _reference_path("example-gpu", "score").read_text()
    stages = {**gpu.stages, "score": {**gpu.stages["score"], "mem_gb": 33}}
    mutated = sbatch_text(dataclasses.replace(gpu, stages=stages), tmp_path, "score")
    changes = _differences(mutated, recorded)
    assert len(changes) == 1 and "'#SBATCH --mem=32GB' -> '#SBATCH --mem=33GB'" in changes[0]
    # the base profile's script is not a stage's script
    assert _differences(sbatch_text(gpu, tmp_path, None), recorded)


def test_shipped_profiles_load():
    names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    assert {"local", "local-slurm", "example-gpu"} <= set(names)
    for name in names:
        profile = ClusterProfile.load(name)
        assert profile.name == name
    gpu = ClusterProfile.load("example-gpu")
    assert gpu.gpus_per_node == gpu.tasks_per_node == 4 and gpu.partition == "gpu"


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ProfileError, match="local-slurm"):
        ClusterProfile.load("nope")


@pytest.mark.parametrize("body,field", [
    ("executor: pbs\n", "executor"),
    ("tasks_per_node: 0\n", "tasks_per_node"),
    ("gpus_per_node: 2\ntasks_per_node: 4\n", "tasks_per_node"),
    ("partition: \"gpu\\n#SBATCH --wrap=x\"\n", "partition"),
    ("account: \"a;rm -rf /\"\n", "account"),
    ("partitoin: gpu\n", "partitoin"),
    ("retries: -1\n", "retries"),
    ("retries: true\n", "retries"),
    ("job_arrays: 1\n", "job_arrays"),
    ("tracking_uri: ftp://x\n", "tracking_uri"),
    ("tracking_uri: \"http://x\\n#SBATCH\"\n", "tracking_uri"),
    ("mem_gb: 0\n", "mem_gb"),
    ("stages: [score]\n", "stages"),
    ("stages:\n  scoring: {gpus_per_node: 1}\n", "stages.scoring: unknown stage kind"),
    ("stages:\n  score: {gpus: 1}\n", r"stages.score: unknown key\(s\) gpus"),
    ("stages:\n  score: {name: x}\n", r"stages.score: unknown key\(s\) name"),
    ("stages:\n  score: {setup: [x]}\n", r"stages.score: unknown key\(s\) setup"),
    ("stages:\n  score: 1\n", "stages.score=1"),
    ("stages:\n  init: {cpus_per_task: 0}\n", "stages.init: cpus_per_task=0"),
    ("stages:\n  init: {mem_gb: -1}\n", "stages.init: mem_gb=-1"),
    ("gpus_per_node: 4\ntasks_per_node: 4\nstages:\n  score: {gpus_per_node: 1}\n",
     "stages.score: tasks_per_node=4 > gpus_per_node=1"),
    ("stages:\n  segment: {partition: \"gpu\\n#SBATCH --wrap=x\"}\n",
     "stages.segment.*partition"),
])
def test_bad_profiles_are_refused(tmp_path, body, field):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ProfileError, match=field) as err:
        ClusterProfile.load(path)
    message = str(err.value)                 # one line, naming the file
    assert message.startswith(f"{path}: ") and "\n" not in message, message


def test_for_stage_applies_only_that_stage(tmp_path):
    gpu = ClusterProfile.load("example-gpu")
    assert set(gpu.stages) <= set(STAGE_KINDS)
    score = gpu.for_stage("score")
    assert (score.gpus_per_node, score.tasks_per_node, score.mem_gb, score.timeout_min) == \
        (1, 1, 32, 60)
    assert score.name == gpu.name and score.partition == gpu.partition == "gpu"
    assert score.retries == gpu.retries and score.setup == gpu.setup and score.stages == {}
    assert gpu.for_stage("annotate").timeout_min == 480
    assert gpu.for_stage("init") is gpu                      # no override: itself
    assert gpu.gpus_per_node == 4                            # the base is untouched
    with pytest.raises(ProfileError, match="stage kind 'scoring'"):
        gpu.for_stage("scoring")
    local = ClusterProfile.load("local")
    assert all(local.for_stage(kind) is local for kind in STAGE_KINDS)
    # dataclasses.replace (as jobs/ does) keeps the stages and re-validates them
    assert dataclasses.replace(gpu, retries=3).for_stage("score").retries == 3
    with pytest.raises(ProfileError, match="stages.score: tasks_per_node"):
        dataclasses.replace(gpu, stages={"score": {"gpus_per_node": 1, "tasks_per_node": 2}})
    assert set(STAGE_FIELDS) <= {f.name for f in dataclasses.fields(ClusterProfile)}


def test_make_executor_stage_parameters(tmp_path):
    gpu = ClusterProfile.load("example-gpu")
    params = make_executor(gpu, tmp_path, name="basis-x-score", stage="score")._executor.parameters
    assert params["gpus_per_node"] == 1 and params["ntasks_per_node"] == 1
    assert params["time"] == 60 and params["job_name"] == "basis-x-score"
    base = make_executor(gpu, tmp_path, name="basis-x-init", stage="init")._executor.parameters
    assert base["gpus_per_node"] == 4 and base["time"] == 240
    assert make_executor(gpu, tmp_path)._executor.parameters["gpus_per_node"] == 4
    with pytest.raises(ProfileError, match="stage kind"):
        make_executor(gpu, tmp_path, stage="bogus")
    local = make_executor(dataclasses.replace(ClusterProfile.load("local"),
                                              stages={"score": {"timeout_min": 5}}),
                          tmp_path, stage="score")
    assert local.parameters["timeout_min"] == 5


def test_slurm_job_name_and_policies_from_the_profile(tmp_path):
    gpu = ClusterProfile.load("example-gpu")
    assert gpu.retries == 1 and gpu.job_arrays is True
    ex = make_executor(ClusterProfile.load("local-slurm"), tmp_path, name="basis-demo-init")
    assert ex._executor.parameters["job_name"] == "basis-demo-init"
    with pytest.raises(ProfileError, match="job name"):
        make_executor(ClusterProfile.load("local-slurm"), tmp_path, name="x;rm")


@pytest.mark.parametrize("bad", [0, -1.5, "fast", True])
def test_throughput_must_be_a_positive_number(bad):
    with pytest.raises(ProfileError, match="throughput_img_s"):
        ClusterProfile(name="t", throughput_img_s=bad)
    with pytest.raises(ProfileError, match="stages.score.*throughput_img_s"):
        ClusterProfile(name="t", stages={"score": {"throughput_img_s": bad}})
