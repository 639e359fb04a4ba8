"""The benchmark's modules (`bench.*`) live at the repository's root, in no installed
package; the tests that read them in-process import them from there, and the smoke tests
run them as `python -m bench...` from there (`run_bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def run_bench(module: str, *args: object, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` from the repository's root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
