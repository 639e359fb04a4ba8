"""A page that answers with a malformed response (a redirect's `Location` that is not a URL,
a broken `Content-Length`, a charset that is no text encoding...) is a tool error the model
reads, never an exception that escapes the tool. Served by a real server on loopback that
writes its answers byte for byte, as a hostile or broken site would."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from podcrew_core.contracts.errors import ToolError
from podcrew_research.loop import Researcher
from podcrew_research.tools.fetch_url import (
    EgressPolicy,
    Fetcher,
    create_fetch_client,
    fetch_url_tool,
)


def _redirect(location: bytes) -> bytes:
    return b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"


def _text(headers: bytes, body: bytes = b"hello") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + headers + b"\r\n" + body


# path -> the exact bytes the server answers with, and what the model must hear.
MALFORMED = {
    "/ipv6-unclosed": (_redirect(b"http://[::1"), "(?i)location"),
    "/ipv6-invalid": (_redirect(b"//[zz]/"), "(?i)location"),
    "/space-in-host": (_redirect(b"http://exa mple.com/"), "resolve"),
    "/empty": (_redirect(b""), "without one usable Location"),
    "/two-locations": (
        b"HTTP/1.1 302 Found\r\nLocation: /a\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n",
        "without one usable Location",
    ),
    "/ftp": (_redirect(b"ftp://example.com/file"), "only http and https"),
    "/javascript": (_redirect(b"javascript:alert(1)"), "malformed Location"),
    "/data": (_redirect(b"data:text/plain,hi"), "malformed Location"),
    "/bad-port": (_redirect(b"http://127.0.0.1:99999/"), "not a TCP port"),
    "/too-long": (_redirect(b"http://" + b"a" * 70_000 + b".com/"), "(?i)location"),
    "/content-length-word": (_text(b"Content-Length: abc\r\n"), "Content-Length"),
    "/content-length-negative": (_text(b"Content-Length: -5\r\n"), "Content-Length"),
    "/content-length-short": (_text(b"Content-Length: 100\r\n"), "complete message body"),
    "/bad-chunk": (_text(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"), "chunk"),
    "/bad-gzip": (_text(b"Content-Encoding: gzip\r\nContent-Length: 5\r\n"), "Decoding"),
    "/bad-status": (b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", "status line"),
    "/not-http": (b"\x00\x01garbage\r\n\r\n", "status line"),
    "/bad-header": (b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 5\r\n\r\nhello", "header"),
}

# A charset Python has no text codec for is read as UTF-8, as a browser falls back.
ODD_CHARSETS = ["x-nonsense", "base64", "rot13", "idna", "undefined", "zlib_codec"]


def _answer(path: str) -> bytes:
    if path.startswith("/charset/"):
        charset = path.removeprefix("/charset/").encode()
        return _text(b"Content-Type: text/plain; charset=" + charset + b"\r\nContent-Length: 5\r\n")
    if path in MALFORMED:
        return MALFORMED[path][0]
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def _serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed: the test is over
            return
        with conn:
            request = conn.recv(65536)
            path = request.split(b" ", 2)[1].decode()
            conn.sendall(_answer(path))


@pytest.fixture(scope="module")
def raw_server() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(5)


LOCAL = EgressPolicy(allow_private=True, timeout_s=5.0)


@pytest.mark.parametrize("path", list(MALFORMED))
async def test_a_malformed_response_is_a_tool_error(raw_server: str, path: str) -> None:
    async with create_fetch_client(LOCAL) as client:
        tool = fetch_url_tool(Fetcher(client, LOCAL))
        with pytest.raises(ToolError, match=MALFORMED[path][1]):
            await tool.run({"url": raw_server + path})


@pytest.mark.parametrize("charset", ODD_CHARSETS)
async def test_a_charset_that_is_no_text_encoding_reads_as_utf8(
    raw_server: str, charset: str
) -> None:
    async with create_fetch_client(LOCAL) as client:
        page = await Fetcher(client, LOCAL).fetch(f"{raw_server}/charset/{charset}")
    assert page.text == "hello"


async def test_the_model_hears_of_a_malformed_redirect(
    raw_server: str, recording_provider: Any
) -> None:
    async with create_fetch_client(LOCAL) as client:
        researcher = Researcher(
            recording_provider, [fetch_url_tool(Fetcher(client, LOCAL))], model="test-model"
        )
        url = f"{raw_server}/javascript"
        result = await researcher.research(sub_question=f"What does {url} say?", question=url)

    (call,) = result.tool_calls
    assert (call.name, call.input, call.ok) == ("fetch_url", {"url": url}, False)
    assert call.error is not None and "malformed Location" in call.error
    told = [
        block
        for request in recording_provider.requests
        for message in request.messages
        if message.role == "user"
        for block in message.blocks()
        if getattr(block, "is_error", False)
    ]
    assert [block.content for block in told] == [call.error]
