"""API fuzzing from outside, as a user would run it: the ``schemathesis`` command line against
the live service's own /docs.json, with every check (``--checks all``: no 5xx, status codes,
content types, headers and bodies as declared, valid data accepted, invalid data rejected,
wrong methods and media types refused, auth not ignored) and every default phase (examples,
coverage, fuzzing).

The coverage phase is what finds the edges a generator rarely hits: a ``multipart/form-data``
body without a boundary, a POST without its required body, TRACE on an admin route.
Cases per operation are bounded and the seed fixed to keep CI fast and repeatable; the test
reads the JUnit report to check every endpoint was tested, and fails if too few cases ran.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.serving.live_server import TOKEN, Server

MAX_EXAMPLES = 60
FUZZED = {"/cross_sell", "/email_picks", "/offers", "/propensity", "/events", "/noop", "/admin/reload"}


def test_schemathesis_with_every_check_and_phase_finds_nothing(server: Server, tmp_path: Path) -> None:
    junit = tmp_path / "schemathesis.xml"
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{server.url}/docs.json",
               "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "20261201",
               "--workers", "1", "--generation-database", "none", "--no-color",
               "-H", f"Authorization: Bearer {TOKEN}", "--report", "junit", "--report-junit-path", str(junit)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Coverage" in run.stdout and "Fuzzing" in run.stdout, run.stdout[-3000:]
    tested = {case.get("name", "").split(" ", 1)[-1] for case in ET.parse(junit).iter("testcase")}
    assert tested >= FUZZED, tested
    summary = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert summary is not None and int(summary[1]) >= 20 * len(FUZZED), run.stdout[-3000:]
    print(f"\nschemathesis --checks all: {summary[0]}")
