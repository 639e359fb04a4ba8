"""Who may call: tenants by API key on the public API, the orchestrator by a shared service
token on the agents' internal endpoints.

API keys are configured as SHA-256 hashes only (a Kubernetes Secret holds the hashes, the
clients hold the keys); a presented key is hashed and looked up, so no plaintext key is
ever in podcrew's memory longer than one request or in its configuration at all.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from podcrew_core.contracts.errors import Unauthorized
from podcrew_core.runtime.settings import PodcrewSettings

TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_BEARER = "bearer "


def hash_key(key: str) -> str:
    """The form in which an API key is configured: lowercase hex SHA-256 of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    tenant: str = Field(pattern=TENANT_PATTERN)
    """Tenant the key belongs to."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """hash_key(key)"""


def presented_key(request: Request) -> str | None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    header = request.headers.get("authorization")
    if header and header.lower().startswith(_BEARER):
        return header[len(_BEARER) :].strip() or None
    return request.headers.get("x-api-key") or None


def unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": 'Bearer realm="podcrew"'})


class KeyRing:
    """API key hash → tenant."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._tenants = {k.sha256: k.tenant for k in keys}

    def __bool__(self) -> bool:
        return bool(self._tenants)

    def tenant(self, key: str | None) -> str:
        if not key:
            raise unauthorized("missing API key: send Authorization: Bearer <key> or X-API-Key")
        tenant = self._tenants.get(hash_key(key))
        if tenant is None:
            raise unauthorized("unknown API key")
        return tenant


class ServiceTokenSettings(PodcrewSettings):
    """`PODCREW_SERVICE_TOKEN`: the secret the orchestrator presents to the agents."""

    model_config = SettingsConfigDict(
        env_prefix="PODCREW_", extra="ignore", use_attribute_docstrings=True
    )

    service_token: SecretStr | None = None
    """Shared secret the orchestrator sends to the agents (Bearer). When set, the agents refuse
    internal calls without it; when unset they accept any caller (local use only —
    NetworkPolicies in the chart still restrict who can connect)."""


def require_service_token(token: SecretStr | None) -> Callable[[Request], Awaitable[None]]:
    """A dependency for internal routes: only the orchestrator, holding the token, gets in."""
    expected = token.get_secret_value().encode() if token else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        presented = presented_key(request)
        if presented is None or not hmac.compare_digest(presented.encode(), expected):
            raise unauthorized("internal endpoint: a valid service token is required")

    return check


def service_auth_header(token: SecretStr | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token.get_secret_value()}"} if token else {}
