"""`podcrew eval DATASET.jsonl`: run a dataset against a stack, score every report, write
JSON and markdown, and gate on a stored baseline.

The questions run concurrently through the public API (`POST /v1/runs?wait=`, then polling),
as any client would; a stack is started on free ports when no `--url` is given. The cited
passages come from the knowledge sources themselves (`--kb`, default the ones the research
agent would index), read with the same parser and chunker, so a `kb:` source id finds the
exact text the research agent saw. docs/evaluation.md describes every score.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from podcrew_cli.stack import Stack, StackConfig
from podcrew_eval import gate, suite, table

# How long one POST waits for its run before polling; the API caps it at `max_wait_s`.
WAIT_S = 30.0
POLL_S = 0.2
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 300.0
_FINAL = frozenset({"succeeded", "failed", "cancelled"})


class EvalError(Exception):
    """The evaluation cannot go on (the API refuses the key, a file is unreadable)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`eval` and its options."""
    p = sub.add_parser("eval", help="score the reports of a dataset of questions")
    p.add_argument("dataset", type=Path, help="JSONL: id, question, expected_sources, …")
    p.add_argument("--url", help="a running stack's API (default: start one on free ports)")
    p.add_argument(
        "--api-key", default=os.environ.get("PODCREW_API_KEY"), help="or $PODCREW_API_KEY"
    )
    p.add_argument("--out", type=Path, default=Path("eval-results"), help="output directory")
    p.add_argument("--baseline", type=Path, help="a results JSON to gate on")
    p.add_argument(
        "--tolerance",
        type=float,
        default=gate.DEFAULT_TOLERANCE,
        help="how far a share (0-1) may drop below the baseline (absolute)",
    )
    p.add_argument(
        "--spend-tolerance",
        type=float,
        default=gate.DEFAULT_SPEND_TOLERANCE,
        help="how far cost, tokens, calls and counts may move the wrong way (share of baseline)",
    )
    p.add_argument("--judge", action="store_true", help="judge support and quality with a model")
    p.add_argument("--judge-model", default=None, help="the judge's model")
    p.add_argument("--kb", action="append", metavar="DIR", help="knowledge sources (repeatable)")
    p.add_argument("--runs", type=Path, help="score these stored runs (runs.jsonl) instead")
    p.add_argument(
        "--llm",
        choices=["offline", "simulated"],
        default="offline",
        help="the model of the stack it starts: offline (no network) or the simulated "
        "Messages API (default: %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="questions run at once (default: %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per run")
    p.add_argument(
        "--record",
        action="store_true",
        help="store each run's scores with the run (PUT /v1/runs/{id}/evaluation), where "
        "GET /v1/runs/{id} and an AgentRun's status show them; needs --url",
    )


# --- running the questions ----------------------------------------------------------------


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(10.0, max(0.1, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


async def _submit(client: httpx.AsyncClient, question: str, deadline: float) -> httpx.Response:
    """POST the question, waiting out rate limits (429) until the deadline."""
    while True:
        response = await client.post(
            "/v1/runs", params={"wait": WAIT_S}, json={"question": question}
        )
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(_retry_after(response))


async def run_question(
    client: httpx.AsyncClient, question: str, timeout_s: float
) -> dict[str, Any] | None:
    """The final run of `question`, or `None` when the API turned it away (4xx)."""
    deadline = time.monotonic() + timeout_s
    response = await _submit(client, question, deadline)
    if response.status_code in (401, 403):
        raise EvalError(f"the API refused the key ({response.status_code}): set PODCREW_API_KEY")
    if 400 <= response.status_code < 500:
        return None
    response.raise_for_status()
    run: dict[str, Any] = response.json()
    while run.get("status") not in _FINAL:
        if time.monotonic() > deadline:
            return run  # scored as failed: it did not finish in time
        await asyncio.sleep(POLL_S)
        polled = await client.get(f"/v1/runs/{run['id']}")
        polled.raise_for_status()
        run = polled.json()
    return run


async def run_dataset(
    api_url: str,
    items: Sequence[suite.DatasetItem],
    api_key: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, dict[str, Any] | None]:
    """Every item's final run by item id, `concurrency` at a time."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    slots = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(30.0, read=WAIT_S + 30.0)
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=timeout) as client:

        async def one(item: suite.DatasetItem) -> dict[str, Any] | None:
            async with slots:
                return await run_question(client, item.question, timeout_s)

        runs = await asyncio.gather(*(one(item) for item in items))
    return {item.id: run for item, run in zip(items, runs, strict=True)}


# --- the passages -------------------------------------------------------------------------


def default_sources() -> list[str]:
    """What the research agent indexes by default: `PODCREW_RESEARCH_KB_SOURCES`, else the
    corpus bundled with it (found by location; the command line imports no service)."""
    configured = os.environ.get("PODCREW_RESEARCH_KB_SOURCES", "")
    if configured.strip():
        return [s for s in configured.split(",") if s.strip()]
    spec = importlib.util.find_spec("podcrew_research")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(Path(next(iter(spec.submodule_search_locations))) / "corpus")]


def load_passages(sources: Sequence[str]) -> dict[str, str]:
    """The text of every chunk of `sources` (each `PATH` or `NAME=PATH`), by source id."""
    from podcrew_kb.chunk import chunk_document
    from podcrew_kb.parse import ParseError, parse_bytes, read_file
    from podcrew_kb.sources import SourceSpec, walk

    passages: dict[str, str] = {}
    for entry in sources:
        spec = SourceSpec.parse(entry)
        for relative, path in walk(spec.path):
            try:
                document = parse_bytes(path.suffix, read_file(path), path.stem)
            except ParseError:
                continue  # the research agent skips it too: nothing can cite it
            for chunk in chunk_document(spec.id_of(relative), document):
                passages[f"kb:{chunk.id}"] = chunk.text
    return passages


# --- scoring and output -------------------------------------------------------------------


async def _score(
    items: Sequence[suite.DatasetItem],
    runs: Mapping[str, dict[str, Any] | None],
    passages: Mapping[str, str],
    judge: Any | None,
) -> list[suite.ReportScore]:
    from podcrew_eval.scores import cited_pairs, numbered_sources, read

    rows = []
    for item in items:
        run = runs.get(item.id)
        verdicts, quality = None, None
        if judge is not None and run is not None and run.get("result"):
            result = run["result"]
            pairs = cited_pairs(read(result), numbered_sources(result))
            verdicts, quality = await judge.grade(item.question, result["report"], pairs, passages)
        rows.append(suite.score_run(item, run, passages, verdicts, quality))
    return rows


def _write(out: Path, document: Mapping[str, Any], runs: Mapping[str, Any], md: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    suite.write_json(out / "results.json", document)
    (out / "results.md").write_text(md, encoding="utf-8")
    lines = [json.dumps({"id": k, "run": v}, ensure_ascii=False) for k, v in runs.items()]
    (out / "runs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_runs(path: Path) -> dict[str, dict[str, Any] | None]:
    """Stored runs (`runs.jsonl` of an earlier `podcrew eval`) by item id."""
    runs: dict[str, dict[str, Any] | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            runs[str(entry["id"])] = entry.get("run")
    return runs


def _make_judge(args: argparse.Namespace, stack: Stack | None) -> Any:
    """The judge on the configured LLM provider (`PODCREW_LLM_*`, `ANTHROPIC_API_KEY`); on
    the stack's simulated Messages API when this command started one with `--llm
    simulated`."""
    from podcrew_cli.judge import DEFAULT_JUDGE_MODEL, Judge
    from podcrew_core.llm import LLMSettings, create_provider

    settings = LLMSettings()
    if stack is not None and stack.config.llm == "simulated":
        settings = settings.model_copy(
            update={"provider": "simulated", "simulator_url": stack.config.simulator_url}
        )
    return Judge(create_provider(settings), args.judge_model or DEFAULT_JUDGE_MODEL)


async def _collect(
    args: argparse.Namespace, items: Sequence[suite.DatasetItem], stack: Stack | None
) -> tuple[dict[str, dict[str, Any] | None], list[suite.ReportScore], dict[str, Any] | None]:
    if args.runs:
        runs = read_runs(args.runs)
    else:
        url = args.url or (stack.config.api_url if stack else "")
        runs = await run_dataset(url, items, args.api_key, args.concurrency, args.timeout)
    passages = load_passages(args.kb or default_sources())
    judge = _make_judge(args, stack) if args.judge else None
    try:
        rows = await _score(items, runs, passages, judge)
    finally:
        if judge is not None:
            await judge.provider.aclose()
    judged = None
    if judge is not None:
        usage = judge.usage
        judged = {
            "model": judge.model,
            "llm_calls": usage.llm_calls,
            "total_tokens": usage.total_tokens,
            "cost_usd": round(usage.cost_usd, 6),
        }
    return runs, rows, judged


# The scores stored with a run: the shares and counts of one report (docs/evaluation.md).
_RECORDED = (
    "citation_accuracy",
    "effective_citations",
    "source_recall",
    "key_facts",
    "coverage",
    "redundancy",
    "judge_quality",
)


def evaluation_of(row: suite.ReportScore, judged: bool) -> dict[str, Any] | None:
    """The body of `PUT /v1/runs/{id}/evaluation` for one scored run; None for a run that
    has no report to score."""
    if row.run_id is None or row.outcome in ("rejected", "failed"):
        return None
    scores = {name: getattr(row, name) for name in _RECORDED if getattr(row, name) is not None}
    if row.citation_valid is not None:
        scores["citation_validity"] = 1.0 if row.citation_valid else 0.0
    return {"scores": scores, "evaluator": f"podcrew-eval {'judge' if judged else 'lexical'}"}


async def record(
    api_url: str, api_key: str | None, rows: Sequence[suite.ReportScore], judged: bool
) -> int:
    """Store every scored run's evaluation with the run; how many were stored."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    stored = 0
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30.0) as client:
        for row in rows:
            body = evaluation_of(row, judged)
            if body is None:
                continue
            response = await client.put(f"/v1/runs/{row.run_id}/evaluation", json=body)
            response.raise_for_status()
            stored += 1
    return stored


def _gate(args: argparse.Namespace, summary: Mapping[str, Any], console: Console) -> int:
    if args.baseline is None:
        return 0
    baseline = json.loads(args.baseline.read_text(encoding="utf-8"))["summary"]
    found = gate.regressions(baseline, summary, args.tolerance, args.spend_tolerance)
    for regression in found:
        console.print(f"[red]regression[/red] {regression}")
    if not found:
        console.print(f"no regression against {args.baseline}")
    return 1 if found else 0


def _stack_config(args: argparse.Namespace) -> StackConfig:
    env = {"PODCREW_RESEARCH_KB_SOURCES": ",".join(args.kb)} if args.kb else {}
    return StackConfig.on_free_ports(llm=args.llm, env=env)


def run(args: argparse.Namespace, console: Console) -> int:
    """Run, score, write and gate; 0 when nothing regressed, 1 when something did, 2 when the
    evaluation could not run."""
    if args.record and args.url is None:
        console.print(
            "[red]podcrew eval: --record stores scores in a running stack: give --url[/red]"
        )
        return 2
    try:
        items = suite.load_dataset(args.dataset)
        stack: Stack | None = None
        if args.url is None and args.runs is None:
            stack = Stack(_stack_config(args))
            with console.status("starting the stack…"):
                stack.__enter__()
        try:
            with console.status(f"running {len(items)} questions…"):
                runs, rows, judged = asyncio.run(_collect(args, items, stack))
            if args.record:
                stored = asyncio.run(record(args.url, args.api_key, rows, judged is not None))
                console.print(f"stored the evaluations of {stored} runs with them")
        finally:
            if stack is not None:
                stack.close()
    except (EvalError, ValueError, OSError, httpx.HTTPError) as exc:
        console.print(f"[red]podcrew eval: {exc}[/red]")
        return 2
    document = suite.results_document(rows, {"judge": judged} if judged else None)
    md = table.markdown(document["by_prompt_version"], rows, judged)
    _write(args.out, document, runs, md)
    console.print(md, soft_wrap=True, markup=False, highlight=False)
    console.print(f"[dim]written to {args.out}/results.json, results.md, runs.jsonl[/dim]")
    return _gate(args, document["summary"], console)
