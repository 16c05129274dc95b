"""Bad configs and profiles: one clear line naming the field, and nothing submitted."""
from pathlib import Path

import pytest
import yaml

from jobs.cli import main

pytestmark = pytest.mark.faults
TINY = Path(__file__).resolve().parent.parent / "jobs" / "sweep_tiny.yaml"


def _config(tmp_path, **changes):
    raw = yaml.safe_load(TINY.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes,message", [
    ({"study__beta": [0.3, 1.2]}, "study.beta=1.2 is outside [0, 1]"),
    ({"study__N": [20, 500]}, "study.N=500 must be in (study.n_init=12, data.n_pool=48]"),
    ({"study__modes": ["uncertainty"]}, "allowed: predicted, oracle"),
    ({"data__kind": "voc_sbd"}, "data.voc_root is required for data.kind=voc_sbd"),
    ({"data__kind": "voc_sbd", "data__voc_root": "/nope", "data__sbd_root": "/nope"},
     "data.voc_root=/nope does not exist"),
    ({"train__lr": 0.1}, "train: unknown key(s) lr; allowed:"),
])
def test_bad_config_is_one_line_and_submits_nothing(tmp_path, capsys, changes, message):
    sweep = tmp_path / "sweep"
    code = main(["sweep", str(_config(tmp_path, **changes)), "--sweep-dir", str(sweep)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not sweep.exists()


@pytest.mark.parametrize("body,message", [
    ("executor: slurm\ngpus_per_node: 2\ntasks_per_node: 4\n",
     "tasks_per_node=4 > gpus_per_node=2"),
    ("executor: slurm\npartition: \"gpu\\n#SBATCH --uid=0\"\n", "holds a newline"),
    ("executor: slurm\naccount: \"a; rm -rf ~\"\n", "holds a newline, ';'"),
    ("executor: slurm\ngpu_per_node: 2\n", "unknown key(s) gpu_per_node"),
])
def test_bad_profile_is_refused_before_submission(tmp_path, capsys, body, message):
    profile = tmp_path / "p.yaml"
    profile.write_text(body)
    sweep = tmp_path / "sweep"
    code = main(["sweep", str(TINY), "--profile", str(profile), "--sweep-dir", str(sweep)])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not sweep.exists()


def test_sweep_folder_of_another_config_is_refused_unless_forced(tmp_path, capsys):
    from jobs import sweep as sweep_mod
    from jobs.config import SweepConfig

    folder = tmp_path / "sweep"
    sweep_mod.prepare(SweepConfig.load(TINY), folder)
    other = _config(tmp_path, **{"study__beta": [0.5]})
    code = main(["sweep", str(other), "--sweep-dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "of another config" in err and "--force" in err
    assert not (folder / "submitit").exists() and not (folder / "stages").exists()


def test_sweep_name_cannot_smuggle_shell_or_sbatch_lines(tmp_path, capsys):
    raw = yaml.safe_load(TINY.read_text())
    raw["name"] = "x\n#SBATCH --uid=0"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(path), "--sweep-dir", str(tmp_path / "s")]) == 2
    assert "name=" in capsys.readouterr().err and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_ray_listens_on_loopback_only():
    """The driver's Ray serves on 127.0.0.1 only: nothing of it on another address."""
    import subprocess
    import sys

    probe = """
import json, os, subprocess
from jobs.sweep import _ray_init
_ray_init(1)
import ray
listen = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
print(json.dumps({"nodes": [n["NodeManagerAddress"] for n in ray.nodes()],
                  "gcs": ray.get_runtime_context().gcs_address, "ss": listen}))
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(got["nodes"]) == {"127.0.0.1"} and got["gcs"].startswith("127.0.0.1:")
    exposed = [line for line in got["ss"].splitlines()
               if ("raylet" in line or "gcs_server" in line or "ray::" in line)
               and not line.split()[3].startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))]
    assert not exposed, exposed
