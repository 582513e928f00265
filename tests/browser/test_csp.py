"""The pages run under their strict Content-Security-Policy in a real browser: nothing
refused, the charts draw (with plotly.js's styles from our stylesheet), the overview's
share bars keep their colors and widths, and logging out ends the live stream."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Demo, log_in
from tests.browser.test_dashboard import CHARTS_FILLED, LIVE_TIMEOUT_MS

# Collected in the page itself: every refusal fires this event, with what was refused.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


def violations(page: Page) -> list[str]:
    return list(page.evaluate("() => window.__cspViolations || []"))


def test_the_pages_run_under_the_strict_policy(page: Page, demo: Demo) -> None:
    page.add_init_script(RECORD_VIOLATIONS)
    log_in(page, demo, "services/inventory/")
    expect(page).to_have_url(re.compile(r"/services/inventory/$"))
    policy = page.evaluate(
        "async () => (await fetch(location.href)).headers.get('content-security-policy')"
    )
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    page.wait_for_function(CHARTS_FILLED, timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#status")).to_have_text(re.compile("^live"))
    # plotly.js's rules come from plotly.css, not an inline <style> it would insert.
    modebar = page.locator("#chart-rps .modebar").first
    assert modebar.evaluate("(el) => getComputedStyle(el).position") == "absolute"
    # The stylesheet applied: the page's own colors and layout.
    assert page.evaluate("() => getComputedStyle(document.body).getPropertyValue('--accent')")
    assert violations(page) == []

    page.goto(demo.url)
    bar = page.locator('section[data-service="inventory"] .bar span').first
    expect(bar).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    width = bar.evaluate("(el) => el.getBoundingClientRect().width")
    color = bar.evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert width > 0 and color not in ("", "rgba(0, 0, 0, 0)")
    page.goto(demo.url + "audit/")
    expect(page.get_by_role("heading", name="Events")).to_be_visible()
    filters = page.locator("form.filters")
    assert filters.evaluate("(el) => getComputedStyle(el).display") == "flex"  # audit.css
    assert violations(page) == []


def test_the_api_docs_run_under_their_policy(page: Page, demo: Demo) -> None:
    page.add_init_script(RECORD_VIOLATIONS)
    log_in(page, demo, "api/docs/")
    # Swagger UI drew the schema: its script came from a URL, not inline.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Ballast API")
    expect(page.locator(".opblock").first).to_be_visible()
    assert violations(page) == []


def test_logging_out_in_one_tab_ends_the_stream_in_another(page: Page, demo: Demo) -> None:
    log_in(page, demo, "services/inventory/")
    expect(page.locator("#status")).to_have_text(re.compile("^live"), timeout=LIVE_TIMEOUT_MS)
    other = page.context.new_page()
    other.goto(demo.url)
    other.get_by_role("button", name="Log out").click()
    other.wait_for_load_state()
    # The first tab's socket is closed with 4401: the page says to log in again.
    expect(page.locator("#status")).not_to_have_text(re.compile("^live"), timeout=15_000)
    expect(page.locator("#status")).to_contain_text("session expired — log in again")
    other.close()
