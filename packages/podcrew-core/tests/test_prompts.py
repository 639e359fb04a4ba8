"""Prompt sets: a version names the exact texts and tool definitions, nothing else."""

from __future__ import annotations

import re

from podcrew_core.contracts.schemas import Plan
from podcrew_core.llm import ToolSpec, output_tool
from podcrew_core.llm.prompts import PromptSet, combine_versions
from podcrew_core.runtime.metrics import BoundedLabel

SEARCH = ToolSpec(name="search", description="Search.", input_schema={"type": "object"})
SUBMIT = output_tool("submit_plan", "Submit the plan.", Plan)


def _set(**texts: str) -> PromptSet:
    return PromptSet("planner", texts or {"system": "Plan it."}, (SUBMIT,))


def test_a_version_is_the_sets_name_and_a_short_hash() -> None:
    assert re.fullmatch(r"planner:[0-9a-f]{12}", _set().version)


def test_the_same_texts_and_tools_give_the_same_version() -> None:
    # A rebuilt set (another replica, another process) names the same prompts the same way.
    assert _set().version == _set().version
    assert (
        PromptSet("p", {"a": "1", "b": "2"}).version == PromptSet("p", {"b": "2", "a": "1"}).version
    )


def test_any_change_to_what_the_model_is_sent_is_a_new_version() -> None:
    base = _set().version
    assert _set(system="Plan it!").version != base  # one character of a prompt
    assert _set(system="Plan it.", closing="Stop.").version != base  # one more text
    assert PromptSet("planner", {"system": "Plan it."}).version != base  # a tool less
    reworded = output_tool("submit_plan", "Submit your plan.", Plan)
    assert PromptSet("planner", {"system": "Plan it."}, (reworded,)).version != base
    assert (
        PromptSet("other", {"system": "Plan it."}, (SUBMIT,)).version.split(":")[1]
        == (base.split(":")[1])
    )


def test_offered_tools_are_part_of_the_version() -> None:
    research = PromptSet("research", {"system": "Research."}, (SUBMIT,))
    offered = research.offering([SEARCH])
    assert [t.name for t in offered.tools] == ["search", "submit_plan"]
    assert offered.version != research.version
    assert research.offering([]) is research
    # The same definitions offered again, even as other objects, are the same version.
    copy = SEARCH.model_copy(deep=True)
    assert research.offering([copy]).version == offered.version
    assert research.offering([SEARCH]) is offered  # remembered: not hashed again
    changed = SEARCH.model_copy(update={"description": "Search the web."})
    assert research.offering([changed]).version != offered.version


def test_a_run_combines_its_stages_versions() -> None:
    versions = ["writer:c", "research:b", None, "planner:a", "research:b"]
    assert combine_versions(versions) == "planner:a,research:b,writer:c"
    assert combine_versions([None]) is None


def test_bounded_label_keeps_a_small_set_of_values() -> None:
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("a", "b", "a", "c", None, "")] == [
        "a",
        "b",
        "a",
        "other",
        "unknown",
        "unknown",
    ]
