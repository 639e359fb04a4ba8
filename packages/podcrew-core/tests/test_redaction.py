"""Logs never carry secrets or personal data, whatever field they arrive in."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from podcrew_core.runtime.logging import configure_logging, redact_text


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("key sk-ant-api03-abcdefghijklmnopqrstuvwx used", "[key]"),
        ("Authorization: Bearer abcdef0123456789.xyz", "[key]"),
        ("aws AKIAABCDEFGHIJKLMNOP", "[key]"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "[key]"),
        ("write to jane.doe+lists@example.co.uk please", "[email]"),
        ("call +1 (415) 555-0132 now", "[phone]"),
        ("call 030 1234 5678", "[phone]"),
        ("call 030 1234 5678.", "[phone]."),
        ("ring 415-555-0132 today", "[phone]"),
        ("ring (415) 555-0132", "[phone]"),
        ("mobile 0612345678", "[phone]"),
        ("mobile 06 12 34 56 78", "[phone]"),
        ("whatsapp +14155550132", "[phone]"),
    ],
)
def test_sensitive_values_are_masked(text: str, kind: str) -> None:
    masked = redact_text(text)
    assert kind in masked
    assert not any(
        secret in masked
        for secret in ("abcdefgh", "jane.doe", "555-0132", "1234 5678", "12345678", "34 56 78")
    )


@pytest.mark.parametrize(
    "text",
    [
        "run run_0123456789abcdef took 1.25 s",
        "version 3.11.7",
        "HTTP 429 after 2 attempts",
        "finished 2026-11-23T15:31:38.073318Z",
        "entry 1795447982564-0",
        "Cannot connect to host 127.0.0.1:8081",
        "peer 10.244.12.130 reset the connection",
        "research agent at 10.0.0.12",
        "POST http://127.0.0.1:8101/v1/research failed",
        "GET http://10.0.0.12:8080/docs/12345678 answered 404",
        "Cannot connect to host 127.0.0.1:8081 ssl:default [('127.0.0.1', 8081)]",
        "podcrew 1.2.3.4567 on redis 7.0.15",
        "started at 1718000000.123456, waited 0.123456789 s",
        "took 1234567890 ms",
        "at 2026-11-23 15:31:38 and 23-11-2026",
        "run run_0123456789abcdef0123456789abcdef queued",
        "delivery 5f0c2c1e-1234-5678-9abc-def012345678",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_log_lines_are_scrubbed_but_ids_kept(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", "INFO")
    structlog.get_logger("t").info(
        "llm_call",
        question="mail me at a.b@example.com",
        api_key="sk-ant-api03-abcdefghijklmnopqrstuvwx",
        nested={"authorization": "Bearer abc", "note": "+44 20 7946 0958"},
        run_id="run_0123456789",
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["question"] == "mail me at [email]"
    assert line["api_key"] == "[redacted]"
    assert line["nested"] == {"authorization": "[redacted]", "note": "[phone]"}
    assert line["run_id"] == "run_0123456789"
    logging.getLogger().handlers.clear()
