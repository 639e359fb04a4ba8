"""`python -m bench` runs the benchmark; see bench/harness.py and docs/benchmarks.md."""

from __future__ import annotations

import sys

from bench.harness import main

sys.exit(main())
