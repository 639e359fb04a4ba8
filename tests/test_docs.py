"""The docs that promise things: the README's two commands and the configuration table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_the_two_commands() -> None:
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    commands = [line.split("#")[0].strip() for line in block]
    assert commands == ["make run", "make test"]
    makefile = ROOT.joinpath("Makefile").read_text()
    assert "\nrun: " in makefile and "\ntest: " in makefile


def test_configuration_table_is_generated_from_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-config-docs.py"), "--check"], check=False
    )
    assert result.returncode == 0, "docs/configuration.md is stale: run scripts/gen-config-docs.py"
