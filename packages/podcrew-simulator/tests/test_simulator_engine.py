"""The simulated Messages API's pieces without HTTP: parsing, answers, caching, faults."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from podcrew_core.llm.types import TextBlock, ToolUseBlock
from podcrew_simulator import FaultProfile, SimulatorSettings
from podcrew_simulator.engine import CallLog, FaultDice, PromptCache, answer, prompt_layout
from podcrew_simulator.wire import MessagesRequest, parse_request, pieces, stream_events

EPHEMERAL = {"type": "ephemeral"}
SEARCH = {
    "name": "kb_search",
    "description": "Search the knowledge base.",
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1}, "k": {"default": 5}},
        "required": ["query"],
    },
}
FETCH = {
    "name": "fetch_url",
    "description": "Fetch a page.",
    "input_schema": {
        "type": "object",
        "properties": {"url": {"type": "string", "format": "uri"}},
        "required": ["url"],
    },
}


def _request(**fields: Any) -> MessagesRequest:
    question = json.dumps({"sub_question": "What is X?", "question": "Q?"})
    body = {
        "model": "m",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": question}],
    }
    return MessagesRequest.model_validate(body | fields)


@pytest.mark.parametrize(
    "text", ["", " ", "one", "  leading and trailing  ", "lines\n\nand  gaps\tand tabs ", "x " * 50]
)
def test_pieces_concatenate_back_to_the_text(text: str) -> None:
    assert "".join(pieces(text)) == text


@pytest.mark.parametrize("words", [1, 2, 4])
def test_pieces_are_runs_of_words_each_with_the_whitespace_after_it(words: int) -> None:
    lead, rest = "  ", "lead one two\n\nthree\tfour five six  seven eight nine "
    each = re.findall(r"\S+\s*", rest)
    expected = ["".join(each[i : i + words]) for i in range(0, len(each), words)]
    expected[0] = lead + expected[0]  # leading whitespace goes with the first piece
    assert pieces(lead + rest, words) == expected
    assert pieces("   ", words) == ["   "] and pieces("", words) == []


def test_pieces_split_json_between_tokens() -> None:
    payload = {"query": 'caf\u00e9 \\ "quoted" and more words here', "k": 5}
    parts = pieces(json.dumps(payload))
    assert len(parts) > 1
    assert json.loads("".join(parts)) == payload


def test_a_forced_choice_is_answered_with_tool_calls_only() -> None:
    request = _request(tools=[SEARCH, FETCH], tool_choice={"type": "any"})
    reply = answer(request, PromptCache(10))
    assert reply.stop_reason == "tool_use"
    assert reply.content and all(isinstance(b, ToolUseBlock) for b in reply.content)
    forced = answer(
        _request(tools=[SEARCH, FETCH], tool_choice={"type": "tool", "name": "fetch_url"}),
        PromptCache(10),
    )
    [call] = forced.content
    assert isinstance(call, ToolUseBlock) and call.name == "fetch_url" and call.input["url"]


def test_max_tokens_cuts_text_and_drops_an_unfinished_call() -> None:
    request = _request(tools=[SEARCH], max_tokens=3)
    reply = answer(request, PromptCache(10))
    assert reply.stop_reason == "max_tokens"
    assert [type(b) for b in reply.content] == [TextBlock]
    assert reply.usage["output_tokens"] <= 3


def test_parse_request_reports_where_the_request_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^messages\.0\.content"):
        parse_request(b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}')
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_request(b"{")
    with pytest.raises(ValueError, match="'any' requires at least one tool"):
        parse_request(
            b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],'
            b' "tool_choice": {"type": "any"}}'
        )


USE = {"type": "tool_use", "id": "toolu_1", "name": "kb_search", "input": {"query": "q"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "[]"}


@pytest.mark.parametrize(
    ("messages", "complaint"),
    [
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": "go on"},
            ],
            "without tool_result",
        ),
        ([{"role": "user", "content": [RESULT]}], "unexpected tool_use_id"),
        ([{"role": "user", "content": [{"type": "text", "text": " "}]}], "must be non-empty"),
        ([{"role": "user", "content": []}], "non-empty content"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "q"},
            ],
            "non-empty content",
        ),
    ],
)
def test_conversations_the_api_refuses_are_refused(
    messages: list[dict[str, Any]], complaint: str
) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": messages}
    with pytest.raises(ValueError, match=complaint):
        parse_request(json.dumps(body).encode())


def test_a_complete_tool_exchange_and_a_final_empty_assistant_turn_are_accepted() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "Searching."}, USE]},
        {"role": "user", "content": [RESULT, {"type": "text", "text": "Now submit."}]},
        {"role": "assistant", "content": []},
    ]
    body = {"model": "m", "max_tokens": 5, "messages": messages}
    assert len(parse_request(json.dumps(body).encode()).messages) == 4


def test_at_most_four_cache_marks() -> None:
    marked = [{"type": "text", "text": f"part {n}", "cache_control": EPHEMERAL} for n in range(4)]
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}
    parse_request(json.dumps(body | {"system": marked}).encode())
    with pytest.raises(ValueError, match="A maximum of 4 blocks with cache_control"):
        parse_request(json.dumps(body | {"system": marked, "cache_control": EPHEMERAL}).encode())


def test_stream_events_report_cumulative_usage_once_at_the_end() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    content = [TextBlock(text="a b c d e f g h i"), ToolUseBlock(id="t", name="n", input={})]
    events = stream_events(
        message_id="msg_1", model="m", content=content, stop_reason="tool_use", usage=usage
    )
    assert events[0]["message"]["usage"]["output_tokens"] == 1
    assert events[-2]["usage"] == usage
    text = "".join(
        e["delta"]["text"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0
    )
    assert text == "a b c d e f g h i"


def test_prompt_cache_reads_the_longest_cached_prefix_and_expires() -> None:
    now = [0.0]
    cache = PromptCache(max_entries=10, clock=lambda: now[0])
    tools = [SEARCH | {"cache_control": EPHEMERAL}]
    first_system = [{"type": "text", "text": "s" * 400, "cache_control": EPHEMERAL}]
    total, points = prompt_layout(_request(tools=tools, system=first_system))
    assert len(points) == 2 and points[-1].prefix_tokens < total
    assert cache.account(points) == (points[1].prefix_tokens, 0)
    assert cache.account(points) == (0, points[1].prefix_tokens)

    _, other = prompt_layout(_request(tools=tools, system="t" * 400))
    assert cache.account(other) == (0, points[0].prefix_tokens)  # tools only, no mark after

    now[0] += 301  # past the default five minutes
    assert cache.account(points) == (points[1].prefix_tokens, 0)


def test_prompt_cache_is_per_model_and_bounded() -> None:
    cache = PromptCache(max_entries=2)
    system = [{"type": "text", "text": "s" * 40, "cache_control": EPHEMERAL}]
    _, a = prompt_layout(_request(system=system))
    _, b = prompt_layout(_request(system=system, model="other"))
    assert a[0].digest != b[0].digest
    cache.account(a)
    for n in range(2):
        _, filler = prompt_layout(_request(system=[system[0] | {"text": f"filler {n}"}]))
        cache.account(filler)
    assert cache.account(a)[1] == 0  # evicted


def test_top_level_cache_control_marks_the_whole_prompt() -> None:
    total, points = prompt_layout(_request(cache_control=EPHEMERAL))
    assert [p.prefix_tokens for p in points] == [total]


def test_fault_dice_give_each_fault_its_share_and_replay_with_a_seed() -> None:
    profile = FaultProfile(rate_429=0.1, rate_529=0.05, rate_500=0.05, rate_slow=0.1, rate_drop=0.2)
    dice = FaultDice(seed=7)
    counts = Counter(dice.draw(profile) for _ in range(20_000))
    for fault, rate in profile.rates().items():
        assert counts[fault] / 20_000 == pytest.approx(rate, abs=0.01)
    assert counts[None] / 20_000 == pytest.approx(0.5, abs=0.01)

    replay, again = FaultDice(seed=3), FaultDice(seed=3)
    sequence = [replay.draw(profile) for _ in range(50)]
    assert [again.draw(profile) for _ in range(50)] == sequence
    dice.reseed(3)
    assert [dice.draw(profile) for _ in range(50)] == sequence


def test_fault_rates_may_not_exceed_one_call_in_total() -> None:
    with pytest.raises(ValidationError, match=r"add up to 1\.2"):
        FaultProfile(rate_429=0.6, rate_drop=0.6)
    with pytest.raises(ValidationError):
        FaultProfile(rate_500=1.5)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODCREW_SIM_PORT", "9311")
    monkeypatch.setenv("PODCREW_SIM_RATE_529", "0.25")
    monkeypatch.setenv("PODCREW_SIM_REQUIRE_API_KEY", "false")
    settings = SimulatorSettings()
    assert settings.port == 9311 and settings.require_api_key is False
    assert settings.fault_profile().rate_529 == 0.25
    assert SimulatorSettings.model_fields["rate_529"].description
    assert all(f.description for f in SimulatorSettings.model_fields.values())


def test_call_log_is_bounded_but_counts_every_call() -> None:
    log = CallLog(size=2)
    records = [log.open(f"req_{n}") for n in range(3)]
    for record in records:
        log.close(record, 200)
    assert [c["id"] for c in log.calls()] == ["req_1", "req_2"]
    assert log.stats()["received"] == 3 and log.stats()["by_status"] == {"200": 3}

    in_flight = log.open("req_late")
    assert log.clear() == 2
    log.close(in_flight, 200)  # began before the reset: not counted after it
    assert log.stats()["received"] == 0 and log.stats()["finished"] == 0


def test_call_log_keeps_finished_calls_as_the_json_it_serves() -> None:
    log = CallLog(size=3)
    done, in_flight = log.open("req_done"), log.open("req_in_flight")
    done.usage = {"input_tokens": 5, "output_tokens": 2}
    done.tools_offered = ["kb_search"]
    log.close(done, 200)
    assert log.calls_json() == orjson.dumps(log.calls())
    first, second = log.calls()
    assert first == done.to_json() and first["status"] == 200
    assert first["tools_offered"] == ["kb_search"]
    assert second["id"] == "req_in_flight" and second["status"] is None  # listed while open

    late = log.open("req_late")
    for n in range(3):  # pushes every call above out of the log
        log.close(log.open(f"req_{n}"), 200)
    log.close(in_flight, 200)
    log.close(late, 500)  # closing an evicted call brings it back neither
    assert [c["id"] for c in log.calls()] == ["req_0", "req_1", "req_2"]
    assert log.stats()["finished"] == 6 and log.stats()["by_status"] == {"200": 5, "500": 1}


def test_tool_layout_tells_values_apart_that_json_writes_alike() -> None:
    def layout(value: object) -> tuple[int, str]:
        schema = {"type": "object", "properties": {"k": {"type": "number", "default": value}}}
        tool = {"name": "t", "input_schema": schema, "cache_control": EPHEMERAL}
        total, [point] = prompt_layout(_request(tools=[tool]))
        return total, point.digest

    assert layout(float("nan")) != layout(None)
    assert layout(1) != layout(True) and layout(1) != layout(1.0)
    assert layout(float("nan")) == layout(float("nan"))  # and are stable from call to call


def test_layout_counts_every_part_of_the_prompt() -> None:
    bare, _ = prompt_layout(_request())
    with_tools, _ = prompt_layout(_request(tools=[SEARCH]))
    with_system, _ = prompt_layout(_request(system="You research. " * 20))
    assert bare < with_tools and bare < with_system
