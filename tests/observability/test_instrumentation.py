"""Unit tests of the instrumentation itself: tracing configuration from `OTEL_*` alone, the
LLM meter (podcrew and GenAI metrics, `chat` spans, time to first token), the log processor
that adds trace ids, and the Redis command metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from prometheus_client import REGISTRY

from podcrew_core.contracts.errors import LLMServerError
from podcrew_core.llm import LLMRequest, Message, Stage
from podcrew_core.llm.metered import MeteredProvider, genai_provider_name
from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.llm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from podcrew_core.llm.types import LLMResponse, StreamEvent
from podcrew_core.runtime import tracing
from podcrew_core.runtime.logging import add_trace_context, bind_run, configure_logging
from podcrew_core.runtime.redis import OTHER_COMMAND, command_label

OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    tracing.CAPTURE_CONTENT_ENV,
)


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_tracing_is_off_without_an_otlp_endpoint(otel_env: pytest.MonkeyPatch) -> None:
    assert not tracing.tracing_enabled()
    assert tracing.configure_tracing("test") is False
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.tracing_enabled()
    otel_env.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.tracing_enabled()
    otel_env.delenv("OTEL_SDK_DISABLED")
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing.tracing_enabled()


def test_the_exporter_speaks_the_configured_protocol(otel_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.otlp_protocol() == "http/protobuf"  # the default here, said explicitly
    assert isinstance(tracing.create_exporter(), HttpExporter)
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert isinstance(tracing.create_exporter(), GrpcExporter)
    otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # per-signal wins
    assert tracing.otlp_protocol() == "http/protobuf"
    otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="not supported"):
        tracing.otlp_protocol()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK provider for this process (set once: OpenTelemetry allows one global)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def _request(stage: Stage = Stage.WRITE) -> LLMRequest:
    return LLMRequest(
        stage=stage,
        model="claude-haiku-4-5",
        system="You write.",
        messages=[Message(role="user", content="Write two sentences about generators.")],
        max_tokens=256,
    )


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


PRICES = PriceTable(DEFAULT_PRICES, ModelPrice(input=15, output=75))


async def test_a_streamed_call_records_ttft_genai_metrics_and_a_chat_span(
    spans: InMemorySpanExporter,
) -> None:
    meter = MeteredProvider(OfflineProvider(), PRICES)
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "podcrew.offline",
        "gen_ai_request_model": "claude-haiku-4-5",
    }
    ttft_before = _value(
        "podcrew_llm_time_to_first_token_seconds_count",
        provider="offline",
        model="claude-haiku-4-5",
        stage="write",
    )
    tokens = {**genai, "gen_ai_response_model": "claude-haiku-4-5"}
    out_before = _value("gen_ai_client_token_usage_sum", **tokens, gen_ai_token_type="output")
    spans.clear()
    final: LLMResponse | None = None
    with tracing.tracer().start_as_current_span("parent"):
        bind_run("run_test")
        async for event in meter.stream(_request()):
            final = getattr(event, "response", final)
    structlog.contextvars.clear_contextvars()
    assert final is not None
    assert (
        _value(
            "podcrew_llm_time_to_first_token_seconds_count",
            provider="offline",
            model="claude-haiku-4-5",
            stage="write",
        )
        == ttft_before + 1
    )
    assert _value("gen_ai_client_operation_time_to_first_chunk_seconds_count", **genai), (
        "GenAI time to first chunk"
    )
    out = _value("gen_ai_client_token_usage_sum", **tokens, gen_ai_token_type="output")
    assert out - out_before == final.usage.output_tokens
    (chat,) = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    attrs = dict(chat.attributes or {})
    assert chat.name == "chat claude-haiku-4-5" and chat.kind == trace.SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "podcrew.offline"
    assert attrs["gen_ai.conversation.id"] == "run_test"
    assert attrs["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert attrs["gen_ai.response.finish_reasons"] == (final.stop_reason,)
    assert "gen_ai.input.messages" not in attrs
    assert [e.name for e in chat.events] == ["gen_ai.first_chunk"]
    parent = next(s for s in spans.get_finished_spans() if s.name == "parent")
    assert chat.parent is not None and chat.parent.span_id == parent.context.span_id


class _Failing:
    name = "anthropic"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        raise LLMServerError("boom", upstream_status=500)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        raise LLMServerError("boom", upstream_status=500)
        yield  # pragma: no cover

    async def aclose(self) -> None:
        return None


async def test_a_failed_call_is_counted_with_its_error_type(spans: InMemorySpanExporter) -> None:
    meter = MeteredProvider(_Failing(), PRICES)
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "anthropic",
        "gen_ai_request_model": "claude-haiku-4-5",
        "gen_ai_response_model": "claude-haiku-4-5",
        "error_type": "500",
    }
    before = _value("gen_ai_client_operation_duration_seconds_count", **labels)
    spans.clear()
    with pytest.raises(LLMServerError):
        await meter.complete(_request(Stage.PLAN))
    assert _value("gen_ai_client_operation_duration_seconds_count", **labels) == before + 1
    (chat,) = spans.get_finished_spans()
    assert chat.status.status_code == trace.StatusCode.ERROR
    assert (chat.attributes or {})["error.type"] == "500"


async def test_a_cancelled_call_is_not_an_error(spans: InMemorySpanExporter) -> None:
    meter = MeteredProvider(OfflineProvider(latency_s=5), PRICES)
    call = asyncio.ensure_future(meter.complete(_request(Stage.PLAN)))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert _value(
        "podcrew_llm_requests_total",
        provider="offline",
        model="claude-haiku-4-5",
        stage="plan",
        outcome="cancelled",
    )


def test_message_content_is_recorded_only_when_asked(
    spans: InMemorySpanExporter, otel_env: pytest.MonkeyPatch
) -> None:
    otel_env.setenv(tracing.CAPTURE_CONTENT_ENV, "true")
    spans.clear()
    asyncio.run(MeteredProvider(OfflineProvider(), PRICES).complete(_request()))
    (chat,) = spans.get_finished_spans()
    messages = json.loads(str((chat.attributes or {})["gen_ai.input.messages"]))
    assert messages[0]["role"] == "user"
    assert "gen_ai.output.messages" in (chat.attributes or {})


def test_genai_provider_names() -> None:
    assert genai_provider_name("anthropic") == "anthropic"
    assert genai_provider_name("simulated") == "anthropic"  # the same API through the SDK
    assert genai_provider_name("offline") == "podcrew.offline"


def test_log_lines_carry_the_current_trace_and_span(
    spans: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    configure_logging("unit-test")
    try:
        with tracing.tracer().start_as_current_span("work") as span:
            structlog.get_logger("t").info("inside", run_id="run_1")
            logging.getLogger("stdlib").warning("stdlib inside")
        structlog.get_logger("t").info("outside")
    finally:
        logging.getLogger().handlers = []
        structlog.reset_defaults()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    context = span.get_span_context()
    for line in lines[:2]:
        assert line["trace_id"] == format(context.trace_id, "032x")
        assert line["span_id"] == format(context.span_id, "016x")
        assert line["service"] == "unit-test" and line["timestamp"] and line["level"]
    assert "trace_id" not in lines[2]


def test_redis_command_labels_are_bounded() -> None:
    assert command_label("xreadgroup") == "XREADGROUP"
    assert command_label(b"XINFO GROUPS") == "XINFO GROUPS"
    assert command_label("run_123:key") == OTHER_COMMAND
    assert command_label("X" * 40) == OTHER_COMMAND


async def test_redis_commands_are_timed_and_failures_counted() -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from podcrew_cli.stack import LOOPBACK, free_port
    from podcrew_core.runtime.redis import InstrumentedRedis

    client = InstrumentedRedis(
        host=LOOPBACK, port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    errors_before = _value(
        "podcrew_redis_command_errors_total", command="GET", error="ConnectionError"
    )
    timed_before = _value("podcrew_redis_command_duration_seconds_count", command="GET")
    with pytest.raises(Exception, match="onnect"):
        await client.get("k")
    pipe_before = _value("podcrew_redis_command_duration_seconds_count", command="MULTI")
    async with client.pipeline(transaction=True) as pipe:
        pipe.get("k")
        with pytest.raises(Exception, match="onnect"):
            await pipe.execute()
    await client.aclose()
    assert (
        _value("podcrew_redis_command_errors_total", command="GET", error="ConnectionError")
        == errors_before + 1
    )
    assert _value("podcrew_redis_command_duration_seconds_count", command="GET") == timed_before + 1
    assert (
        _value("podcrew_redis_command_duration_seconds_count", command="MULTI") == pipe_before + 1
    )
