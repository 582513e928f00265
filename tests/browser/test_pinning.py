"""The pinning finding in a real browser on `python -m demo` (two pods, one client per
door: the L4 client's one long-lived connection pins one pod): the overview's card and
the service page name the pinned pod and give the advice. Screenshot:
test-artifacts/pinning-overview.png."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, Demo, log_in
from tests.browser.test_dashboard import LIVE_TIMEOUT_MS

pytestmark = pytest.mark.timeout(300)


def _pinned_pod(page: Page, demo: Demo) -> str:
    """The pod whose own count exceeds what Ballast and the proxyless clients sent it by
    the most, from the API's pods list (the page's session)."""
    pods = page.request.get(demo.url + "api/v1/services/inventory/pods/").json()

    def bypass(p: dict[str, float | None]) -> float:
        return (p.get("pod_rps") or 0.0) - (p.get("rps") or 0.0) - (p.get("px_rps") or 0.0)

    return str(max(pods, key=bypass)["pod"])


def test_the_overview_names_the_pod_the_l4_client_pins(page: Page, demo: Demo) -> None:
    log_in(page, demo)
    card = page.locator('section[data-service="inventory"]')
    finding = card.locator(".finding")
    expect(finding).to_contain_text("calls bypass Ballast", timeout=LIVE_TIMEOUT_MS)
    expect(finding).to_contain_text("MAX_CONNECTION_AGE")
    pinned = _pinned_pod(page, demo)
    expect(finding).to_contain_text(f"of pod {pinned}'s calls", timeout=LIVE_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pinning-overview.png"), full_page=True)
    card.get_by_role("link", name="inventory").click()
    expect(page.locator("#finding")).to_contain_text(
        f"of pod {pinned}'s calls", timeout=LIVE_TIMEOUT_MS
    )
