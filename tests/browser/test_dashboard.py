"""What an operator sees in a real browser: log in, watch the charts fill with live data
from a running demo, and see the pods pinned by L4 clients flagged while Ballast's share
stays even."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Demo, log_in

# Generous: on a busy machine the demo's pods take seconds to start and the pods'
# own rates need two scrapes. Waits end as soon as the page shows what is expected.
LIVE_TIMEOUT_MS = 45_000

CHARTS_FILLED = """() => {
  const div = document.getElementById("chart-rps");
  return !!div && Array.isArray(div.data) && div.data.length >= 2
    && div.data.every((trace) => trace.x.length >= 3 && trace.y.at(-1) > 0);
}"""


def draw_every_chart(page: Page) -> None:
    """Scrolls each chart into view (charts out of view wait to be drawn), then back up,
    so that every chart holds its lines (and a full-page screenshot shows them all)."""
    for chart in page.locator(".chart").all():
        chart.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].every((d) => Array.isArray(d.data))"
    )
    page.evaluate("window.scrollTo(0, 0)")


def test_every_page_needs_a_login_and_a_wrong_password_is_refused(page: Page, demo: Demo) -> None:
    page.goto(demo.url + "services/inventory/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/services/inventory/"))
    page.fill("#id_username", demo.username)
    page.fill("#id_password", demo.password + "-wrong")
    page.click("button[type=submit]")
    expect(page.get_by_text("did not match")).to_be_visible()


def test_the_service_page_fills_with_live_per_pod_data(page: Page, demo: Demo) -> None:
    log_in(page, demo, "services/inventory/")
    expect(page).to_have_url(re.compile(r"/services/inventory/$"))
    page.wait_for_function(CHARTS_FILLED, timeout=LIVE_TIMEOUT_MS)

    expect(page.locator("#status")).to_have_text(re.compile("^live"))
    rows = page.locator("#pods tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(re.compile(r"inventory-\w+-\w+"))
    expect(rows.first).to_contain_text("READY")
    # Every chart drew one line per pod (memory: the usage and the dashed limit; no
    # error code yet; latency: one bar series per quantile, and per pod its distribution).
    draw_every_chart(page)
    page.wait_for_function(
        "() => document.getElementById('chart-methods').data.length > 0", timeout=LIVE_TIMEOUT_MS
    )
    lines = page.evaluate(
        "() => [...document.querySelectorAll('.chart')].map((d) => [d.id, d.data.length])"
    )
    lines = dict(lines)
    # The pods' calls by method: a line per method the clients call.
    assert lines.pop("chart-methods") >= 1
    assert lines == {
        "chart-rps": 2, "chart-px_rps": 2, "chart-bypass": 2, "chart-pod_rps": 2, "chart-p99": 2,
        "chart-err_s": 2,
        "chart-codes": 0, "chart-latency": 3, "chart-latency_dist": 2,
        "chart-in_flight": 2, "chart-cpu_m": 2, "chart-mem": 4,
    }  # fmt: skip


def test_the_pods_pinned_by_l4_clients_are_flagged(page: Page, demo: Demo) -> None:
    """One L4 client holds one connection, so one pod takes all its calls; Ballast's
    client is spread over both pods."""
    log_in(page, demo)
    card = page.locator('section[data-service="inventory"]')
    bypassing = card.locator(".badge", has_text="bypassing Ballast")
    expect(bypassing).to_contain_text("imbalanced", timeout=LIVE_TIMEOUT_MS)
    expect(bypassing).to_have_class(re.compile(r"\bwarn\b"))
    expect(card).to_have_class(re.compile(r"\bflagged\b"))
    # Ballast's share is even, or (least_request, the demo's policy) leans away from the
    # pinned pod, which a slow machine makes the slower one: either way, not flagged.
    via_ok = re.compile(r"via Ballast: (balanced|leans away from L4 load)")
    via = card.locator(".badge", has_text="via Ballast")
    expect(via).to_contain_text(via_ok, timeout=LIVE_TIMEOUT_MS)
    expect(via).to_have_class(re.compile(r"\bok\b"))

    card.get_by_role("link", name="inventory").click()
    badge = page.locator("#bypass-imbalance")
    expect(badge).to_contain_text("bypassing Ballast: imbalanced", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#imbalance")).to_contain_text(via_ok, timeout=LIVE_TIMEOUT_MS)


def test_the_service_page_shows_the_proxyless_clients_and_their_calls(
    page: Page, demo: Demo
) -> None:
    """The demo's third group (xds:///inventory): its client is on the version served, its calls
    per pod are drawn, and the overview adds them up."""
    log_in(page, demo, "services/inventory/")
    badge = page.locator("#xds-clients")
    expect(badge).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    all_on = re.compile(r"^xDS clients: 1, all on version \d+")
    expect(badge).to_have_text(all_on, timeout=LIVE_TIMEOUT_MS)
    page.wait_for_function(
        """() => {
          const chart = document.getElementById('chart-px_rps');
          return chart.data && chart.data.some((line) => line.y.some((v) => v > 0));
        }""",
        timeout=LIVE_TIMEOUT_MS,
    )
    page.goto(demo.url)
    figure = page.locator("section[data-service=inventory] .figures div", has_text="proxyless")
    expect(figure.locator("b")).not_to_have_text(re.compile(r"^(—|0\.0)$"))
    expect(page.locator("section[data-service=inventory]")).to_contain_text("xDS clients: 1")
