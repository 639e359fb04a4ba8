"""`python -m bench.profile`: where podcrew's CPU goes, per process, under a benchmark level.

Starts the same stack as `python -m bench`, warms it up, then samples every podcrew process
with py-spy (`uvx py-spy`, an isolated tool: nothing is installed into the project) while the
load generator drives `--level` concurrent runs. Writes each process's collapsed stacks
(`<dir>/<process>.txt`, for flamegraph tools or speedscope) and prints, per process, the
share of samples by package (self time) and the hottest functions (self and inclusive).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import harness

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def package_of(path: str) -> str:
    """py-spy names files from their import root: `httpx/_client.py` → httpx,
    `threading.py` → threading, `<frozen runpy>` stays as it is."""
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def summarize(collapsed: Path, top: int = 12) -> dict[str, object]:
    self_by_package: Counter[str] = Counter()
    self_by_func: Counter[str] = Counter()
    incl_by_func: Counter[str] = Counter()
    incl_by_package: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        seen_funcs: set[str] = set()
        seen_packages: set[str] = set()
        for frame in frames:
            match = FRAME.match(frame)
            func, file = (match["func"], match["file"]) if match else (frame, "?")
            name = f"{package_of(file)}:{func}"
            if name not in seen_funcs:
                incl_by_func[name] += count
                seen_funcs.add(name)
            package = package_of(file)
            if package not in seen_packages:
                incl_by_package[package] += count
                seen_packages.add(package)
        leaf = FRAME.match(frames[-1])
        leaf_pkg = package_of(leaf["file"]) if leaf else "?"
        self_by_package[leaf_pkg] += count
        self_by_func[f"{leaf_pkg}:{leaf['func'] if leaf else frames[-1]}"] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(1, total), 1)) for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "self_by_package_pct": share(self_by_package),
        "inclusive_by_package_pct": share(incl_by_package),
        "self_by_function_pct": share(self_by_func),
        "inclusive_by_function_pct": share(incl_by_func),
    }


Spy = tuple[str, subprocess.Popen[bytes], Path]  # process name, py-spy, its output


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--level", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100, help="runs to drive while sampling")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "profile")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the stack")
    parser.add_argument("--redis-max-connections", type=int, default=None)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    opts = harness.Options(
        levels=[args.level],
        latency_s=args.latency,
        warmup=20,
        redis_max_connections=args.redis_max_connections,
        extra_env=dict(item.split("=", 1) for item in args.env),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stack = harness.start_stack(opts)
    spies: list[Spy] = []
    try:
        with harness.connect(opts, stack) as ctx:
            harness.warm_up(ctx)
            for name, pid in harness.podcrew_pids(stack).items():
                if name != "redis":
                    spies.append(spy(name, pid, args.rate, args.out / f"{name}.txt"))
            time.sleep(3)  # py-spy attaches
            started = time.monotonic()
            runs_per_user = max(1, args.runs // args.level)
            url = stack.config.api_url
            harness.loadgen(harness.runs_job("podcrew", url, args.level, runs_per_user, "prof"))
            print(f"load: {time.monotonic() - started:.1f} s", file=sys.stderr)
    finally:
        stop_spies(spies)
        stack.close()
    for name, _, out in spies:
        print_summary(name, out)
    return 0


def spy(name: str, pid: int, rate: int, out: Path) -> Spy:
    """py-spy recording process `pid` into `out` until it is stopped."""
    process = subprocess.Popen(
        [
            "uvx",
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--gil",  # only samples holding the GIL: CPU, not waiting
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return name, process, out


def stop_spies(spies: list[Spy]) -> None:
    for _, process, _ in spies:
        process.send_signal(2)  # SIGINT: py-spy writes its output and exits
    for _, process, _ in spies:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def print_summary(name: str, out: Path) -> None:
    if not out.exists():
        print(f"== {name}: no profile written")
        return
    summary = summarize(out)
    print(f"\n== {name}: {summary['samples']} samples ({out})")
    for key in (
        "self_by_package_pct",
        "inclusive_by_package_pct",
        "self_by_function_pct",
        "inclusive_by_function_pct",
    ):
        print(f"  {key}:")
        shares = summary[key]
        assert isinstance(shares, list)
        for item, pct in shares:
            print(f"    {pct:5.1f}%  {item}")


if __name__ == "__main__":
    sys.exit(main())
