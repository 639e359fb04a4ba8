"""The AgentRun resource: its names, its spec as a typed model, and the run request it becomes.

The CRD (`charts/podcrew/crds/agentruns.podcrew.dev.yaml`) validates the spec at the API
server; this model validates it again with the orchestrator's own wire types, so a spec that
slips past the schema (a question of spaces, say) fails here, permanently, instead of being
retried against the API forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from podcrew_core.contracts.schemas import RunBudget, RunCreate, Tier

from .errors import InvalidSpec

GROUP = "podcrew.dev"
VERSION = "v1alpha1"
PLURAL = "agentruns"
KIND = "AgentRun"
API_VERSION = f"{GROUP}/{VERSION}"

# Finalizer and kopf's own bookkeeping live under podcrew's domain, not kopf's defaults.
FINALIZER = "podcrew.dev/cancel-run"
ANNOTATIONS_PREFIX = "operator.podcrew.dev"

REPORT_SUFFIX = "-report"
MAX_NAME_CHARS = 253  # a DNS subdomain: the limit of a ConfigMap name


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Budget(_Spec):
    tokens: int | None = Field(default=None, ge=1)
    cost_usd: float | None = Field(default=None, gt=0, alias="costUsd")
    deadline_seconds: int | None = Field(default=None, ge=1, le=3600, alias="deadlineSeconds")


class Output(_Spec):
    config_map_name: str | None = Field(default=None, alias="configMapName")


class AgentRunSpec(_Spec):
    """`spec` of an AgentRun, as the CRD declares it."""

    question: str
    thread_id: str | None = Field(default=None, alias="threadId")
    model: Tier = "standard"
    budget: Budget = Field(default_factory=Budget)
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, alias="ttlSecondsAfterFinished"
    )
    output: Output = Field(default_factory=Output)

    def run_request(self) -> RunCreate:
        """The body of `POST /v1/runs` this AgentRun stands for."""
        return RunCreate(
            question=self.question,
            tier=self.model,
            thread_id=self.thread_id,
            budget=RunBudget(
                max_tokens=self.budget.tokens,
                max_cost_usd=self.budget.cost_usd,
                deadline_s=self.budget.deadline_seconds,
            ),
        )


def parse_spec(spec: Mapping[str, Any]) -> tuple[AgentRunSpec, RunCreate]:
    """The typed spec and its run request, or `InvalidSpec` saying which field is wrong."""
    try:
        parsed = AgentRunSpec.model_validate(dict(spec))
        return parsed, parsed.run_request()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidSpec(f"invalid spec: {problems}") from exc


def idempotency_key(uid: str) -> str:
    """One key per AgentRun object, ever: a restarted operator resubmits to the same run.

    The uid (not the name) is used so that deleting an AgentRun and creating another with
    the same name asks again instead of being answered with the old run.
    """
    return f"agentrun-{uid}"


def report_config_map_name(agentrun_name: str, spec: AgentRunSpec) -> str:
    """`spec.output.configMapName`, else `<name>-report` trimmed to a valid name."""
    if spec.output.config_map_name:
        return spec.output.config_map_name
    base = agentrun_name[: MAX_NAME_CHARS - len(REPORT_SUFFIX)].rstrip("-.")
    return base + REPORT_SUFFIX
