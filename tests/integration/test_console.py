"""The web console at /console, driven in a real headless Chromium against the live stack with
authentication on: a question asked on the page runs to its report and sources, a reload
mid-run resumes the live view, a run is cancelled and given feedback, a wrong key shows
the error, and the page's Content-Security-Policy holds it (the browser reports no
violation).

With `PODCREW_CONSOLE_SCREENSHOTS=<dir>` the tests also save the screenshots the docs show
(docs/images/console-*.png)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from podcrew_cli.stack import Stack

from .conftest import keyed_client, keyed_stack

pytestmark = pytest.mark.integration

ACME = "acme-console-0123456789"
RUN_TIMEOUT_S = 90
QUESTION = "How do Python generators work?"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Auth on; LLM calls slow enough that a run is still going when the test reloads."""
    with keyed_stack({ACME: "acme"}, PODCREW_LLM_OFFLINE_LATENCY_S="0.4") as running:
        yield running


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    """Debian's chromium, driven by its own chromedriver (both must be installed: see
    scripts/ensure-test-deps.sh); nothing is downloaded."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with webdriver.Chrome(options=options, service=Service(executable_path=driver)) as chrome:
        yield chrome


@pytest.fixture
def page(chrome: webdriver.Chrome, stack: Stack) -> Iterator[webdriver.Chrome]:
    """A fresh tab's state on the console: no key, no remembered runs."""
    chrome.get(f"{stack.config.api_url}/console/")
    chrome.execute_script("sessionStorage.clear(); localStorage.clear();")
    chrome.get(f"{stack.config.api_url}/console/")
    yield chrome
    violations = [
        entry["message"]
        for entry in chrome.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == []


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with keyed_client(stack, ACME, timeout=30) as client:
        yield client


def _wait(chrome: webdriver.Chrome, until: Any, timeout: float = 15) -> Any:
    return WebDriverWait(
        chrome, timeout, ignored_exceptions=[StaleElementReferenceException]
    ).until(until)


def _by_id(chrome: webdriver.Chrome, element_id: str) -> WebElement:
    return chrome.find_element(By.ID, element_id)


def _text(chrome: webdriver.Chrome, element_id: str) -> str:
    return str(_by_id(chrome, element_id).text)


def _use_key(chrome: webdriver.Chrome, key: str) -> None:
    _by_id(chrome, "api-key").send_keys(key)
    _by_id(chrome, "use-key").click()
    _wait(chrome, lambda c: _text(c, "key-status").startswith("Key "))


def _ask(chrome: webdriver.Chrome, question: str) -> str:
    _by_id(chrome, "question").send_keys(question)
    _by_id(chrome, "ask").click()
    _wait(chrome, lambda c: _text(c, "run-id"))
    return _text(chrome, "run-id")


def _wait_status(chrome: webdriver.Chrome, status: str) -> None:
    """Until the run on view is final and its view complete (`data-final`: every event
    shown, the result read): the status alone can be final, read on opening, before the
    events are replayed."""
    _wait(chrome, lambda c: _by_id(c, "run").get_attribute("data-final") == status, RUN_TIMEOUT_S)
    assert _text(chrome, "run-status") == status


def _screenshot(chrome: webdriver.Chrome, tmp_path: Path, name: str) -> None:
    """Saved for the docs when asked to; always taken, so a page that cannot be drawn fails."""
    path = tmp_path / f"console-{name}.png"
    assert chrome.save_screenshot(str(path))
    if target := os.environ.get("PODCREW_CONSOLE_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_a_question_asked_in_the_console_shows_its_report_and_sources(
    page: webdriver.Chrome, api: httpx.Client, tmp_path: Path
) -> None:
    _use_key(page, ACME)
    assert _text(page, "key-status").startswith("Key accepted")
    run_id = _ask(page, QUESTION)
    _wait_status(page, "succeeded")

    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert _text(page, "run-question") == QUESTION
    # The plan, each sub-question with the tool calls its research made.
    steps = page.find_elements(By.CSS_SELECTOR, "#plan > li")
    assert [step.text.split("\n")[0] for step in steps] == run["sub_questions"]
    assert page.find_elements(By.CSS_SELECTOR, "#plan .tools li")
    # The report, rendered: the title a heading, its citations links to the numbered sources.
    report = _by_id(page, "report")
    assert report.find_element(By.TAG_NAME, "h2").text in run["result"]["report"]
    sources = page.find_elements(By.CSS_SELECTOR, "#sources > li")
    assert len(sources) == len(run["result"]["sources"])
    for shown, ref in zip(sources, run["result"]["sources"], strict=True):
        assert shown.get_attribute("id") == f"source-{ref['number']}"
        assert shown.text.startswith(ref["source"]["title"])
    _screenshot(page, tmp_path, "report")
    citation = report.find_element(By.CSS_SELECTOR, "a.cite")
    number = citation.text.strip("[]")
    citation.click()
    assert page.current_url.endswith(f"#source-{number}")
    assert page.find_element(By.CSS_SELECTOR, f"#source-{number}").is_displayed()


def test_a_reload_mid_run_resumes_the_live_view(
    page: webdriver.Chrome, api: httpx.Client, tmp_path: Path
) -> None:
    _use_key(page, ACME)
    run_id = _ask(page, "What are Python decorators and when are they useful?")
    _wait(page, lambda c: c.find_elements(By.CSS_SELECTOR, "#plan .tools li"), RUN_TIMEOUT_S)
    _screenshot(page, tmp_path, "live")
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "running"

    page.refresh()  # the key is the tab's, the run on view is in the address

    assert _text(page, "run-id") == run_id
    _wait_status(page, "succeeded")
    assert page.find_elements(By.CSS_SELECTOR, "#plan .tools li")
    assert page.find_elements(By.CSS_SELECTOR, "#sources > li")
    assert _by_id(page, "error").is_displayed() is False


def test_recent_runs_reopen_and_feedback_is_stored(
    page: webdriver.Chrome, api: httpx.Client, tmp_path: Path
) -> None:
    _use_key(page, ACME)
    run_id = _ask(page, "What is the Python GIL?")
    _wait_status(page, "succeeded")
    page.get(page.current_url.split("?")[0])  # the console with no run on view

    recent = _wait(
        page,
        lambda c: c.find_elements(By.CSS_SELECTOR, f'#recent-runs button[data-run="{run_id}"]'),
    )
    assert "What is the Python GIL?" in recent[0].text
    recent[0].click()
    _wait_status(page, "succeeded")
    _by_id(page, "feedback-comment").send_keys("Clear and well cited.")
    _by_id(page, "feedback-up").click()
    _wait(page, lambda c: _text(c, "feedback-status") == "Thank you: feedback stored.")
    _screenshot(page, tmp_path, "feedback")

    given = api.get(f"/v1/runs/{run_id}/feedback").json()
    assert [(f["score"], f["comment"]) for f in given] == [(1, "Clear and well cited.")]


def test_a_run_is_cancelled_from_the_console(page: webdriver.Chrome, api: httpx.Client) -> None:
    _use_key(page, ACME)
    run_id = _ask(page, "How does asyncio schedule coroutines?")
    _wait(page, lambda c: _by_id(c, "cancel").is_displayed())
    _by_id(page, "cancel").click()
    _wait_status(page, "cancelled")
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"


def test_a_wrong_key_shows_the_error(
    page: webdriver.Chrome, api: httpx.Client, tmp_path: Path
) -> None:
    _use_key(page, "not-a-key-0123456789")
    assert _text(page, "key-status") == "Key refused."
    _wait(page, lambda c: _by_id(c, "error").is_displayed())
    assert "unknown API key" in _text(page, "error")

    _by_id(page, "question").send_keys("Is this asked?")
    _by_id(page, "ask").click()
    _wait(page, lambda c: "unknown API key" in _text(c, "error"))
    assert _by_id(page, "run").is_displayed() is False
    _screenshot(page, tmp_path, "wrong-key")


def test_console_files_carry_the_content_security_policy(stack: Stack) -> None:
    with httpx.Client(base_url=stack.config.api_url) as client:
        assert client.get("/console").headers["location"].endswith("/console/")
        for path in ("/console/", "/console/app.js", "/console/console.css"):
            response = client.get(path)
            assert response.status_code == 200
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "connect-src 'self'" in policy
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"


def test_markup_in_a_question_and_its_report_is_shown_as_text(page: webdriver.Chrome) -> None:
    _use_key(page, ACME)
    question = 'What does <img src=x id="injected"> do in <b>HTML</b> pages?'
    _ask(page, question)
    _wait_status(page, "succeeded")
    assert _text(page, "run-question") == question
    assert "<b>HTML</b>" in _text(page, "report")  # the report quotes it: as text
    assert page.find_elements(By.CSS_SELECTOR, "#injected, #run b, #recent-runs b") == []
