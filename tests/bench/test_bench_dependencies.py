"""The benchmark's peers (LangGraph) are the bench's dependencies alone: by the lock, no
workspace member needs them, and the images install no dependency group."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PEER_ONLY = {"langgraph", "langchain-core", "langsmith"}


def lock() -> dict[str, dict[str, Any]]:
    with (REPO / "uv.lock").open("rb") as f:
        return {p["name"]: p for p in tomllib.load(f)["package"]}


def closure(packages: dict[str, dict[str, Any]], roots: list[dict[str, Any]]) -> set[str]:
    """Every package the `roots` dependency entries need, with the extras they name."""
    seen: set[str] = set()
    todo = [(d["name"], tuple(d.get("extra", ()))) for d in roots]
    done: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(d.get("extra", ()))) for d in deps]
    return seen


def test_no_workspace_member_needs_a_peer() -> None:
    packages = lock()
    members = [p for p in packages.values() if "editable" in p["source"]]
    assert {"podcrew-research-agent", "podcrew-orchestrator", "podcrew-operator"} <= {
        p["name"] for p in members
    }
    for member in members:
        entries = [{"name": member["name"], "extra": list(member.get("optional-dependencies", {}))}]
        assert closure(packages, entries) & PEER_ONLY == set(), member["name"]


def test_the_bench_group_brings_langgraph_and_dev_includes_it() -> None:
    # The check above could pass by reading nothing: the bench group's closure shows it reads.
    groups = lock()["podcrew-workspace"]["dev-dependencies"]
    assert closure(lock(), groups["bench"]) >= PEER_ONLY
    assert {"langgraph"} <= {d["name"] for d in groups["dev"]}


def test_images_sync_without_any_dependency_group() -> None:
    syncs = re.findall(r"uv sync[^\n]*", (REPO / "Dockerfile").read_text())
    assert syncs
    for line in syncs:
        assert "--no-dev" in line
        assert "--group" not in line
        assert "--all-groups" not in line
