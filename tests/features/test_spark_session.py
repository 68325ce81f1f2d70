"""The master a Spark engine starts on: a malformed or unreachable one is refused before any JVM starts."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.errors import UserError
from features.spark_session import _chosen_master, check_master


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,2]", "local[*, 3]", "local[4 ,2]",
                                    "local-cluster[2,1,1024]", "local-cluster[ 2, 1, 1024 ]", "yarn",
                                    "k8s://https://cluster:443"])
def test_spark_s_own_forms_and_plugin_urls_pass(master: str) -> None:
    check_master(master, "SPARK_MASTER")


@pytest.mark.parametrize("master", ["sparkk://host:7077", "localhost:7077", "spark://host", "local[x]", "local[ 2]",
                                    "yarn-cluster", "spark://host:7077/", "spark://user@host:7077"])
def test_a_malformed_master_is_one_line_naming_it_and_its_setting(master: str) -> None:
    with pytest.raises(UserError, match=rf"^Spark master {re.escape(master)} \(from SPARK_MASTER\) "
                                        r"is not a master URL: use local\[N\], spark://HOST:PORT"):
        check_master(master, "SPARK_MASTER")


def test_a_port_past_65535_is_refused_not_wrapped() -> None:
    with pytest.raises(UserError, match=r"spark://127.0.0.1:99999 \(from SPARK_MASTER\): port 99999 is not a TCP port"):
        check_master("spark://127.0.0.1:99999", "SPARK_MASTER")


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local port held bound but not listening: a connection to it is refused for as long as the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_a_standalone_master_nobody_answers_at_is_refused_at_once(refusing_port: int) -> None:
    with pytest.raises(UserError, match=rf"cannot reach the Spark master spark://127.0.0.1:{refusing_port} \(from the "
                                        rf"caller\): 127.0.0.1:{refusing_port}: Connection refused"):
        check_master(f"spark://127.0.0.1:{refusing_port}", "the caller")


@pytest.mark.parametrize("family, host, written", [(socket.AF_INET, "127.0.0.1", "127.0.0.1"),
                                                   (socket.AF_INET6, "::1", "[::1]")])
def test_a_standalone_master_passes_when_one_of_its_addresses_answers(refusing_port: int, family: int, host: str,
                                                                      written: str) -> None:
    try:
        listening = socket.socket(family)
        listening.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    with listening:
        listening.listen()
        port = listening.getsockname()[1]
        check_master(f"spark://127.0.0.1:{refusing_port},{written}:{port}", "SPARK_MASTER")


def test_a_master_from_spark_defaults_is_left_to_spark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spark-defaults.conf is a Java properties file: "key value" and "key=value" both name the master."""
    for name in ("SPARK_MASTER", "MASTER", "PYSPARK_SUBMIT_ARGS", "PYSPARK_GATEWAY_PORT", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert _chosen_master(None) == ("local[2]", "the default")
    for line in ("spark.master yarn", "spark.master=yarn", "  spark.master : yarn"):
        (tmp_path / "spark-defaults.conf").write_text(f"spark.executor.memory 4g\n{line}\n")
        assert _chosen_master(None) == (None, "Spark's settings")
    monkeypatch.setenv("SPARK_MASTER", "spark://m:7077")
    assert _chosen_master(None) == ("spark://m:7077", "SPARK_MASTER")
