"""What the pages hold in a real browser on a running demo: nothing leaves the page's
origin, the charts are light (plotly gzipped, no cloud link, toolbars out of the tab
order), one legend names the table's pods in their colors, the table fits at 1400 px
and nothing overflows at 390 px, stale figures look stale and an expired session stops
every request; and the pages say in words which path is skewed.

Screenshots of the overview and the service page (light, dark, narrow) go to
test-artifacts/story-*.png.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from tests.browser.conftest import ARTIFACTS, Demo, log_in
from tests.browser.test_dashboard import CHARTS_FILLED, LIVE_TIMEOUT_MS, draw_every_chart

pytestmark = pytest.mark.timeout(300)

# Every WebSocket the page opens is kept in window.__sockets; while window.__blockSockets
# is true a new one is failed while it connects (a close event, code 1006): the dashboard
# is away for the page. (Another origin would not do: the Content-Security-Policy's
# connect-src refuses it, and Chromium then sends the page no close event at all.)
SOCKETS = """
(() => {
  const Real = window.WebSocket;
  window.__sockets = [];
  window.__blockSockets = false;
  window.WebSocket = function (url, protocols) {
    const socket = new Real(url, protocols);
    if (window.__blockSockets) socket.close();
    window.__sockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Real.prototype;
  Object.assign(window.WebSocket, { OPEN: 1, CLOSED: 3, CONNECTING: 0, CLOSING: 2 });
})();
"""

TABLE_PODS = "() => [...document.querySelectorAll('#pods tbody tr')].map((r) => r.dataset.pod)"
LEGEND_PODS = (
    "() => [...document.querySelectorAll('#legend .legend-item')].map((b) => b.dataset.pod)"
)
NO_OVERFLOW = "() => document.documentElement.scrollWidth <= window.innerWidth"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.hostname or "", str(parts.port)


@pytest.fixture
def context_at(browser: Browser) -> Iterator[object]:
    """Makes browser contexts of a given size and color scheme, closed at the end."""
    made: list[BrowserContext] = []

    def make(width: int, height: int = 900, scheme: str = "light") -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme=scheme,  # type: ignore[arg-type]
        )
        made.append(context)
        return context.new_page()

    yield make
    for context in made:
        context.close()


def _service_page(page: Page, demo: Demo) -> None:
    log_in(page, demo, "services/inventory/")
    expect(page).to_have_url(re.compile(r"/services/inventory/$"))
    page.wait_for_function(CHARTS_FILLED, timeout=LIVE_TIMEOUT_MS)


def test_no_request_leaves_the_pages_origin(page: Page, demo: Demo) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: requests.append(ws.url))
    _service_page(page, demo)
    page.hover("#chart-rps")  # the mode bar shows on hover
    page.goto(demo.url)
    expect(page.locator('section[data-service="inventory"] .bar').first).to_be_visible()
    page.goto(demo.url + "audit/")
    home = _origin(demo.url)
    outside = [u for u in requests if not u.startswith("data:") and _origin(u) != home]
    assert requests and outside == [], outside


def test_the_charts_have_no_cloud_link_and_a_minimal_toolbar(page: Page, demo: Demo) -> None:
    gzipped: list[str] = []

    def note(request: Request) -> None:
        response = request.response()
        if response and request.url.endswith("/plotly.min.js"):
            gzipped.append(response.headers.get("content-encoding", ""))

    page.on("requestfinished", note)
    _service_page(page, demo)
    assert gzipped == ["gzip"]
    page.hover("#chart-rps")
    buttons = page.locator("#chart-rps .modebar-btn")
    titles = buttons.evaluate_all("(els) => els.map((b) => b.dataset.title || b.title)")
    assert 1 <= len(titles) <= 3, titles
    assert not any(re.search(r"share|cloud|chart studio|plotly", t, re.I) for t in titles)
    assert page.locator(".chart .modebar a[href]").count() == 0  # no logo linking out


def test_the_chart_toolbars_are_out_of_the_tab_order(page: Page, demo: Demo) -> None:
    _service_page(page, demo)
    page.hover("#chart-rps")
    tabbable = page.evaluate(
        """() => [...document.querySelectorAll('.chart a, .chart button, .chart [tabindex]')]
             .filter((el) => el.tabIndex >= 0).length"""
    )
    assert tabbable == 0
    # The first tab stops are the page's own controls, and the focus shows.
    page.locator("body").focus()
    for _ in range(4):
        page.keyboard.press("Tab")
    focused = page.evaluate(
        """() => { const el = document.activeElement;
                   return [el.closest('.chart') === null, getComputedStyle(el).outlineStyle]; }"""
    )
    assert focused == [True, "solid"]


POD_TRACES_VISIBLE = """([id, pod]) => (document.getElementById(id).data || [])
    .filter((t) => String(t.name).startsWith(pod)).map((t) => t.visible)"""


def test_one_legend_names_the_tables_pods_in_their_colors(page: Page, demo: Demo) -> None:
    _service_page(page, demo)
    page.wait_for_function(f"() => ({LEGEND_PODS})().length > 0", timeout=LIVE_TIMEOUT_MS)
    table = page.evaluate(TABLE_PODS)
    assert sorted(page.evaluate(LEGEND_PODS)) == sorted(table)
    assert sorted(
        page.evaluate("() => document.getElementById('chart-rps').data.map((t) => t.name)")
    ) == sorted(table)
    colors = page.evaluate(
        """() => [...document.querySelectorAll('#legend .legend-item')].map((b) => [
             b.querySelector('.swatch').style.backgroundColor,
             document.querySelector(`#pods tr[data-pod="${b.dataset.pod}"] td`)
               .style.borderLeftColor])"""
    )
    assert colors and all(legend == row for legend, row in colors), colors
    assert len({legend for legend, _ in colors}) == len(colors)  # one color per pod

    # A click hides a pod on every chart; another shows it again.
    pod = table[0]
    item = page.locator(f'#legend .legend-item[data-pod="{pod}"]')
    item.click()
    expect(item).to_have_attribute("aria-pressed", "false")
    # Charts out of view are redrawn when scrolled to: look at each as a reader would.
    charts = page.evaluate("() => [...document.querySelectorAll('.chart')].map((d) => d.id)")
    hidden = []
    for chart in charts:
        page.locator(f"#{chart}").scroll_into_view_if_needed()
        page.wait_for_function(
            f"(a) => ({POD_TRACES_VISIBLE})(a).every((v) => v === false)",
            arg=[chart, pod],
            timeout=LIVE_TIMEOUT_MS,
        )
        hidden += page.evaluate(POD_TRACES_VISIBLE, [chart, pod])
    assert hidden and all(v is False for v in hidden), hidden
    item.click()
    expect(item).to_have_attribute("aria-pressed", "true")

    # Rates are smoothed by default, the raw figures one click away.
    expect(page.locator("#chart-rps .gtitle")).to_contain_text("5 s mean")
    page.locator("#smooth").click()
    expect(page.locator("#smooth")).to_have_text("rates: raw")
    expect(page.locator("#chart-rps .gtitle")).not_to_contain_text("mean")


def test_the_pod_table_fits_at_1400_px(context_at: object, demo: Demo) -> None:
    page = context_at(1400)  # type: ignore[operator]
    _service_page(page, demo)
    wrap = page.locator(".table-wrap")
    assert wrap.evaluate("(el) => el.scrollWidth <= el.clientWidth"), "the table scrolls sideways"
    right = wrap.evaluate("(el) => el.getBoundingClientRect().right")
    for box in page.locator("#pods td.actions").all():
        rect = box.bounding_box()
        assert rect is not None and rect["x"] + rect["width"] <= right + 1
        expect(box.get_by_role("button", name="restart")).to_be_visible()
    assert page.evaluate(NO_OVERFLOW)
    draw_every_chart(page)
    page.screenshot(path=str(ARTIFACTS / "story-service-1400.png"), full_page=True)


@pytest.mark.parametrize("path", ["", "services/inventory/"])
def test_nothing_overflows_the_page_at_390_px(context_at: object, demo: Demo, path: str) -> None:
    page = context_at(390, 844)  # type: ignore[operator]
    log_in(page, demo, path)
    if path:
        page.wait_for_function(CHARTS_FILLED, timeout=LIVE_TIMEOUT_MS)
    else:
        expect(page.locator(".service .bar").first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate(NO_OVERFLOW), page.evaluate("document.documentElement.scrollWidth")
    if path:
        draw_every_chart(page)
    name = "story-service-narrow.png" if path else "story-overview-narrow.png"
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_a_lost_socket_greys_the_figures_and_says_since_when(page: Page, demo: Demo) -> None:
    page.add_init_script(SOCKETS)
    _service_page(page, demo)
    expect(page.locator("#status")).to_have_text("live")
    page.evaluate("() => { window.__blockSockets = true; window.__sockets.at(-1).close(); }")
    status = page.locator("#status")
    expect(status).to_contain_text(re.compile(r"disconnected since \d\d:\d\d:\d\d"))
    expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
    # Greyed (it fades in, so this waits for it).
    page.wait_for_function(
        "() => Number(getComputedStyle(document.getElementById('imbalance')).opacity) < 0.6"
    )
    page.screenshot(path=str(ARTIFACTS / "story-service-disconnected.png"), full_page=True)
    # Back: live again, not grey.
    page.evaluate("() => { window.__blockSockets = false; }")
    expect(status).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))


def test_frames_that_stop_on_an_open_socket_grey_the_figures(page: Page, demo: Demo) -> None:
    """A collector that hangs: the demo's process (dashboard and collector) stopped with
    SIGSTOP keeps the socket open but sends no frame. After three frame intervals the page
    greys and says since when; SIGCONT brings it back to live."""
    page.add_init_script(SOCKETS)
    _service_page(page, demo)
    status = page.locator("#status")
    expect(status).to_have_text("live")
    os.kill(demo.process.pid, signal.SIGSTOP)
    try:
        expect(status).to_contain_text(re.compile(r"no data since \d\d:\d\d:\d\d"), timeout=15_000)
        expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
        page.wait_for_function(
            "() => Number(getComputedStyle(document.getElementById('imbalance')).opacity) < 0.6"
        )
        assert page.evaluate("() => window.__sockets.at(-1).readyState") == 1  # still open
        page.screenshot(path=str(ARTIFACTS / "story-service-no-data.png"), full_page=True)
    finally:
        os.kill(demo.process.pid, signal.SIGCONT)
    expect(status).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))
    assert page.evaluate("() => window.__sockets.length") == 1  # the same socket all along


def test_the_latency_distribution_shows_each_pod_in_its_color(page: Page, demo: Demo) -> None:
    """Per pod, the share of its calls in each latency bucket over the last minute, in
    the pod's legend color; the legend hides a pod there too; p50/p90/p99 stay."""
    _service_page(page, demo)
    page.locator("#chart-latency_dist").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => (document.getElementById('chart-latency_dist').data || []).length >= 2",
        timeout=LIVE_TIMEOUT_MS,
    )
    traces = page.evaluate(
        """() => document.getElementById('chart-latency_dist').data.map((t) =>
             ({name: t.name, type: t.type, color: t.marker.color, x: t.x, y: t.y}))"""
    )
    assert sorted(t["name"] for t in traces) == sorted(page.evaluate(TABLE_PODS))
    legend = dict(
        page.evaluate(
            """() => [...document.querySelectorAll('#legend .legend-item')].map((b) =>
                 [b.dataset.pod, b.querySelector('.swatch').style.backgroundColor])"""
        )
    )
    for trace in traces:
        assert trace["type"] == "bar"
        assert _rgb(trace["color"]) == legend[trace["name"]]
        assert all(re.fullmatch(r"[≤>][\d.]+s?", label) for label in trace["x"]), trace["x"]
        assert abs(sum(trace["y"]) - 100) < 0.5, trace  # shares of the pod's calls
    assert page.evaluate(
        "() => document.getElementById('chart-latency').data.map((t) => t.name)"
    ) == ["p50", "p90", "p99"]
    pod = traces[0]["name"]
    page.locator(f'#legend .legend-item[data-pod="{pod}"]').click()
    visible = page.evaluate(
        """(pod) => document.getElementById('chart-latency_dist').data
             .filter((t) => t.name === pod).map((t) => t.visible)""",
        pod,
    )
    assert visible == [False]
    page.screenshot(path=str(ARTIFACTS / "story-service-latency.png"), full_page=True)


def _rgb(hex_color: str) -> str:
    """#4e79a7 → rgb(78, 121, 167), as the browser gives a style's color back."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_the_overview_greys_its_cards_while_the_dashboard_is_away(page: Page, demo: Demo) -> None:
    log_in(page, demo)
    status = page.locator("#status")
    expect(status).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    page.route("**/overview/cards", lambda route: route.abort())
    expect(status).to_contain_text(
        re.compile(r"disconnected since \d\d:\d\d:\d\d"), timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
    page.unroute("**/overview/cards")
    expect(status).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))


def test_an_expired_session_stops_every_request(page: Page, demo: Demo) -> None:
    _service_page(page, demo)
    expect(page.locator("#status")).to_have_text("live")
    # The session ends on the server's side: the next poll is answered 401.
    page.context.clear_cookies()
    status = page.locator("#status")
    expect(status).to_contain_text("session expired — log in again", timeout=20_000)
    expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
    after: list[str] = []
    page.on("request", lambda r: after.append(r.url))
    # Longer than every poll's interval (operations 5 s, overrides 5 s, audit 10 s).
    page.wait_for_timeout(12_000)
    assert after == [], after
    expect(status.get_by_role("link", name="log in again")).to_have_attribute(
        "href", re.compile(r"/accounts/login/\?next=")
    )

    page.goto(demo.url)  # the overview, after logging in again
    page.fill("#id_username", demo.username)
    page.fill("#id_password", demo.password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    expect(page.locator("#status")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    page.context.clear_cookies()
    expect(page.locator("#status")).to_contain_text("session expired", timeout=20_000)
    after.clear()
    page.wait_for_timeout(6_000)
    assert after == [], after


def test_the_overview_says_which_path_is_skewed(page: Page, demo: Demo) -> None:
    """The demo's one L4 client is pinned to one pod: the bypassing path is skewed,
    Ballast's is not flagged."""
    log_in(page, demo)
    card = page.locator('section[data-service="inventory"]')
    story = card.locator(".story")
    expect(story).to_contain_text(
        "Clients that bypass Ballast: busiest pod", timeout=LIVE_TIMEOUT_MS
    )
    expect(story).to_contain_text("pinned by L4 connections")
    # Even, or leaning away from the pinned pod as least_request (the demo's policy) does.
    expect(story).to_contain_text(
        re.compile(r"Via Ballast: (even|busiest pod .* by design)"), timeout=LIVE_TIMEOUT_MS
    )
    expect(card.locator(".badge", has_text="bypassing Ballast")).to_contain_text("imbalanced")
    card.get_by_role("link", name="inventory").click()
    expect(page.locator("#bypass-imbalance")).to_contain_text(
        "bypassing Ballast: imbalanced", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("#story")).to_contain_text("pinned by L4 connections")


def test_an_action_answers_at_the_top_and_marks_the_charts(page: Page, demo: Demo) -> None:
    """Drain and undrain from the table, scrolled down to it: the outcome shows at the
    top of the window, and the charts get a marker where it happened."""
    _service_page(page, demo)
    page.on("dialog", lambda dialog: dialog.accept())
    pod = page.evaluate(TABLE_PODS)[0]
    row = page.locator(f'#pods tbody tr[data-pod="{pod}"]')
    row.get_by_role("button", name="drain", exact=True).click()
    toast = page.locator("#action-status")
    expect(toast).to_contain_text(f"drain {pod}: ok", timeout=LIVE_TIMEOUT_MS)
    box = toast.bounding_box()
    assert box is not None and 0 <= box["y"] < 100, box  # in view, at the top
    row.get_by_role("button", name="undrain").click()
    expect(toast).to_contain_text(f"undrain {pod}: ok", timeout=LIVE_TIMEOUT_MS)
    page.evaluate("window.scrollTo(0, 0)")  # back up to the charts (out of view: not drawn)
    page.wait_for_function(
        """() => ((document.getElementById('chart-rps').layout || {}).annotations || [])
             .some((a) => String(a.text).split(' · ').includes('drain'))""",
        timeout=LIVE_TIMEOUT_MS,
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_both_pages(context_at: object, demo: Demo, scheme: str) -> None:
    page = context_at(1400, 900, scheme)  # type: ignore[operator]
    log_in(page, demo)
    expect(page.locator(".service .story")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / f"story-overview-{scheme}.png"), full_page=True)
    page.goto(demo.url + "services/inventory/")
    page.wait_for_function(CHARTS_FILLED, timeout=LIVE_TIMEOUT_MS)
    draw_every_chart(page)
    page.wait_for_function("() => document.getElementById('chart-mem').data.length >= 4")
    page.screenshot(path=str(ARTIFACTS / f"story-service-{scheme}.png"), full_page=True)
