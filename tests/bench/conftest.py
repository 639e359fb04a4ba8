"""The benchmark's modules (`bench.*`) live at the repository's root, in no installed
package; the tests that read them in-process import them from there."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
