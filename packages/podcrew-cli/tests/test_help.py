"""Every subcommand's `--help` says what each of its options does, and `up --llm` offers
every provider the LLM layer has."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import get_args

import pytest

from podcrew_cli.__main__ import build_parser, main
from podcrew_core.llm.settings import LLMSettings


def _commands(
    parser: argparse.ArgumentParser, path: str = "podcrew"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, f"{path} {name}")


def test_every_option_of_every_subcommand_has_help() -> None:
    commands = dict(_commands(build_parser()))
    assert {"podcrew up", "podcrew ask", "podcrew kb build", "podcrew eval"} <= set(commands)
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, parser in commands.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not (action.help or "").strip()
    ]
    assert missing == []


def test_up_offers_every_provider(capsys: pytest.CaptureFixture[str]) -> None:
    providers = get_args(LLMSettings.model_fields["provider"].annotation)
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "port of the public API" in shown
    for provider in providers:
        assert provider in shown, provider
    assert "anthropic" in providers
