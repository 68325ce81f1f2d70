"""API fuzzing: schemathesis generates requests from the running service's own /docs.json,
valid and invalid alike, and checks every answer: no 5xx, status codes, content types and
bodies as declared, valid data accepted and invalid data rejected, no hang.

The count of generated cases per operation is bounded to keep CI fast; the test reports
how many ran, and fails if an operation got too few to mean anything.
"""

from __future__ import annotations

from collections import Counter

import hypothesis
import pytest
import schemathesis
from schemathesis.generation import GenerationMode

from tests.serving.live_server import TOKEN, Server

EXAMPLES_PER_OPERATION = 60
FUZZED = {"/cross_sell", "/email_picks", "/offers", "/propensity", "/events", "/noop", "/admin/reload"}


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/docs.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_operation_honours_its_schema(api_schema: schemathesis.BaseSchema, server: Server,
                                            mode: GenerationMode, capsys: pytest.CaptureFixture) -> None:
    ran: Counter[str] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert FUZZED <= {op.path for op in operations}
    for operation in operations:
        if operation.path not in FUZZED:
            continue  # BentoML's own GET routes (health, metrics) take no input

        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck), derandomize=True)
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            ran[operation.label] += 1

        fuzz()
    with capsys.disabled():
        print(f"\nschemathesis {mode.value}: {sum(ran.values())} cases: {dict(sorted(ran.items()))}")
    assert all(ran[op.label] >= 5 for op in operations if op.path in FUZZED), ran
