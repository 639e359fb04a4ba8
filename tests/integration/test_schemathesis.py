"""Every service against its own published OpenAPI: generated requests, valid and invalid,
never get a 5xx, and every response matches the schema the service advertises.

The schemas are loaded from the live processes (`/openapi.json`), so what is checked is
what a client would download, not what the code meant to publish.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings  # schemathesis brings it
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup

from podcrew_cli.stack import LOOPBACK, Stack, StackConfig

pytestmark = pytest.mark.integration

EXAMPLES = 120  # per operation and mode (valid, invalid); the whole file stays under a minute
CHECKS = [checks.not_a_server_error, checks.response_schema_conformance]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the latency of real processes is not what is under test here
    database=None,  # nothing written to .hypothesis/ in the repository
    suppress_health_check=list(HealthCheck),
)
# Every request is answered in well under this; only a response that never ends (a stream
# left open) takes longer, and that is a failure too.
REQUEST_TIMEOUT_S = 10.0
RUN_ID_OPERATIONS = (
    "GET /v1/runs/{run_id}",
    "DELETE /v1/runs/{run_id}",
    "POST /v1/runs/{run_id}/feedback",
    "GET /v1/runs/{run_id}/feedback",
    "PUT /v1/runs/{run_id}/evaluation",
)
EVENTS_OPERATION = "GET /v1/runs/{run_id}/events"


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: runs it accepts are real work, so keep them cheap and unlimited.
    Its logs stay in pytest's tmp dir: a 5xx is explained there."""
    config = StackConfig.on_free_ports(
        data_dir=tmp_path_factory.mktemp("fuzzed-stack"),
        env={
            "PODCREW_LLM_OFFLINE_LATENCY_S": "0",
            # `?wait=` up to 600 is valid input; the server caps it, and the cap keeps this short.
            "PODCREW_ORCHESTRATOR_MAX_WAIT_S": "0.2",
            "PODCREW_ORCHESTRATOR_DEFAULT_TENANT_LIMITS": json.dumps(
                {
                    "requests_per_minute": 100_000,
                    "burst": 10_000,
                    "concurrent_runs": 10_000,
                    "daily_tokens": 10**10,
                    "daily_cost_usd": 10**6,
                }
            ),
            "PODCREW_ORCHESTRATOR_DAILY_SPEND_CAP_USD": str(10**6),
        },
    )
    with Stack(config) as stack:
        yield stack


def _base_urls(stack: Stack) -> dict[str, str]:
    c = stack.config
    return {
        "api": c.api_url,
        "research-agent": f"http://{LOOPBACK}:{c.research_port}",
        "writer-agent": f"http://{LOOPBACK}:{c.writer_port}",
        "worker": f"http://{LOOPBACK}:{c.worker_port}",
    }


def _finished_run(api_url: str) -> str:
    """A run that succeeded, so that `{run_id}` operations answer more than 404."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        run_id = str(
            client.post("/v1/runs", json={"question": "How do Python generators work?"}).json()[
                "id"
            ]
        )
        deadline = time.monotonic() + 30
        while client.get(f"/v1/runs/{run_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the seed run did not succeed"
            time.sleep(0.1)
    return run_id


def _fuzz(operation: Any, mode: GenerationMode, **fixed: Any) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT_S)

    run()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FailureGroup):  # its str() carries the response and a curl command
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def _fuzz_all(operations: list[Any], **fixed: Any) -> list[str]:
    """Each operation with valid and invalid input; returns the failures found."""
    failures: list[str] = []
    for operation in operations:
        for mode in GenerationMode:
            try:
                _fuzz(operation, mode, **fixed)
            except Unsatisfiable:
                pass  # no parameters, or every one fixed or free-form: no invalid input exists
            except (Exception, FailureGroup) as exc:  # a check failed, or no answer came
                failures.append(f"{mode.value} {operation.label}:\n{_describe(exc)}")
    return failures


# `schemathesis.pytest.from_fixture(...).parametrize()` would be the natural fit, but with
# schemathesis 4.32 on pytest 9.2 it fails before the first request (it sets the removed
# `Node._nodeid`), so each operation is driven through its Hypothesis strategy instead.
@pytest.mark.parametrize("service", ["api", "research-agent", "writer-agent", "worker"])
def test_service_honours_its_openapi(fuzzed_stack: Stack, service: str) -> None:
    base_url = _base_urls(fuzzed_stack)[service]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{service} publishes no operations"
    failures = _fuzz_all(operations)
    if service == "api":
        # Random ids only ever meet a 404; a real one reaches the Run schema, the 409 of
        # cancelling a finished run, its feedback and evaluation, and the event stream. A finished run's stream ends at
        # its final event, so it is a finite body schemathesis can read and check; a
        # `Last-Event-ID` that leaves it open fails on REQUEST_TIMEOUT_S.
        by_id = [op for op in operations if op.label in (*RUN_ID_OPERATIONS, EVENTS_OPERATION)]
        assert len(by_id) == len(RUN_ID_OPERATIONS) + 1, [op.label for op in operations]
        failures += _fuzz_all(by_id, path_parameters={"run_id": _finished_run(base_url)})
    assert not failures, f"{len(failures)} failed:\n\n" + "\n\n".join(failures)
