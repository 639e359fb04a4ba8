"""OpenTelemetry tracing, configured by the standard `OTEL_*` variables and nothing else.

Tracing is on when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not `true`. Otherwise no SDK
is installed: the API's no-op tracer only carries incoming trace context along, so the cost
is a few attribute lookups per request.

The exporter speaks `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `http/protobuf` (the default
here, port 4318) or `grpc` (port 4317). Sampling is `OTEL_TRACES_SAMPLER` (e.g.
`parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG`), propagation `OTEL_PROPAGATORS`
(default `tracecontext,baggage`), batching `OTEL_BSP_*`, the resource `OTEL_SERVICE_NAME`
and `OTEL_RESOURCE_ATTRIBUTES` (the service name given in code is only the default).

GenAI spans follow the OpenTelemetry GenAI semantic conventions: `invoke_agent {agent}`,
`execute_tool {tool}` and `chat {model}` (the last from `llm.metered`). Message content is
recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from podcrew_core.runtime.logging import current_run_id

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

TRACER_NAME: Final = "podcrew"
PROTOCOLS: Final = ("http/protobuf", "grpc")
DEFAULT_PROTOCOL: Final = "http/protobuf"
CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Probes and scrapes would otherwise be most of the traces.
UNTRACED_URLS: Final = "/healthz,/readyz,/metrics"

# GenAI semantic-convention attribute names (gen_ai.system is deprecated: provider.name).
OPERATION: Final = "gen_ai.operation.name"
PROVIDER: Final = "gen_ai.provider.name"
AGENT_NAME: Final = "gen_ai.agent.name"
CONVERSATION: Final = "gen_ai.conversation.id"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_TYPE: Final = "gen_ai.tool.type"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
ERROR_TYPE: Final = "error.type"
RUN_ID: Final = "podcrew.run.id"
# The prompt set version(s) a span's work used (podcrew_core.llm.prompts).
PROMPT_VERSION: Final = "podcrew.prompt_version"

_provider: dict[str, TracerProvider] = {}  # the process's SDK provider, once configured


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def tracing_enabled() -> bool:
    """An OTLP endpoint is configured and the SDK is not disabled."""
    if _env_true("OTEL_SDK_DISABLED"):
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def capture_content() -> bool:
    """Prompts and completions go into spans only when asked for: they may hold user data."""
    return _env_true(CAPTURE_CONTENT_ENV)


def otlp_protocol() -> str:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or DEFAULT_PROTOCOL
    ).strip()
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use "
            + " or ".join(PROTOCOLS)
        )
    return protocol


def create_exporter() -> SpanExporter:
    """The OTLP span exporter for the configured protocol; it reads its own endpoint,
    headers, timeout and TLS settings from the `OTEL_EXPORTER_OTLP_*` variables."""
    if otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def configure_tracing(service: str) -> bool:
    """Install the SDK for this process when tracing is enabled; True if it is on.

    `service` is the default `service.name`; `OTEL_SERVICE_NAME` and
    `OTEL_RESOURCE_ATTRIBUTES` win over it. Idempotent: the first call configures.
    """
    if not tracing_enabled():
        return False
    if _provider:
        return True
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: service}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(create_exporter()))
    trace.set_tracer_provider(provider)
    _provider["sdk"] = provider
    os.environ.setdefault("OTEL_PYTHON_HTTPX_EXCLUDED_URLS", UNTRACED_URLS)
    # Research fetches (httpx's own transport) carry `traceparent` and get client spans; the
    # internal client, on another transport, is instrumented where it is created
    # (`instrument_http_client`). The anthropic SDK's client (httpx2) is not touched: LLM
    # calls get GenAI `chat` spans from MeteredProvider instead.
    HTTPXClientInstrumentor().instrument()
    return True


def instrument_http_client(client: httpx.AsyncClient) -> None:
    """Client spans and `traceparent` for a client whose transport is not httpx's own
    (`HTTPXClientInstrumentor().instrument()` patches only `httpx.AsyncHTTPTransport`).
    No-op when tracing is off; before or after `configure_tracing` alike (the spans go to
    the global tracer provider, whenever it is set)."""
    if not tracing_enabled():
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client)


def flush_tracing(timeout_ms: int = 5000) -> None:
    """Export the spans still buffered (at shutdown); no-op when tracing is off."""
    provider = _provider.get("sdk")
    if provider is not None:
        provider.force_flush(timeout_ms)


def instrument_app(app: FastAPI) -> None:
    """Server spans for every request (context extracted from `traceparent`), when on."""
    if not tracing_enabled():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"]
    )


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


# --- context across the run queue ---------------------------------------------------------


def inject_context() -> dict[str, str]:
    """The current trace context as fields (`traceparent`, maybe `tracestate`, `baggage`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(fields: Mapping[str, str]) -> Context:
    """The trace context stored with a queue entry (an empty context if none)."""
    return propagate.extract(dict(fields))


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a (sampled or not) trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def record_prompt_version(version: str | None) -> None:
    """Tag the current span with the prompt set version(s) its work used, when known."""
    if version:
        trace.get_current_span().set_attribute(PROMPT_VERSION, version)


# --- GenAI spans ---------------------------------------------------------------------------


def mark_failed(span: Span, error_type: str, detail: str | None = None) -> None:
    """Set `error.type` and the error status on a span (a bounded type, a short detail)."""
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, (detail or error_type)[:200]))


def record_error(span: Span, error: BaseException, error_type: str | None = None) -> None:
    mark_failed(span, error_type or error.__class__.__name__, str(error))


@contextmanager
def invoke_agent_span(
    agent: str,
    *,
    remote: bool,
    run_id: str | None = None,
    context: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """`invoke_agent {agent}`: CLIENT when the agent is another service, INTERNAL in-process."""
    attrs: dict[str, Any] = {OPERATION: "invoke_agent", AGENT_NAME: agent}
    run_id = run_id or current_run_id()
    if run_id:
        attrs[CONVERSATION] = run_id
        attrs[RUN_ID] = run_id
    attrs.update(attributes or {})
    with tracer().start_as_current_span(
        f"invoke_agent {agent}",
        context=context,
        kind=SpanKind.CLIENT if remote else SpanKind.INTERNAL,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc, getattr(exc, "slug", None))
            raise


@contextmanager
def execute_tool_span(tool: str, call_id: str) -> Iterator[Span]:
    """`execute_tool {tool}` for one tool call of the research loop."""
    attrs: dict[str, Any] = {
        OPERATION: "execute_tool",
        TOOL_NAME: tool,
        TOOL_TYPE: "function",
        TOOL_CALL_ID: call_id,
    }
    run_id = current_run_id()
    if run_id:
        attrs[CONVERSATION] = run_id
    with tracer().start_as_current_span(
        f"execute_tool {tool}",
        kind=SpanKind.INTERNAL,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc)
            raise
