"""Browser-test helpers: Debian's chromium driven by Playwright (never a downloaded browser)."""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def launch():
    """Yield a headless chromium for the whole run; fails (never skips) when chromium is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"browser tests need Debian's chromium at {CHROMIUM}: run `apt-get install -y chromium` "
                    "(.ci/run does this when it is missing)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def new_page(chromium, server, **options):
    """Yield a fresh page (own cookies) whose relative URLs go to the live server."""
    options.setdefault("viewport", {"width": 1280, "height": 900})
    context = chromium.new_context(base_url=server.url, **options)
    context.set_default_timeout(15000)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page, username, password):
    """Sign in through the login form and land on the dashboard."""
    page.goto("/ui/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector(f"#account >> text={username}")


def screenshot(page, name):
    """Save a screenshot under artifacts/ (ignored by git) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
