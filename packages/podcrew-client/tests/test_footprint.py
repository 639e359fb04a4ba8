"""podcrew-client is for applications: it brings podcrew's light contracts, httpx and
tenacity, and no web framework, Redis client or model SDK."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

HEAVY = {"fastapi", "starlette", "uvicorn", "anthropic", "redis", "grpcio", "aiohttp"}


def _closure(dist: str) -> set[str]:
    """Every distribution `dist` needs (no extras), by the installed metadata."""
    seen: set[str] = set()
    todo = [(dist, frozenset[str]())]
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


def test_the_client_distribution_needs_no_heavy_dependency() -> None:
    needed = _closure("podcrew-client")
    assert {"podcrew-core", "httpx", "httpx-sse", "tenacity"} <= needed
    assert needed & HEAVY == set()


def test_the_client_imports_no_heavy_module() -> None:
    code = (
        "import sys, podcrew_client; "
        "print(','.join(sorted(m for m in ('fastapi', 'starlette', 'anthropic', 'redis', "
        "'uvicorn', 'podcrew_core.runtime', 'podcrew_core.llm') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
