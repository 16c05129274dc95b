"""``basis ui``: errors in one line, a server's URL without starting anything, and a real
``mlflow ui`` on loopback serving a sweep's sqlite store."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from jobs.cli import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listeners(port: int) -> set[str]:
    """Local addresses with a socket listening on TCP ``port`` (Linux /proc/net/tcp*)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:   # 0A: LISTEN
                continue
            if len(addr) == 8:
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
            else:   # four little-endian 32-bit words
                words = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("basis: error:") and len(err.strip().splitlines()) == 1, err
    return err


def stop_ui(pid_path: Path, port: int) -> None:
    """Stop the UI that ``basis ui --no-wait`` left running, as its printed ``kill PID``
    does, and wait up to 15 s for ``port`` to be free."""
    if pid_path.exists():
        pid = int(pid_path.read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:   # our child: reap it
                    break
            except ChildProcessError:   # reaped already by subprocess' own cleanup
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _listeners(port) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_not_a_sweep_folder_is_one_line_exit_2(tmp_path, capsys):
    assert main(["ui", str(tmp_path)]) == 2
    assert "is not a sweep folder (no sweep.json)" in _one_line_error(capsys)
    assert not (tmp_path / "mlflow-ui.log").exists()


def test_tracking_server_sweep_prints_its_url_and_starts_nothing(tmp_path, capsys,
                                                                 monkeypatch):
    import subprocess

    def no_popen(*args, **kwargs):
        raise AssertionError("basis ui started a process for an http:// store")

    monkeypatch.setattr(subprocess, "Popen", no_popen)
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"name": "demo", "experiment_id": "7", "mlflow_uri": "http://10.1.2.3:5000/"}))
    assert main(["ui", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("open http://10.1.2.3:5000/#/experiments/7/runs?workflowType=machine_learning"
            in out)
    assert len(out.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow-ui.log").exists()
    assert not (tmp_path / "mlflow-ui.pid").exists()


def test_taken_port_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"name": "demo", "experiment_id": "1",
         "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", str(tmp_path), "--port", str(port), "--no-wait"]) == 2
    err = _one_line_error(capsys)
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err
    assert not (tmp_path / "mlflow-ui.pid").exists()


def test_sweep_experiment_is_model_training_also_when_reopened(tmp_path):
    """The kind tag makes MLflow 3's UI show the runs, not the GenAI trace overview;
    an experiment made before the tag gets it when its sweep is reopened."""
    from mlflow.tracking import MlflowClient

    from jobs.tracking import open_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)

    def kind(exp_id: str) -> str | None:
        return client.get_experiment(exp_id).tags.get("mlflow.experimentKind")

    assert kind(open_sweep(uri, "basis/new", {"N": 20})[0]) == "custom_model_development"
    old_id = client.create_experiment("basis/old")
    assert kind(old_id) is None
    assert open_sweep(uri, "basis/old", {"N": 20})[0] == old_id
    assert kind(old_id) == "custom_model_development"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ui_serves_the_sweep_store_on_loopback_only(tmp_path, capsys):
    from jobs.config import SweepConfig
    from jobs.sweep import prepare

    sweep = tmp_path / "sw"
    meta = prepare(SweepConfig.load("configs/demo.yaml"), sweep)
    port = _free_port()
    pid_path = sweep / "mlflow-ui.pid"
    try:
        assert main(["ui", str(sweep), "--port", str(port), "--no-wait"]) == 0
        out = capsys.readouterr().out
        assert (f"http://127.0.0.1:{port}/#/experiments/{meta['experiment_id']}/runs"
                "?workflowType=machine_learning") in out
        pid = int(pid_path.read_text())
        assert f"kill {pid}" in out
        query = urllib.parse.urlencode({"experiment_name": "basis/demo"})
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?{query}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            exp = json.load(resp)["experiment"]
        assert exp["experiment_id"] == meta["experiment_id"] and exp["name"] == "basis/demo"
        tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert _listeners(port) == {"127.0.0.1"}
    finally:
        stop_ui(pid_path, port)
    # the SIGTERM reached the uvicorn workers too: nothing listens any more
    assert not _listeners(port)
