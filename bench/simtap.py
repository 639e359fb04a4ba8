"""podcrew's simulated Messages API with a benchmark tap, run in place of `podcrew simulate-llm`.

The simulator's call log (`GET /_sim/calls`) has each call's timing but not which run it
served. The tap reads each request body on its way in and remembers, per call id (the
`request-id` the simulator answers with and logs), the bench tag of the run (`[bench:…]`,
which the load generator puts in every question and which every prompt of that run carries)
and, for research calls, the sub-question. `GET /_bench/calls` is the simulator's own log
with those two fields added. Nothing else changes: same app, same settings, same server.

Run as a script: `python bench/simtap.py` (reads `PODCREW_SIM_*` like the real one).
"""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podcrew_core.runtime.serve import serve
from podcrew_simulator.app import create_simulator_app
from podcrew_simulator.settings import SimulatorSettings

TAG = re.compile(rb"\[bench:([0-9A-Za-z_.-]+)\]")
# The research message is a JSON document inside the body's JSON: its quotes are escaped.
SUB_QUESTION = re.compile(rb'\\"sub_question\\": \\"(.*?)\\"')


class Tap:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tags: dict[str, tuple[str | None, str | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/_bench/calls":
            await self._calls(scope, receive, send)
            return
        if path != "/v1/messages":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        found: dict[str, str | None] = {"tag": None, "sub": None}

        async def tapped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = b"".join(chunks)
                    tag = TAG.search(body)
                    sub = SUB_QUESTION.search(body)
                    found["tag"] = tag.group(1).decode() if tag else None
                    found["sub"] = sub.group(1).decode("utf-8", "replace") if sub else None
            return message

        async def tapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name == b"request-id":
                        self.tags[value.decode()] = (found["tag"], found["sub"])
                        break
            await send(message)

        await self.app(scope, tapped_receive, tapped_send)

    async def _calls(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        simulator = app.state.simulator if app is not None else None
        if scope["method"] == "DELETE":
            self.tags.clear()
            if simulator is not None:
                simulator.calls.clear()
            body = b'{"cleared": true}'
        else:
            records = simulator.calls.calls() if simulator is not None else []
            for record in records:
                tag, sub = self.tags.get(record["id"], (None, None))
                record["tag"] = tag
                record["sub_question"] = sub
            body = orjson.dumps(records)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    settings = SimulatorSettings()
    app = create_simulator_app(settings)
    app.add_middleware(Tap)
    serve(app, settings)


if __name__ == "__main__":
    main()
