"""A `callback_url` the delivery's egress guard would refuse is refused where it enters, at
submit (`400 blocked-url`), not accepted and dropped at delivery. No request is sent: the
guard classifies addresses, and names resolve through a resolver given here."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.errors import BlockedURL
from podcrew_core.contracts.schemas import RunCreate
from podcrew_core.runtime.egress import EgressGuard, EgressPolicy
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.limits import TenantLimiter
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions, budget_caps
from podcrew_orchestrator.webhooks import WebhooksNotConfigured

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")
SETTINGS = OrchestratorSettings(key_prefix="test")
NAMES = {"hooks.internal.test": ["10.20.30.40"], "hooks.public.test": ["93.184.216.34"]}


async def _resolve(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise OSError(f"{host}: name not known")
    return NAMES[host]


def _submissions(redis: Redis, callbacks: EgressGuard | None) -> Submissions:
    store = RunStore(redis, KEYS, ttl_s=3600, budget_caps=budget_caps(SETTINGS))
    limiter = TenantLimiter(redis, KEYS, max_run_age_s=600)
    return Submissions(redis, KEYS, store, limiter, SETTINGS, callbacks=callbacks)


def _run(callback_url: str) -> RunCreate:
    return RunCreate(question="What is a Python generator?", callback_url=callback_url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # loopback
        "http://[::1]/hook",
        "http://10.0.0.7/hook",  # private
        "http://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "http://hooks.internal.test/hook",  # a name that resolves to a private address
        "http://user:secret@hooks.public.test/hook",  # credentials in the URL
    ],
)
async def test_a_callback_the_guard_would_refuse_is_refused_at_submit(
    redis: Redis, url: str
) -> None:
    submissions = _submissions(redis, EgressGuard(EgressPolicy(), resolver=_resolve))
    with pytest.raises(BlockedURL) as refused:
        await submissions.submit("tenant-a", _run(url), None)
    assert (refused.value.status, refused.value.slug) == (400, "blocked-url")
    assert await redis.keys("test:run:*") == []  # nothing was accepted


@pytest.mark.parametrize(
    "url", ["http://hooks.public.test/hook", "https://not-resolvable-yet.test/hook"]
)
async def test_a_callback_the_guard_lets_through_is_accepted(redis: Redis, url: str) -> None:
    # A name that does not resolve yet is checked again, and pinned, at delivery.
    submissions = _submissions(redis, EgressGuard(EgressPolicy(), resolver=_resolve))
    submitted = await submissions.submit("tenant-a", _run(url), None)
    assert submitted.created and submitted.run.callback_url == url


async def test_an_allow_list_binds_callbacks_at_submit(redis: Redis) -> None:
    policy = EgressPolicy(allowed_hosts=("hooks.allowed.test",))
    submissions = _submissions(redis, EgressGuard(policy, resolver=_resolve))
    with pytest.raises(BlockedURL, match="allow-list"):
        await submissions.submit("tenant-a", _run("http://hooks.public.test/hook"), None)


async def test_without_a_webhook_secret_a_callback_is_refused(redis: Redis) -> None:
    with pytest.raises(WebhooksNotConfigured):
        await _submissions(redis, None).submit("tenant-a", _run("http://hooks.public.test/"), None)
