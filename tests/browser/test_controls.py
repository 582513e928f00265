"""What an operator does from the service page of a running demo, and sees happen: drain a
pod and watch its traffic move to its siblings, restart one with no client error, give one
more weight. The demo's `operator` account has the operator role.

No timed assertion: each wait ends as soon as the page shows the expected state, and
asserts its direction (this pod's rps fell, those rose), not how fast.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import ARTIFACTS, Demo, log_in

# Real restarts of real processes, on a machine that may be busy: the demo's start, a
# drain that may wait 30 s for calls in flight, the new pod's readiness.
pytestmark = pytest.mark.timeout(300)

PODS = 3
LIVE_TIMEOUT_MS = 60_000
RESTART_TIMEOUT_MS = 150_000
# Redrawn by every frame, in view or not (charts out of view wait until scrolled to).
FIRST_TOTAL = "#totals > span"

# The pod table's columns, as the page lays them out.
POD, STATE, WEIGHT, EXPECTED, ACTUAL, RPS, RESTARTS = 0, 1, 2, 3, 4, 5, 12

# Every row READY and carrying traffic via Ballast, with the operator's buttons shown.
ALL_READY = """(n) => {
  const rows = [...document.querySelectorAll("#pods tbody tr")];
  return rows.length === n && rows.every((r) => r.cells[1].textContent === "READY"
    && parseFloat(r.cells[5].textContent) > 0 && r.querySelector("button[data-act=drain]"));
}"""

TABLE = """() => [...document.querySelectorAll("#pods tbody tr")].map(
  (r) => [...r.cells].map((td) => td.childNodes.length ? td.childNodes[0].textContent : ""))"""


def open_service_page(page: Page, demo: Demo) -> None:
    log_in(page, demo, "services/inventory/")
    expect(page).to_have_url(re.compile(r"/services/inventory/$"))
    page.wait_for_function(ALL_READY, arg=PODS, timeout=LIVE_TIMEOUT_MS)
    # Every confirm() of this page is accepted, as the operator would.
    page.on("dialog", lambda dialog: dialog.accept())


def table(page: Page) -> dict[str, list[str]]:
    """The pod table by pod name: each row's cell texts (the weight without its marker)."""
    rows: list[list[str]] = page.evaluate(TABLE)
    return {row[POD]: row for row in rows}


def row_of(page: Page, pod: str) -> Locator:
    return page.locator(f'#pods tbody tr[data-pod="{pod}"]')


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def wait_for(page: Page, condition: str, arg: Any, timeout: int = LIVE_TIMEOUT_MS) -> None:
    """Waits until `condition(arg, table)` holds, `table` as `table()` reads it."""
    page.wait_for_function(
        f"""(arg) => {{
          const rows = ({TABLE})();
          const byPod = Object.fromEntries(rows.map((r) => [r[0], r]));
          return ({condition})(arg, byPod);
        }}""",
        arg=arg,
        timeout=timeout,
    )


def snapshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_draining_a_hot_pod_moves_its_traffic_to_its_siblings(page: Page, busy_demo: Demo) -> None:
    open_service_page(page, busy_demo)
    before = table(page)
    pod, *siblings = sorted(before)
    rps_before = {name: float(before[name][RPS]) for name in siblings}

    row_of(page, pod).get_by_role("button", name="drain", exact=True).click()
    expect(page.locator("#action-status")).to_contain_text(f"drain {pod}: ok")

    # Its rps via Ballast falls to 0 and each sibling carries more than before.
    wait_for(
        page,
        """({pod, before}, rows) => rows[pod] && rows[pod][1] === "DRAINED"
             && parseFloat(rows[pod][5]) === 0
             && Object.entries(before).every(([s, rps]) => parseFloat(rows[s][5]) > rps)""",
        {"pod": pod, "before": rps_before},
    )
    row = row_of(page, pod)
    expect(row.locator(".override")).to_be_visible()
    expect(row.get_by_role("button", name="clear", exact=True)).to_be_visible()
    snapshot(page, "test_controls-drained")

    row.get_by_role("button", name="undrain").click()
    expect(page.locator("#action-status")).to_contain_text(f"undrain {pod}: ok")
    expect(row.locator("td").nth(STATE)).to_have_text("READY", timeout=LIVE_TIMEOUT_MS)
    expect(row.locator(".override")).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#replicas")).to_have_text("balancers 1/1 up, in sync")


STEPS_SEEN = """() => {
  window.stepsSeen = [];
  const el = document.getElementById("operation");
  new MutationObserver(() => {
    const step = el.dataset.step;  // set by each render of the operation's progress
    if (step && window.stepsSeen.at(-1) !== step) window.stepsSeen.push(step);
  }).observe(el, { childList: true, subtree: true, attributes: true });
}"""

# The errors/s every pod had via Ballast since `since` (browser ms), from the errors chart.
ERRORS_SINCE = """(since) => document.getElementById("chart-err_s").data.flatMap(
  (trace) => trace.y.filter((y, i) => new Date(trace.x[i]).getTime() >= since && y != null))"""


def test_restarting_a_pod_replaces_it_with_no_client_error(page: Page, busy_demo: Demo) -> None:
    open_service_page(page, busy_demo)
    before = table(page)
    old = sorted(before)[0]
    page.evaluate(STEPS_SEEN)
    since = page.evaluate("Date.now()")

    row_of(page, old).get_by_role("button", name="restart").click()
    progress = page.locator("#operation")
    expect(progress).to_contain_text(f"restart {old}")
    expect(progress).to_contain_text("done", timeout=RESTART_TIMEOUT_MS)
    expect(progress).to_contain_text("new pod inventory-")

    steps = page.evaluate("window.stepsSeen")
    order = ["draining", "drained", "restarting", "waiting_ready", "done"]
    assert steps[-1] == "done" and len(steps) >= 2, steps
    assert steps == sorted(steps, key=order.index), steps

    # The old name is gone; a new pod holds its slot (restarts 0, as after an eviction), READY.
    wait_for(
        page,
        """({old, names}, rows) => !(old in rows) && Object.values(rows).some(
             (r) => !names.includes(r[0]) && r[12] === "0" && r[1] === "READY")""",
        {"old": old, "names": list(before)},
    )
    after = table(page)
    assert len(after) == PODS
    new = [name for name in after if name not in before]
    assert len(new) == 1 and after[new[0]][RESTARTS] == "0", after
    expect(progress).to_contain_text(f"new pod {new[0]}")

    # Ballast's clients saw no error: drained first, restarted after.
    errors = page.evaluate(ERRORS_SINCE, since)
    assert errors and all(e == 0 for e in errors), errors
    expect(page.locator("#totals")).to_contain_text("errors 0.0%")


def test_more_weight_gives_a_pod_a_bigger_share(page: Page, busy_demo: Demo) -> None:
    open_service_page(page, busy_demo)
    pod = sorted(table(page))[-1]
    expected_before = percent(table(page)[pod][EXPECTED])
    row = row_of(page, pod)
    weight = row.get_by_label(f"weight of {pod}", exact=True)
    set_button = row.get_by_role("button", name="set", exact=True)
    expect(set_button).to_be_disabled()

    weight.fill("300")
    expect(set_button).to_be_enabled()
    # Frames keep re-rendering the table: the number being edited stays. (Counted by the
    # totals, which every frame redraws; the charts, out of view down here, wait.)
    for _ in range(2):
        page.evaluate(f'document.querySelector("{FIRST_TOTAL}").dataset.seen = "1"')
        page.wait_for_function(f'() => !document.querySelector("{FIRST_TOTAL}")?.dataset.seen')
    expect(weight).to_have_value("300")
    expect(row.locator("td").nth(WEIGHT)).not_to_contain_text("300")  # nothing applied yet

    set_button.click()
    expect(page.locator("#action-status")).to_contain_text(f"weight of {pod} to 300: ok")
    expected_after = 300 / (300 + 100 * (PODS - 1))
    wait_for(
        page,
        """({pod, least}, rows) => rows[pod] && rows[pod][2] === "300"
             && parseFloat(rows[pod][4]) / 100 > least""",
        {"pod": pod, "least": (expected_before + expected_after) / 2},
    )
    assert percent(table(page)[pod][EXPECTED]) > expected_before
    expect(row.locator(".override")).to_be_visible()
    snapshot(page, "test_controls-weighted")

    row.get_by_role("button", name="clear", exact=True).click()
    expect(page.locator("#action-status")).to_contain_text(f"clear the override of {pod}: ok")
    expect(row.locator("td").nth(WEIGHT)).to_have_text("100", timeout=LIVE_TIMEOUT_MS)


def test_a_policy_is_switched_and_then_cleared_from_the_page(page: Page, busy_demo: Demo) -> None:
    open_service_page(page, busy_demo)
    select, clear = page.locator("#policy"), page.locator("#policy-clear")
    expect(select).to_have_value("least_request")  # the demo's policy, from the frames
    expect(clear).to_be_hidden()

    select.select_option("round_robin")
    page.locator("#policy-apply").click()
    status = page.locator("#action-status")
    expect(status).to_contain_text("policy of inventory to round_robin: ok")
    expect(select).to_have_value("round_robin", timeout=LIVE_TIMEOUT_MS)
    expect(clear).to_be_visible()

    clear.click()
    expect(status).to_contain_text("clear the policy override of inventory: ok")
    expect(select).to_have_value("least_request", timeout=LIVE_TIMEOUT_MS)
    expect(clear).to_be_hidden()


def test_the_audit_page_lists_what_the_operator_did(page: Page, busy_demo: Demo) -> None:
    log_in(page, busy_demo, "audit/?service=inventory")
    events = page.locator("#audit tbody tr")
    for action in ("drain", "undrain", "restart", "set_weight", "clear", "set_policy"):
        expect(events.filter(has_text=action).first).to_be_visible()
    expect(events.first.locator("td").nth(1)).to_have_text(busy_demo.username)
    expect(page.locator("#operations tbody tr").first).to_contain_text("Done")
    page.get_by_label("Action").select_option("set_weight")
    page.get_by_role("button", name="Filter").click()
    expect(events).to_have_count(1)
    expect(events.first).to_contain_text("— → weight 300")
