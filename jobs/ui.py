"""``basis ui SWEEP``: the MLflow UI of one sweep, on loopback only.

A sweep that tracks to an sqlite file gets a private ``mlflow ui`` on 127.0.0.1 (never
0.0.0.0: the store holds the whole study and the UI has no login). A sweep that
tracks to an MLflow server already has a UI: its URL is printed and nothing starts.
"""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from jobs.config import ConfigError
from jobs.sweep import read_meta

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs list of one experiment in the UI's model-training view, e.g.
    ``http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning``.

    MLflow 3.17's UI opens an experiment in its GenAI view (a trace overview) unless the
    URL or the browser's last choice says otherwise; older UIs ignore the parameter.
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(uri: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line serving the store ``uri`` on 127.0.0.1:``port``."""
    # one worker serves one user; uvicorn's default 4 each import mlflow, and on a busy
    # 2-core machine that took the start from 17 s to 41 s (measured)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--host", HOST, "--port", str(port), "--workers", "1"]


def check_port(port: int) -> None:
    """Raise `ConfigError` unless ``port`` can be bound on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as uvicorn does: a port in TIME_WAIT is free, one with a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as err:
            why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err})"
            raise ConfigError(f"port {port} on {HOST} {why}; choose another with "
                              f"--port, e.g. basis ui SWEEP --port {port + 1}") from err


def _answers(port: int) -> bool:
    for path in ("/health", "/"):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
    return False


def _stop(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Terminate ``proc`` (mlflow forwards it to its server workers); kill if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start(uri: str, port: int, log_path: Path, detach: bool = False,
          timeout_s: float = START_TIMEOUT_S) -> subprocess.Popen:
    """Start ``mlflow ui`` on 127.0.0.1:``port`` and return once it answers.

    Args:
        uri: the backend store, e.g. ``sqlite:////abs/SWEEP/mlflow.db``.
        port: a free port on 127.0.0.1 (checked first).
        log_path: the child's stdout and stderr, appended to.
        detach: run in its own session, so it outlives this process and the terminal.
        timeout_s: how long to wait for ``/health`` to answer.

    Raises:
        ConfigError: the port is taken, or the server exited or did not answer in time
            (it is stopped then; the error names the log).
    """
    check_port(port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # job execution (huey workers) is for MLflow's GenAI jobs, which a sweep never uses;
    # without it the server starts in ~6 s (measured)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "ab") as fh:
        fh.write(f"--- basis ui: {time.strftime('%Y-%m-%dT%H:%M:%S')} {uri} on "
                 f"{HOST}:{port}\n".encode())
        fh.flush()
        proc = subprocess.Popen(ui_command(uri, port), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                start_new_session=detach)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(port):
            if proc.poll() is not None:
                raise ConfigError(f"the MLflow UI exited (code {proc.returncode}) before "
                                  f"answering on {HOST}:{port}; see {log_path}")
            if time.monotonic() > deadline:
                raise ConfigError(f"the MLflow UI did not answer on {HOST}:{port} within "
                                  f"{timeout_s:.0f} s; see {log_path}")
            time.sleep(0.5)
    except BaseException:   # an error or Ctrl-C while starting: leave nothing behind
        _stop(proc)
        raise
    return proc


def serve(sweep: Path, port: int = DEFAULT_PORT, wait: bool = True,
          out: Callable[[str], Any] = print) -> int:
    """Open the MLflow UI of the sweep in ``sweep`` → an exit code.

    Args:
        sweep: sweep folder (holds ``sweep.json``).
        port: port on 127.0.0.1 for a local UI.
        wait: stay in the foreground until Ctrl-C or the server exits; False: return
            once it answers and leave it running (pid in ``SWEEP/mlflow-ui.pid``).
        out: where the user-facing lines go.

    Raises:
        ConfigError: not a sweep folder, the port is taken, or the UI did not start.
    """
    meta = read_meta(sweep)
    if not meta:
        raise ConfigError(f"{sweep} is not a sweep folder (no sweep.json)")
    uri, exp_id, name = meta["mlflow_uri"], meta["experiment_id"], meta.get("name", sweep.name)
    if uri.startswith(("http://", "https://")):
        out(f"basis: sweep {name} tracks to the MLflow server {uri}; nothing to start, "
            f"open {experiment_url(uri, exp_id)}")
        return 0
    log_path = sweep.resolve() / "mlflow-ui.log"
    try:
        proc = start(uri, port, log_path, detach=not wait)
    except KeyboardInterrupt:
        return 0
    url = experiment_url(f"http://{HOST}:{port}", exp_id)
    try:
        if not wait:
            pid_path = sweep.resolve() / "mlflow-ui.pid"
            pid_path.write_text(f"{proc.pid}\n")
            out(f"basis: MLflow UI for sweep {name} at {url} runs in the background, pid "
                f"{proc.pid} (in {pid_path}); stop it with: kill {proc.pid}  (log: {log_path})")
            return 0
        out(f"basis: MLflow UI for sweep {name} at {url} (Ctrl-C stops it; log: {log_path})")
        code = proc.wait()
    except KeyboardInterrupt:   # also one that comes before the wait: stop what we started
        _stop(proc)
        return 0
    if code != 0:
        out(f"basis: the MLflow UI exited with code {code}; see {log_path}")
        return 1
    return 0
