"""The `podcrew` command: `up` runs the stack, `ask` asks it, `demo` does both; `kb build`
indexes a directory of documents; `eval` scores the reports of a dataset of questions."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from rich.console import Console

from podcrew_cli import evaluate, kb
from podcrew_cli.ask import ask
from podcrew_cli.stack import LLM_PROVIDERS, REDIS_TOPOLOGIES, Stack, StackConfig

DEMO_QUESTION = (
    "How do Python generators and the yield statement work, and how do they relate to "
    "coroutines and async functions?"
)
# Offline think time in the demo, so the progress display has something to show.
DEMO_LATENCY_S = "0.4"


def _config(args: argparse.Namespace) -> StackConfig:
    env = {}
    if args.kb:
        # The research agent indexes these instead of the bundled corpus.
        env["PODCREW_RESEARCH_KB_SOURCES"] = ",".join(str(Path(p).resolve()) for p in args.kb)
    return StackConfig(
        api_port=args.api_port,
        worker_port=args.worker_port,
        research_port=args.research_port,
        writer_port=args.writer_port,
        redis_port=args.redis_port,
        workers=args.workers,
        research_agents=args.research_agents,
        llm=args.llm,
        simulator_port=args.simulator_port,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        env=env,
        redis=args.redis,
    )


def _print_ports(console: Console, stack: Stack) -> None:
    c = stack.config
    topology = "" if c.redis == "standalone" else f" ({c.redis})"
    console.print(
        f"[bold]podcrew is up[/bold] — api http://127.0.0.1:{c.api_port}  "
        f"worker :{c.worker_port}  "
        f"research-agent :{', :'.join(str(p) for p in stack.research_ports)}  "
        f"writer-agent :{c.writer_port}  redis :{c.redis_port}{topology}\n"
        f"[dim]logs and Redis data in {stack.data_dir}[/dim]"
    )


def _up(args: argparse.Namespace, console: Console) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(_config(args))
    with console.status("starting redis, research agent, writer agent, api, worker…"):
        stack.__enter__()
    try:
        _print_ports(console, stack)
        console.print("[dim]Ctrl-C to stop.[/dim]")
        while not stop.wait(0.5):
            dead = [n for n, s in stack.services.items() if not s.running]
            if dead:
                console.print(f"[red]stopped unexpectedly: {', '.join(dead)}[/red]")
                return 1
        return 0
    finally:
        with console.status("stopping…"):
            stack.close()
        console.print("stopped.")


def _demo(args: argparse.Namespace, console: Console) -> int:
    os.environ.setdefault("PODCREW_LLM_OFFLINE_LATENCY_S", DEMO_LATENCY_S)
    stack = Stack(_config(args))
    with console.status("starting redis, research agent, writer agent, api, worker…"):
        stack.__enter__()
    try:
        _print_ports(console, stack)
        return ask(stack.config.api_url, args.question, console)
    except KeyboardInterrupt:
        return 130
    finally:
        with console.status("stopping…"):
            codes = stack.stop()
        stack.close()
        bad = {n: c for n, c in codes.items() if c not in (0, None)}
        console.print("stopped." if not bad else f"stopped; non-zero exits: {bad}")


def _add_stack_options(p: argparse.ArgumentParser) -> None:
    """The options of the commands that start a stack (`up`, `demo`)."""
    ports = (
        ("--api-port", 8000, "the public API (runs, events, estimate)"),
        ("--worker-port", 8001, "the worker's health and metrics"),
        ("--research-port", 8101, "the first research agent"),
        ("--writer-port", 8102, "the writer agent"),
        ("--redis-port", 6390, "the Redis server the stack starts"),
    )
    for flag, default, what in ports:
        p.add_argument(flag, type=int, default=default, help=f"port of {what} (default: {default})")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes that run the queued runs"
    )
    p.add_argument(
        "--research-agents",
        type=int,
        default=1,
        help="research agent replicas (the first on --research-port); the worker rotates "
        "among them and retries on another when one cannot be reached",
    )
    p.add_argument(
        "--llm",
        choices=LLM_PROVIDERS,
        default="offline",
        help="the model behind the agents: offline (built in, no network), simulated (also "
        "start the simulated Messages API and use the Anthropic SDK), anthropic (needs "
        "ANTHROPIC_API_KEY), bedrock or vertex (Claude on AWS or Google Cloud, with that "
        "platform's credentials and PODCREW_LLM_* settings); default: %(default)s",
    )
    p.add_argument(
        "--simulator-port",
        type=int,
        default=8200,
        help="port of the simulated Messages API (--llm simulated)",
    )
    p.add_argument(
        "--redis",
        choices=REDIS_TOPOLOGIES,
        default="standalone",
        help="the Redis to start: standalone (one redis-server), sentinel (a primary on "
        "--redis-port, a replica and three sentinels) or cluster (three primaries with a "
        "replica each, the first on --redis-port; Redis 7 or later); default: %(default)s",
    )
    p.add_argument("--data-dir", help="where Redis data and logs go (default: a temp dir)")
    p.add_argument(
        "--kb",
        action="append",
        metavar="DIR",
        help="research these documents (or a `podcrew kb build` index) instead of the "
        "bundled Python docs; repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `podcrew` command line: every subcommand and its options."""
    parser = argparse.ArgumentParser(prog="podcrew", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("up", "run the stack in the foreground"), ("demo", "up + ask + stop")):
        p = sub.add_parser(name, help=helptext)
        _add_stack_options(p)
        if name == "demo":
            p.add_argument(
                "question", nargs="?", default=DEMO_QUESTION, help="what to ask (default: a demo)"
            )
    p = sub.add_parser(
        "simulate-llm",
        help="serve podcrew's simulated Anthropic Messages API (PODCREW_SIM_* settings)",
    )
    p.add_argument("--host", help="interface (default PODCREW_SIM_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default PODCREW_SIM_PORT or 8200)")
    kb.add_parser(sub)
    evaluate.add_parser(sub)
    p = sub.add_parser("ask", help="ask a running stack")
    p.add_argument("question", help="the research question")
    p.add_argument(
        "--api-url",
        default=os.environ.get("PODCREW_API_URL", "http://127.0.0.1:8000"),
        help="the stack's API (default: $PODCREW_API_URL or %(default)s)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("PODCREW_API_KEY"),
        help="API key, for a stack with authentication on (default: $PODCREW_API_KEY)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    if args.command == "simulate-llm":
        from podcrew_simulator import SimulatorSettings, run_simulator

        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        run_simulator(SimulatorSettings(**overrides))
        return
    commands = {"kb": kb.run, "eval": evaluate.run, "up": _up, "demo": _demo}
    command = commands.get(args.command)
    if command is None:
        sys.exit(ask(args.api_url, args.question, console, api_key=args.api_key))
    sys.exit(command(args, console))


if __name__ == "__main__":
    main()
