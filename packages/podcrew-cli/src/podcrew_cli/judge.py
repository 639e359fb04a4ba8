"""The judge model of `podcrew eval --judge`: per cited statement, whether its passage supports
it, and the report's overall quality, through podcrew's LLM layer.

The judge is forced to call `submit_grades` (structured output), so its answer is a
validated `Grades` or an `InvalidModelOutput`, never prose to parse. Its usage is summed
here, apart from the runs' usage: judging a report must not look like the report's cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm import LLMProvider, LLMRequest, Message, Stage, output_tool, structured
from podcrew_eval.scores import CitedPair

DEFAULT_JUDGE_MODEL = "claude-sonnet-4-5"
JUDGE_TOOL = "submit_grades"
# A passage is cut to this many characters in the judge's input: a chunk is ~1,200.
MAX_PASSAGE_CHARS = 4000

RUBRIC = """\
You grade a research report against the passages it cites. The user message is a JSON \
document: the question, the report, and the report's cited statements, each with the text \
of the passage it cites.

For every statement, decide whether its passage supports it: supported means the passage \
states what the statement says (a paraphrase is fine); a statement that says more than the \
passage, contradicts it, or is about something else is not supported. Judge only from the \
passage, never from what you know.

Then grade the whole report for quality from 1 to 5: 5 answers every part of the question \
accurately, concisely and without repeating itself; 3 answers it in part or with padding or \
repetition; 1 does not answer it. A report saying honestly that nothing was found scores 5 \
when the passages hold nothing relevant.

Call submit_grades once with a verdict for every statement number."""


class Verdict(BaseModel):
    """The judge's verdict on one statement."""

    statement: int = Field(ge=1, description="The statement's number in the input.")
    supported: bool = Field(description="Whether its passage supports it.")
    reason: str = Field(default="", max_length=500, description="Why, in one sentence.")


class Grades(BaseModel):
    """What the judge hands back (forced tool use)."""

    verdicts: list[Verdict] = Field(description="One verdict per statement.")
    quality: int = Field(ge=1, le=5, description="Overall quality of the report, 1 to 5.")
    comment: str = Field(default="", max_length=1000, description="The main reason, briefly.")


GRADES_TOOL = output_tool(JUDGE_TOOL, "Submit the grades of the report.", Grades)


@dataclass
class Judge:
    """Grades reports with `provider`; `usage` sums every call it made."""

    provider: LLMProvider
    model: str = DEFAULT_JUDGE_MODEL
    usage: Usage = field(default_factory=Usage)

    async def grade(
        self,
        question: str,
        report: str,
        pairs: Sequence[CitedPair],
        passages: Mapping[str, str],
    ) -> tuple[dict[tuple[int, int], bool], int]:
        """The verdict per pair key (pairs it skipped have none) and the quality, 1-5."""
        statements = [
            {
                "statement": number,
                "text": pair.statement,
                "source": pair.source_id,
                "passage": passages.get(pair.source_id or "", "(not available)")[
                    :MAX_PASSAGE_CHARS
                ],
            }
            for number, pair in enumerate(pairs, start=1)
        ]
        content = json.dumps(
            {"question": question, "report": report, "statements": statements},
            ensure_ascii=False,
        )
        request = LLMRequest(
            stage=Stage.WRITE,  # the judge reads and writes prose, priced like the writer
            model=self.model,
            system=RUBRIC,
            messages=[Message(role="user", content=content)],
            max_tokens=256 + 96 * len(pairs),
        )
        grades, response = await structured(self.provider, request, GRADES_TOOL, Grades)
        self.usage = self.usage + response.usage
        verdicts = {
            pairs[v.statement - 1].key: v.supported
            for v in grades.verdicts
            if v.statement <= len(pairs)
        }
        return verdicts, grades.quality
