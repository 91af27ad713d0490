"""Browser fixtures: one headless Debian chromium per session, a fresh context (no history) per test.

The clusters the tests drive come from elsewhere: `local_cluster` from tests/conftest.py (root + 2
workers on a tiny synthetic model), `compose_cluster` from the docker tests; both yield `.url`.
"""
import os

import pytest
from playwright.sync_api import sync_playwright


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
            args=["--no-sandbox"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()
