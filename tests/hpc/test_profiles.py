import pytest

from hpc.profiles import PROFILES_DIR, ClusterProfile, ProfileError, make_executor


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
])
def test_bad_profiles_are_refused(tmp_path, body, field):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ProfileError, match=field):
        ClusterProfile.load(path)


def test_slurm_executor_parameters_reach_sbatch(tmp_path):
    ex = make_executor(ClusterProfile.load("example-gpu"), tmp_path)
    text = ex._executor._make_submission_file_text("python -c 1", "abc")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=my_project",
                 "#SBATCH --qos=normal", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=240", "module load cuda/12.4",
                 "export BASIS_COLLECTIVE_TIMEOUT_S=600", "--kill-on-bad-exit=1"):
        assert line in text, line


def test_slurm_job_name_and_policies_from_the_profile(tmp_path):
    gpu = ClusterProfile.load("example-gpu")
    assert gpu.retries == 1 and gpu.job_arrays is True
    ex = make_executor(ClusterProfile.load("local-slurm"), tmp_path, name="basis-demo-init")
    assert ex._executor.parameters["job_name"] == "basis-demo-init"
    with pytest.raises(ProfileError, match="job name"):
        make_executor(ClusterProfile.load("local-slurm"), tmp_path, name="x;rm")
