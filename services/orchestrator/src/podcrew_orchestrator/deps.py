"""Typed dependencies of the api: how routes reach what its lifespan built
(podcrew_core.runtime.deps), and who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.auth import KeyRing, hash_key, presented_key
from podcrew_core.runtime.deps import part
from podcrew_orchestrator.feedback import RunFeedback
from podcrew_orchestrator.hub import EventHub
from podcrew_orchestrator.settings import OrchestratorConfig, OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions

DEFAULT_TENANT = "default"
# Who calls when auth is off: every caller is this one user of tenant `default`.
ANONYMOUS_USER = "anonymous"
# A key's principal: this many hex digits of its SHA-256, enough to tell a tenant's keys
# apart, and not the hash the configuration holds.
PRINCIPAL_HEX_DIGITS = 16


@dataclass(frozen=True, slots=True)
class ApiResources:
    """The api's resources, built in its lifespan."""

    config: OrchestratorConfig
    keyring: KeyRing
    store: RunStore
    hub: EventHub
    submissions: Submissions
    admission: Admission  # run submissions (and their waits) at once
    streams: Admission  # event streams at once
    feedback: RunFeedback


Store = Annotated[RunStore, part(ApiResources, lambda r: r.store)]
Hub = Annotated[EventHub, part(ApiResources, lambda r: r.hub)]
Settings = Annotated[OrchestratorSettings, part(ApiResources, lambda r: r.config.service)]
LLM = Annotated[LLMSettings, part(ApiResources, lambda r: r.config.llm)]
Slots = Annotated[Admission, part(ApiResources, lambda r: r.admission)]
Streams = Annotated[Admission, part(ApiResources, lambda r: r.streams)]
SubmissionsDep = Annotated[Submissions, part(ApiResources, lambda r: r.submissions)]
FeedbackDep = Annotated[RunFeedback, part(ApiResources, lambda r: r.feedback)]
KeyRingDep = Annotated[KeyRing, part(ApiResources, lambda r: r.keyring)]


async def get_tenant(request: Request, keyring: KeyRingDep) -> str:
    """The tenant of the presented API key (401 otherwise); `default` when auth is off."""
    if not keyring:
        return DEFAULT_TENANT
    tenant = keyring.tenant(presented_key(request))
    structlog.contextvars.bind_contextvars(tenant=tenant)
    return tenant


Tenant = Annotated[str, Depends(get_tenant)]


def caller_principal(request: Request, keyring: KeyRing) -> str:
    """Who is calling, within the tenant: `key-` and the start of the API key's SHA-256 (a
    key's identity, never the key); `anonymous` when auth is off. A rotated key is a new
    principal."""
    key = presented_key(request) if keyring else None
    if not key:
        return ANONYMOUS_USER
    return f"key-{hash_key(key)[:PRINCIPAL_HEX_DIGITS]}"


async def get_user(request: Request, tenant: Tenant, keyring: KeyRingDep) -> str:
    """The caller's principal; after the tenant, so an unknown key is a 401 first."""
    return caller_principal(request, keyring)


User = Annotated[str, Depends(get_user)]
