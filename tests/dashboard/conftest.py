"""Fixtures of the dashboard's browser tests: one headless Chromium per test session (per
xdist worker), a fresh browser context per test, and a screenshot of every page of a test
that failed, in test-artifacts/ (gitignored).

Pages are watched for script errors: an uncaught exception or a console error in a page fails
the test that opened it (a broken page must not pass because the element looked for happened
to be there).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dashhelp import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, INSTALL_HINT, artifact_name
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(INSTALL_HINT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    """A fresh context (its own sessionStorage and cache) for one test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    problems: list[str] = []

    def watch(page: Page) -> None:
        page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console error: {msg.text}")
                if msg.type == "error" and not expected_console_error(msg.text)
                else None
            ),
        )

    context.on("page", watch)
    yield context
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for i, page in enumerate(context.pages):
            name = artifact_name(request.node.nodeid)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{i}.png"), full_page=True)
    context.close()
    if failed is not None and failed.passed:
        assert not problems, "the page reported errors:\n" + "\n".join(problems)


def expected_console_error(text: str) -> bool:
    """Console errors a test causes on purpose: the WebSocket failing while the daemon is
    stopped, and a 404 asked for by a test."""
    return "WebSocket connection to" in text or "status of 404" in text
