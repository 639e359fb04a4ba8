"""Several uvicorn workers in one pod: with `PROMETHEUS_MULTIPROC_DIR` set, whichever worker
answers `/metrics` reports every worker's counts, merged, not just its own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from podcrew_cli.stack import LOOPBACK, free_port

pytestmark = pytest.mark.integration

WORKERS = 2
REQUESTS = 60


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


@pytest.fixture
def writer_with_workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    multiproc = tmp_path / "prometheus-multiproc"
    multiproc.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "PODCREW_REDIS_URL": f"redis://{LOOPBACK}:{free_port()}/0",  # never connected
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "podcrew_writer.__main__:app",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--no-access-log",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 60
        pids: set[str] = set()
        while True:
            assert process.poll() is None, (tmp_path / "uvicorn.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/healthz", timeout=1)
            # every worker has started once its metric files exist
            pids = {p.stem.rsplit("_", 1)[-1] for p in multiproc.glob("counter_*.db")}
            if len(pids) >= WORKERS:
                break
            assert time.monotonic() < deadline, "uvicorn workers did not start"
            time.sleep(0.2)
        yield url, multiproc
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def test_counts_from_every_worker_are_merged(writer_with_workers: tuple[str, Path]) -> None:
    url, multiproc = writer_with_workers
    for _ in range(REQUESTS):
        # a new connection each time, so the kernel spreads them over the workers
        with httpx.Client() as client:
            assert client.get(f"{url}/no-such-route").status_code == 404

    from prometheus_client import multiprocess

    # Both workers served some of them: each process's own file holds only its share.
    def shares() -> list[float]:
        per_process = []
        for path in sorted(multiproc.glob("counter_*.db")):
            counted = 0.0
            for metric in multiprocess.MultiProcessCollector.merge([str(path)], accumulate=False):
                for sample in metric.samples:
                    if sample.name == "podcrew_http_server_requests_total" and (
                        sample.labels.get("route") == "unmatched"
                    ):
                        counted += sample.value
            per_process.append(counted)
        return per_process

    # A request is counted just after its response is sent: give the last one a moment.
    deadline = time.monotonic() + 2
    while sum(per_process := shares()) < REQUESTS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(per_process) == REQUESTS
    assert sum(1 for n in per_process if n) == WORKERS, per_process

    # Whichever worker answers the scrape, it reports all of them, and the in-flight
    # gauge is one number for the pod (livesum), not one series per process.
    for _ in range(6):
        with httpx.Client() as client:
            text = client.get(f"{url}/metrics").text
        counts = _samples(text, "podcrew_http_server_requests_total")
        unmatched = [v for labels, v in counts if labels["route"] == "unmatched"]
        assert unmatched == [REQUESTS], counts
        in_flight = _samples(text, "podcrew_http_server_requests_in_flight")
        assert in_flight == [({}, 1.0)], in_flight  # the scrape itself
        assert not any("pid" in labels for labels, _ in counts)
