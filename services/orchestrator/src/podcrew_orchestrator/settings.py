"""Orchestrator settings (`PODCREW_ORCHESTRATOR_*`), shared by the api and worker modes."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from podcrew_core.settings import ServiceSettings


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_ORCHESTRATOR_", extra="ignore")

    port: int = Field(default=8000, ge=1, le=65535, description="API port (api mode).")
    worker_port: int = Field(
        default=8001, ge=1, le=65535, description="Health and metrics port (worker mode)."
    )
    research_url: str = Field(
        default="http://127.0.0.1:8101", description="Base URL of the research agents."
    )
    writer_url: str = Field(default="http://127.0.0.1:8102", description="Base URL of the writer.")
    key_prefix: str = Field(default="podcrew", description="Prefix of every Redis key.")
    worker_concurrency: int = Field(
        default=32, ge=1, le=4096, description="Runs one worker process executes at once."
    )
    consumer_name: str = Field(
        default_factory=_default_consumer,
        description="This worker's consumer name in the group (default: hostname-pid).",
    )
    claim_min_idle_s: float = Field(
        default=30.0,
        ge=0.5,
        description="A run whose worker has not heartbeaten for this long is reclaimed.",
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="Deliveries after which a run is dead-lettered and failed."
    )
    run_deadline_s: float = Field(
        default=300.0, gt=0, description="Time a run may take from start to result."
    )
    run_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long run records and events are kept."
    )
    max_wait_s: float = Field(
        default=60.0, ge=0, le=600, description="Largest `?wait=` a client may ask for."
    )
    trim_interval_s: float = Field(
        default=60.0, gt=0, description="How often a worker trims acknowledged queue entries."
    )
    http_max_connections: int = Field(
        default=256, ge=1, description="Pool size of the client to the agents."
    )
