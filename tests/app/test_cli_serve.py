"""`shoprec serve` as a user starts it: the curl calls `shoprec demo` prints all answer, and
a newly promoted champion is picked up by polling, with no restart and no admin call."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from features.sample import SampleShop
from tests.serving.live_server import Server, TrainedHome, running_server, train_into
from app.render import example_calls


@pytest.fixture(scope="module")
def cli_server(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(trained_home, tmp_path_factory.mktemp("cli-serve"), use_cli=True,
                        env_overrides={"SHOPREC_POLL_SECONDS": "1"}) as live:
        yield live


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_printed_curl_calls_all_answer(cli_server: Server, sample_shop: SampleShop) -> None:
    anchor = str(sample_shop.truth["pairs"]["anchor_item_id"].iloc[0])
    customer = str(sample_shop.tables["orders"]["customer_id"].iloc[0])
    lines = [line for line in example_calls(urlparse(cli_server.url).port, anchor, customer).splitlines()
             if line.startswith("curl ")]
    assert {line.split()[4].rsplit("/", 1)[1] for line in lines if "-X POST" in line} == \
        {"cross_sell", "email_picks", "offers", "propensity"}
    for line in lines:
        done = subprocess.run([*shlex.split(line), "--fail-with-body"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        if "-X POST" in line:
            assert json.loads(done.stdout)["model_version"] == "shoprec/v1", line


def test_a_new_champion_is_picked_up_by_polling(cli_server: Server) -> None:
    second = train_into(cli_server.data, cli_server.home)
    assert second.gate and second.gate.passed
    wanted = f"shoprec/v{second.model_version}"
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        seen.append(cli_server.post("/noop", {}).json()["model_version"])
        if seen[-1] == wanted:
            break
        time.sleep(0.2)
    assert seen[-1] == wanted, seen[-5:]
    assert set(seen) <= {"shoprec/v1", wanted}
