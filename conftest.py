"""Test-wide safety: no test talks to anything but loopback, and no real LLM is reachable.

Every socket connection a test process opens to a non-loopback address fails the test at
once, and the Anthropic SDK is pointed at a closed loopback port with no key, so a
misconfigured test can neither call the real API nor send a packet off this machine.
(Processes the tests start get their LLM endpoint explicitly, from the launcher.)
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like stay on this machine
        return True
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False  # an unresolved name: nothing in the tests should need one


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if not _loopback(address):
            raise AssertionError(
                f"a test tried to connect to {address!r}: only loopback is allowed"
            )
        return real(self, address)

    return connect


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    os.environ.pop("ANTHROPIC_API_KEY", None)
    os.environ.pop("ANTHROPIC_AUTH_TOKEN", None)
    os.environ["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"  # discard port: nothing answers
    socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
