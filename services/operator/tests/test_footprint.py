"""The operator installs and imports only the light part of podcrew-core: no web framework,
model SDK, Redis client or gRPC exporter comes with it."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

# aiohttp is not listed: kopf itself runs on it.
HEAVY = {"fastapi", "starlette", "uvicorn", "anthropic", "redis", "grpcio"}


def _closure(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution `dist` (with `extras`) needs, by the installed metadata."""
    seen: set[str] = set()
    todo = [(dist, extras)]
    while todo:
        name, wanted = todo.pop()
        for line in requires(name) or []:
            req = Requirement(line)
            env = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in env):
                continue
            key = req.name.lower().replace("_", "-")
            if key not in seen:
                seen.add(key)
                todo.append((key, frozenset(req.extras)))
    return seen


def test_operator_distribution_needs_no_heavy_dependency() -> None:
    needed = _closure("podcrew-operator")
    assert "podcrew-core" in needed
    assert needed & HEAVY == set()


def test_services_still_get_theirs() -> None:
    # The check above could pass by reading nothing; the services' closure shows it reads.
    assert {"fastapi", "anthropic", "redis"} <= _closure("podcrew-research-agent")


def test_operator_imports_no_heavy_module() -> None:
    code = (
        "import sys, podcrew_operator.__main__, podcrew_operator.handlers; "
        "print(','.join(sorted(m for m in ('fastapi', 'anthropic', 'redis', 'grpc', "
        "'uvicorn') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
