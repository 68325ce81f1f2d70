"""The master a Spark engine starts on: a malformed or unreachable one is refused before any JVM starts."""

from __future__ import annotations

import socket

import pytest

from features.errors import UserError
from features.spark_session import check_master


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,2]", "local-cluster[2,1,1024]",
                                    "yarn", "k8s://https://cluster:443"])
def test_spark_s_own_forms_and_plugin_urls_pass(master: str) -> None:
    check_master(master, "SPARK_MASTER")


@pytest.mark.parametrize("master", ["sparkk://host:7077", "localhost:7077", "spark://host", "local[x]",
                                    "yarn-cluster", "spark://host:7077/"])
def test_a_malformed_master_is_one_line_naming_it_and_its_setting(master: str) -> None:
    with pytest.raises(UserError, match=rf"^Spark master {__import__('re').escape(master)} \(from SPARK_MASTER\) "
                                        r"is not a master URL: use local\[N\], spark://HOST:PORT"):
        check_master(master, "SPARK_MASTER")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_standalone_master_nobody_answers_at_is_refused_at_once() -> None:
    port = _closed_port()
    with pytest.raises(UserError, match=rf"cannot reach the Spark master spark://127.0.0.1:{port} \(from the "
                                        rf"caller\): 127.0.0.1:{port}: Connection refused"):
        check_master(f"spark://127.0.0.1:{port}", "the caller")


def test_a_standalone_master_passes_when_one_of_its_addresses_answers() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        check_master(f"spark://127.0.0.1:{_closed_port()},127.0.0.1:{port}", "SPARK_MASTER")
