"""Driving the dashboard in Debian's Chromium through Playwright (sync API): the browser test and
``docs/screenshot.py`` share these."""

from __future__ import annotations

import contextlib
import shutil

#: Headless Chromium flags for a sandbox-less container with no network and no GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@contextlib.contextmanager
def chromium():
    """Debian's Chromium through Playwright, headless, with :data:`CHROMIUM_ARGS`; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def set_slider(page, elem_id: str, value: int) -> None:
    """Type ``value`` into the number box of the Gradio slider ``#elem_id`` and commit it (Enter)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
