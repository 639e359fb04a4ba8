"""checkov's Kubernetes policies on the rendered chart: with the values users would use (the
chart's defaults, every ci/ values file and the examples the docs show), and on the example
manifests of k8s/examples, no check fails but the exceptions docs/deploy.md lists and explains,
which this test reads from there.

checkov's own dependency pins clash with the workspace's (it would downgrade packaging and
pytest), so it runs in an environment of its own: `uv tool run`, which installs it from PyPI the
first time (`make setup` does that ahead).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = "checkov==3.3.30"
EXAMPLES = sorted((ROOT / "k8s" / "examples").glob("values-*.yaml"))
# The examples that are manifests of their own (an MCP server run next to podcrew, an AgentRun).
MANIFESTS = sorted(set((ROOT / "k8s" / "examples").glob("*.yaml")) - set(EXAMPLES))
EXCEPTIONS_HEADING = "### Policy checks the chart does not pass"


def documented_exceptions() -> set[str]:
    """The check ids of the table under EXCEPTIONS_HEADING in docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split(EXCEPTIONS_HEADING, 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `(CKV\w+)` \|", section, flags=re.MULTILINE))


def run_checkov(directory: Path) -> dict[str, Any]:
    uv = shutil.which("uv")
    assert uv, "the policy checks run checkov through uv (`make setup` installs it)"
    result = subprocess.run(
        [
            *(uv, "tool", "run", "--from", CHECKOV, "checkov", "--directory", str(directory)),
            *("--framework", "kubernetes", "--output", "json", "--compact"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # checkov exits 1 when a check fails: the findings decide here, not its exit code.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_the_rendered_chart_passes_the_policy_checks(
    helm_engine: Any, chartlib: Any, tmp_path: Path
) -> None:
    exceptions = documented_exceptions()
    assert exceptions, f"docs/deploy.md has no table under {EXCEPTIONS_HEADING!r}"
    for values_file in chartlib.ci_values_files() + EXAMPLES:
        rendered = helm_engine.render(chartlib.load_values(values_file))
        manifests = [text for path, text in rendered.items() if path.endswith(".yaml")]
        out = tmp_path / f"{values_file.parent.name}-{values_file.stem}"
        out.mkdir()
        (out / "manifests.yaml").write_text("\n---\n".join(manifests))
    for manifest in MANIFESTS:
        out = tmp_path / f"examples-{manifest.stem}"
        out.mkdir()
        (out / "manifests.yaml").write_text(manifest.read_text())
    report = run_checkov(tmp_path)
    summary = report["summary"]
    failed = report["results"]["failed_checks"]
    unexplained = sorted(
        f"{f['check_id']} {f['resource']} ({Path(f['file_path']).parent.name})"
        for f in failed
        if f["check_id"] not in exceptions
    )
    assert not unexplained, "policy checks that fail:\n" + "\n".join(unexplained)
    # Every exception still applies somewhere, so the list in the docs cannot go stale.
    assert {f["check_id"] for f in failed} == exceptions
    assert summary["passed"] > 1000 and summary["parsing_errors"] == 0, summary
