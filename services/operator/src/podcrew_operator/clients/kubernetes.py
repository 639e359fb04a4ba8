"""The few Kubernetes API calls the operator makes itself (kopf makes the rest): AgentRun
status patches while a run goes on, the report's ConfigMap, and the TTL deletion.

Credentials come from kopf's login (`connect()` is called by the login handler), so the
operator authenticates one way, in-cluster or from a kubeconfig.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import (
    ConfigMapNotOwned,
    KubernetesRejected,
    KubernetesUnavailable,
    ObjectGone,
)
from ..report import is_owned_by
from ..resource import GROUP, PLURAL, VERSION
from ..retry import retry_after_s, should_retry_status

MERGE_PATCH = "application/merge-patch+json"
TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate to it."""

    server: str
    headers: Mapping[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True


@dataclass(frozen=True, slots=True)
class ObjectRef:
    namespace: str
    name: str


def _status_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", "")) if isinstance(body, dict) else response.text[:200]


class KubernetesClient:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._connection: Connection | None = None

    async def connect(self, connection: Connection) -> None:
        """Use these credentials from now on (called at each login, e.g. a rotated token)."""
        if connection == self._connection:
            return
        old, self._connection = self._http, connection
        self._http = httpx.AsyncClient(
            base_url=connection.server,
            headers=dict(connection.headers),
            verify=connection.verify,
            timeout=TIMEOUT_S,
            transport=self._transport,
        )
        if old is not None:
            await old.aclose()

    @property
    def connected(self) -> bool:
        """Whether a login has given this client its credentials."""
        return self._http is not None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        if self._http is None:
            raise KubernetesUnavailable(
                "not logged in to the Kubernetes API yet", retry_after_s=1.0
            )
        try:
            response = await self._http.request(
                method, path, json=json, headers={"Content-Type": content_type}
            )
        except httpx.TransportError as exc:
            raise KubernetesUnavailable(
                f"{method} {path}: the Kubernetes API is unreachable ({exc.__class__.__name__})"
            ) from exc
        if response.status_code == 401 or should_retry_status(response.status_code):
            # 401: the token expired or rotated; kopf logs in again and calls connect().
            raise KubernetesUnavailable(
                f"{method} {path}: {response.status_code} {_status_message(response)}",
                retry_after_s=retry_after_s(response.headers.get("retry-after"), time.time()),
            )
        return response

    def _refuse(self, what: str, response: httpx.Response) -> KubernetesRejected:
        return KubernetesRejected(
            f"{what}: {response.status_code} {_status_message(response)}",
            status=response.status_code,
        )

    @staticmethod
    def _agentrun_path(ref: ObjectRef) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{ref.namespace}/{PLURAL}/{ref.name}"

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any]) -> None:
        """Merge `status` into the AgentRun's status (the status subresource)."""
        path = self._agentrun_path(ref) + "/status"
        response = await self._request(
            "PATCH", path, json={"status": dict(status)}, content_type=MERGE_PATCH
        )
        if response.status_code == 404:
            raise ObjectGone(f"AgentRun {ref.namespace}/{ref.name} is gone")
        if response.status_code != 200:
            raise self._refuse(f"patch status of {ref.namespace}/{ref.name}", response)

    async def delete_agentrun(self, ref: ObjectRef, uid: str) -> None:
        """Delete the AgentRun, only if it is still the object with `uid` (not a namesake)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        response = await self._request("DELETE", self._agentrun_path(ref), json=body)
        if response.status_code in (200, 202, 404, 409):  # 409: the uid precondition failed
            return
        raise self._refuse(f"delete {ref.namespace}/{ref.name}", response)

    async def apply_config_map(self, body: Mapping[str, Any], owner_uid: str) -> None:
        """Create the ConfigMap, or update it if it is already ours (a retried write); one
        that belongs to anything else is never touched."""
        meta = body["metadata"]
        collection = f"/api/v1/namespaces/{meta['namespace']}/configmaps"
        response = await self._request("POST", collection, json=dict(body))
        if response.status_code in (200, 201):
            return
        if response.status_code != 409:
            raise self._refuse(f"create ConfigMap {meta['name']}", response)
        path = f"{collection}/{meta['name']}"
        existing = await self._request("GET", path)
        if existing.status_code != 200:
            raise self._refuse(f"read ConfigMap {meta['name']}", existing)
        if not is_owned_by(existing.json(), owner_uid):
            raise ConfigMapNotOwned(
                f"ConfigMap {meta['name']} already exists and is not owned by this AgentRun"
            )
        patch = {
            "metadata": {"labels": meta.get("labels"), "annotations": meta.get("annotations")},
            "data": body["data"],
        }
        response = await self._request("PATCH", path, json=patch, content_type=MERGE_PATCH)
        if response.status_code != 200:
            raise self._refuse(f"update ConfigMap {meta['name']}", response)
