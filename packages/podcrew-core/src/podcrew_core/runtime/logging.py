"""JSON log lines through structlog, for podcrew's own loggers and the stdlib's alike.

Every line carries a timestamp, level, service, whatever is bound in the context (`run_id`
above all, so one `grep run_id` follows a run across every process) and, inside a trace, the
current `trace_id` and `span_id`, so a log line leads to its trace and back. Each run ends
with one `run_audit` line: who ran it, how it ended, what it called and what it cost.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from opentelemetry import trace
from structlog.types import EventDict, WrappedLogger

if TYPE_CHECKING:
    from podcrew_core.contracts.schemas import Run

REDACTED = "[redacted]"
_SECRET_KEYS = frozenset(
    {"authorization", "api_key", "x-api-key", "password", "token", "secret", "service_token"}
)
# Values that must not reach a log whatever field carries them: API keys and bearer tokens,
# e-mail addresses, phone numbers. Patterns err towards redacting too much, except where a
# log line needs the number to mean anything. A phone number is written with a leading `+`
# or `0` (a trunk prefix), or grouped by spaces, hyphens or parentheses. Numbers grouped by
# dots or colons (IP addresses, `host:port`, versions, decimals, times) are not phone
# numbers, nor is a plain run of digits that starts with 1-9 (a count, a Unix time, a
# duration), nor an ISO date or a Redis stream id: operators correlate by those.
_SENSITIVE = re.compile(
    r"(?P<key>\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}|\bgh[pousr]_[A-Za-z0-9]{20,})"
    r"|(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b)"
    r"|(?P<phone>(?<![\w.:/@-])(?!\d{4}-\d\d-\d\d|\d\d-\d\d-\d{4}|\d{13}-\d)"
    r"(?=\+|0|\(|\d+[ ()-]+\d)\+?[\d(][\d ()-]{6,}\d(?![\w:/-]|\.\d))"
)


def redact_text(text: str) -> str:
    """`text` with API keys, bearer tokens, e-mail addresses and phone numbers masked."""
    return _SENSITIVE.sub(lambda m: f"[{m.lastgroup}]", text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in _SECRET_KEYS else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# Values that cannot carry text: most fields of the lines written per LLM call are these.
_PLAIN = frozenset({int, float, bool, type(None)})


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Never log a secret or personal data, whatever field it was passed in."""
    for key, value in event.items():  # values replaced in place: the keys do not change
        if key in _TRUSTED_FIELDS:
            continue
        if key.lower() in _SECRET_KEYS:
            event[key] = REDACTED
        elif type(value) not in _PLAIN:
            event[key] = _scrub(value)
    return event


# Fields podcrew itself writes (ids, timestamps): never personal data, and redacting them
# (a timestamp looks like a phone number to a regex) would break correlation.
_TRUSTED_FIELDS = frozenset(
    {"timestamp", "level", "logger", "service", "run_id", "trace_id", "span_id", "tenant"}
)


def add_trace_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The current span's trace and span ids (W3C hex), when a trace is active."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route structlog and stdlib logging to JSON lines on stderr. Call once per process."""

    def add_service(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
        add_trace_context,
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
            foreign_pre_chain=shared,
        )
    )
    # No line shows where it was logged from, nor the thread or process: don't collect them
    # for every record (the "Optimization" advice of the logging docs).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Per-request lines come from podcrew's own middleware and metrics, not uvicorn's.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def bind_run(run_id: str) -> None:
    structlog.contextvars.bind_contextvars(run_id=run_id)


def current_run_id() -> str | None:
    """The run this task works for, as bound for logging (by `bind_run` or the middleware)."""
    run_id = structlog.contextvars.get_contextvars().get("run_id")
    return str(run_id) if run_id else None


def log_run_audit(run: Run, tools: Mapping[str, int] | None = None) -> None:
    """The one audit line of a run, written when it reaches its final state."""
    usage = run.usage
    duration_s = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    structlog.get_logger("podcrew.audit").info(
        "run_audit",
        run_id=run.id,
        tenant=run.tenant,
        status=run.status.value,
        error_type=run.error.type if run.error else None,
        tier=run.tier,
        cached=run.cached,
        attempts=run.attempts,
        thread_id=run.thread_id,
        tools=dict(sorted((tools or {}).items())),
        tool_calls=sum((tools or {}).values()),
        llm_calls=usage.llm_calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_creation_tokens=usage.cache_creation_input_tokens,
        total_tokens=usage.total_tokens,
        cost_usd=round(run.cost_usd or usage.cost_usd, 6),
        duration_s=round(duration_s, 3) if duration_s is not None else None,
    )
