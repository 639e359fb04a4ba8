"""CPU time and memory of processes, read from /proc (no psutil).

CPU is `utime + stime` from `/proc/<pid>/stat` (all threads of the process, in clock ticks);
memory is `VmRSS` from `/proc/<pid>/status`. A `Sampler` thread polls RSS so a level's peak
is seen, not only its end.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    # Field 2 (comm) may contain spaces and parentheses: split after its closing one.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size in KiB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def system_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used (busy time, every core)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            names = (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
            model = next(names, "")
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    uname = os.uname()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": f"{uname.sysname} {uname.release}",
        "loadavg_at_start": list(os.getloadavg()),
    }


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]
    system_cpu: float


def snapshot(pids: dict[str, int]) -> Snapshot:
    return Snapshot(
        time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}, system_cpu_seconds()
    )


@dataclass
class Usage:
    """What the processes used between two snapshots, with the RSS the sampler saw."""

    wall_s: float
    cpu_s: dict[str, float]
    machine_cpu_s: float  # every process on the machine, ours included
    rss_before_kib: dict[str, int]
    rss_peak_kib: dict[str, int]
    rss_after_kib: dict[str, int]

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())


@dataclass
class Sampler:
    """Polls the RSS of `pids` every `interval_s` in a thread; `stop()` returns the usage."""

    pids: dict[str, int]
    interval_s: float = 0.05
    _peak: dict[str, int] = field(default_factory=dict)
    _before: dict[str, int] = field(default_factory=dict)
    _start: Snapshot | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._before = {n: rss_kib(p) for n, p in self.pids.items()}
        self._peak = dict(self._before)
        self._start = snapshot(self.pids)
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            rss = rss_kib(pid)
            if rss > self._peak.get(name, 0):
                self._peak[name] = rss

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        end = snapshot(self.pids)
        assert self._start is not None
        return Usage(
            wall_s=end.at - self._start.at,
            cpu_s={n: end.cpu[n] - self._start.cpu[n] for n in self.pids},
            machine_cpu_s=end.system_cpu - self._start.system_cpu,
            rss_before_kib=self._before,
            rss_peak_kib=dict(self._peak),
            rss_after_kib={n: rss_kib(p) for n, p in self.pids.items()},
        )
