"""podcrew's simulated Anthropic Messages API.

A server that speaks the Messages API wire protocol, so the official `anthropic` SDK works
against it unchanged, and answers with podcrew's deterministic model (`offline.respond`).
Latency, prompt-cache accounting and faults (429, 529, 500, stalls, dropped connections) are
configurable through `PODCREW_SIM_*` and, while it runs, through `PUT /_sim/faults`; every
call is logged at `GET /_sim/calls` for tests and benchmarks.
"""

from __future__ import annotations

from podcrew_simulator.app import create_simulator_app, run_simulator
from podcrew_simulator.settings import FaultProfile, SimulatorSettings

__all__ = ["FaultProfile", "SimulatorSettings", "create_simulator_app", "run_simulator"]
