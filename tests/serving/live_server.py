"""A real shoprec server for end-to-end tests: the sample shop trained once per session into a
SHOPREC_HOME, a private copy of it per module, `bentoml serve` on a free loopback port, wait
for /readyz, and stop it afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from features.sample import SampleShop
from features.table_files import write_tables
from training.pipeline import TrainConfig, TrainResult, run_training

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-admin-token"


def redis_or_skip(url: str) -> None:
    """Skip the test, with the reason, where no Redis answers at ``url`` (a laptop without one)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as error:
        pytest.skip(f"Redis not reachable at {url} (set SHOPREC_TEST_REDIS_URL): {error}")


@dataclass
class Server:
    url: str
    client: httpx.Client
    data: str
    home: Path
    trained: TrainResult

    def post(self, path: str, body: object, **kwargs: object) -> httpx.Response:
        return self.client.post(f"{self.url}{path}", json=body, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_into(data: str, home: Path, config: TrainConfig | None = None) -> TrainResult:
    saved = {k: os.environ.get(k) for k in ("SHOPREC_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["SHOPREC_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        return run_training(data, config or TrainConfig(families=["ease"]))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def serving(home: Path, root: Path, *, use_cli: bool = False,
            env_overrides: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve the champion registered in ``home`` on a free port until the block ends: yields
    the URL once /readyz answers, and the process (a test may kill it)."""
    env = {**os.environ, "SHOPREC_HOME": str(home), "SHOPREC_ADMIN_TOKEN": TOKEN, "SHOPREC_POLL_SECONDS": "0",
           "OPENBLAS_NUM_THREADS": "1", "BENTOML_HOME": str(root / "bentoml"),
           "SHOPREC_WORKERS": "1",  # one worker unless a test asks for more (Redis alone would mean one per CPU)
           **(env_overrides or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root / "server.log"
    log = open(log_path, "a")  # noqa: SIM115 - closed after the server stops; restarts append
    command = ([str(Path(sys.executable).with_name("shoprec")), "serve"] if use_cli else
               [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:ShoprecService"])
    for attempt in range(3):  # the free port can be taken between finding it and binding it
        started = log_path.stat().st_size
        port = free_port()
        proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(url, proc, log_path):
            break
        if "Address already in use" not in log_path.read_text()[started:] or attempt == 2:
            log.close()
            pytest.fail(f"server exited: {log_path.read_text()[-3000:]}")
    try:
        yield url, proc
    finally:
        workers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
        for worker in workers:  # BentoML's workers run in process groups of their own
            if worker.is_running():
                worker.kill()
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> bool:
    """True once /readyz answers; False if the server exited first; fails the test on a hang."""
    deadline = time.monotonic() + 120
    while proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc.poll() is None  # our server answered, not one that held the port before
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            kill_tree(proc)
            pytest.fail(f"server not ready: {log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    return False


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and every worker, as a crash or the OOM killer would: no shutdown hook runs."""
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for process in tree:
        process.kill()
    psutil.wait_procs(tree, timeout=15)
    proc.wait()


@dataclass(frozen=True)
class TrainedHome:
    """The sample shop as Parquet and a SHOPREC_HOME it was trained into (v1 = champion)."""

    data: Path
    home: Path
    trained: TrainResult


def train_template(sample_shop: SampleShop, root: Path) -> TrainedHome:
    """Train the sample shop once (the session's template; every module serves a copy of it)."""
    data, home = root / "shop", root / "home"
    write_tables(sample_shop.tables, str(data), "parquet")
    trained = train_into(str(data), home)
    assert trained.model_version == "1" and trained.gate and trained.gate.passed
    return TrainedHome(data, home, trained)


def private_copy(template: TrainedHome, root: Path) -> TrainedHome:
    """A module's own copy of the trained shop: the files copied, and every path the MLflow
    database records (artifact locations, model sources) pointed at the copy, so what a module
    registers, promotes or breaks stays in its copy. The registry is as real as a trained one:
    the same SQLite database and artefact files, at another place."""
    data, home = root / "shop", root / "home"
    shutil.copytree(template.data, data)
    shutil.copytree(template.home, home)
    old, new = f"{template.home}/", f"{home}/"
    connection = sqlite3.connect(home / "mlflow.db")
    try:
        with connection:  # one transaction, committed at the end of the block
            left = []
            for (table,) in connection.execute("select name from sqlite_master where type = 'table'").fetchall():
                for column in [row[1] for row in connection.execute(f'pragma table_info("{table}")')]:
                    connection.execute(f'update "{table}" set "{column}" = replace("{column}", ?, ?) '
                                       f'where typeof("{column}") = \'text\' and instr("{column}", ?) > 0',
                                       (old, new, old))
                    left += connection.execute(f'select "{column}" from "{table}" '
                                               f'where instr(cast("{column}" as text), ?) > 0', (old,)).fetchall()
    finally:
        connection.close()
    assert not left, f"paths of the template left in the copy: {left[:3]}"
    return TrainedHome(data, home, template.trained)


@contextmanager
def running_server(template: TrainedHome, root: Path, *, use_cli: bool = False,
                   env_overrides: dict[str, str] | None = None) -> Iterator[Server]:
    """Serve a private copy of the trained sample shop (v1 = champion) from ``root``, stop it afterwards.

    ``use_cli`` starts it as a user does, with ``shoprec serve``, instead of ``bentoml serve``.
    """
    copy = private_copy(template, root)
    with serving(copy.home, root, use_cli=use_cli, env_overrides=env_overrides) as (url, _), \
            httpx.Client(timeout=30) as client:
        yield Server(url, client, str(copy.data), copy.home, copy.trained)
