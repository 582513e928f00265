"""Explain and preview on the service page of a running demo (two pods): the "why" of a
pod opens on demand, by mouse or keyboard; the share of every pod after a weight shows
beside the controls before "set", and after a drain before its confirmation."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Dialog, Locator, Page, expect

from tests.browser.conftest import Demo, log_in

pytestmark = pytest.mark.timeout(300)

PODS = 2
LIVE_TIMEOUT_MS = 60_000

ALL_READY = """(n) => {
  const rows = [...document.querySelectorAll("#pods tbody tr")];
  return rows.length === n && rows.every((r) => r.cells[1].textContent === "READY"
    && parseFloat(r.cells[5].textContent) > 0 && r.querySelector("button[data-act=drain]"));
}"""

# What the pod's preview showed when the page asked its confirmation (confirm() blocks
# the page, so it is read by the page itself at that moment).
RECORD_PREVIEW_AT_CONFIRM = """(pod) => {
  const ask = window.confirm;
  window.confirm = (message) => {
    const box = document.querySelector(`tr[data-pod="${pod}"] [data-role=preview]`);
    window.previewAtConfirm = box && !box.hidden ? box.textContent : null;
    return ask(message);
  };
}"""


def open_service_page(page: Page, demo: Demo) -> list[str]:
    """The page, once both pods are READY with traffic; the pods' names, sorted."""
    log_in(page, demo, "services/inventory/")
    expect(page).to_have_url(re.compile(r"/services/inventory/$"))
    page.wait_for_function(ALL_READY, arg=PODS, timeout=LIVE_TIMEOUT_MS)
    names: list[str] = page.eval_on_selector_all(
        "#pods tbody tr", "(rows) => rows.map((r) => r.dataset.pod)"
    )
    return sorted(names)


def row_of(page: Page, pod: str) -> Locator:
    return page.locator(f'#pods tbody tr[data-pod="{pod}"]')


def test_the_why_of_a_pod_opens_on_demand_by_mouse_and_keyboard(page: Page, demo: Demo) -> None:
    first, second = open_service_page(page, demo)
    panel = page.locator("#why-panel")
    expect(panel).to_be_hidden()
    why = row_of(page, first).get_by_role("button", name="why")
    why.click()
    expect(why).to_have_attribute("aria-expanded", "true")
    expect(panel).to_be_visible()
    expect(panel.locator(".why-summary")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(panel.get_by_role("heading")).to_have_text(f"Why {first} gets its share")
    # The demo balances by least_request: the share is the weights' at equal load.
    expect(panel).to_contain_text("expected share 50.0 % (least_request: by weights at equal load)")
    expect(panel.locator("dt", has_text="slow start")).to_be_visible()
    expect(panel.locator("dt", has_text="ejections")).to_be_visible()

    # The other pod's, from the keyboard: its button takes the focus, Enter opens it.
    other = row_of(page, second).get_by_role("button", name="why")
    other.focus()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("heading")).to_have_text(
        f"Why {second} gets its share", timeout=LIVE_TIMEOUT_MS
    )
    expect(why).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")  # again: it closes
    expect(panel).to_be_hidden()


def test_the_preview_shows_beside_the_controls_before_the_operator_confirms(
    page: Page, demo: Demo
) -> None:
    first, second = open_service_page(page, demo)
    row = row_of(page, first)
    preview = row.locator("[data-role=preview]")
    expect(preview).to_be_hidden()

    # A weight typed, not set: every pod's share after it, and nothing applied yet.
    row.get_by_label(f"weight of {first}", exact=True).fill("300")
    expect(preview).to_contain_text(
        f"after weight 300 on {first} (at equal load): {first} 50.0 % → 75.0 %,"
        f" {second} 50.0 % → 25.0 %",
        timeout=LIVE_TIMEOUT_MS,  # a busy machine answers the dry run late
    )
    expect(row.locator("td").nth(2)).to_have_text("100")
    row.get_by_role("button", name="set", exact=True).click()
    status = page.locator("#action-status")
    expect(status).to_contain_text(f"weight of {first} to 300: ok", timeout=LIVE_TIMEOUT_MS)
    expect(preview).to_be_hidden(timeout=LIVE_TIMEOUT_MS)
    # The preview reads the newest frame: wait until it shows the weight applied.
    expect(row.locator("td").nth(2)).to_contain_text("300", timeout=LIVE_TIMEOUT_MS)

    # A drain: the preview is beside the control when the page asks, and in the question.
    page.evaluate(RECORD_PREVIEW_AT_CONFIRM, second)
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()  # the operator thinks better of it

    page.on("dialog", answer)
    row_of(page, second).get_by_role("button", name="drain", exact=True).click()
    page.wait_for_function("() => window.previewAtConfirm !== undefined", timeout=LIVE_TIMEOUT_MS)
    shown = page.evaluate("() => window.previewAtConfirm")
    assert shown is not None and f"after drain {second} (at equal load): " in shown
    assert f"{second} 25.0 % → 0.0 %" in shown
    assert f"{first} 75.0 % → 100.0 %" in shown
    warning = f"draining {second} leaves 1 READY pod taking requests, fewer than the floor of 2"
    assert warning in shown
    (question,) = asked
    assert (
        f"Expected share after it (at equal load): {first} 75.0 % → 100.0 %,"
        f" {second} 25.0 % → 0.0 %"
    ) in question
    assert f"⚠ {warning}" in question
    # Dismissed: nothing changed.
    expect(row_of(page, second).locator("td").nth(1)).to_have_text("READY")
    expect(row_of(page, second).locator("[data-role=preview]")).to_be_hidden()


CPU_KNOWN = """() => [...document.querySelectorAll("#pods tbody tr")].every(
  (r) => /^[1-9][0-9]*$/.test(r.cells[10].textContent))"""


def test_a_preview_warns_from_the_pods_real_cpu(page: Page, demo: Demo) -> None:
    """The demo's pods are real processes whose CPU the local platform measures (the
    table shows it once measured): with a threshold of 0 m, the pod that would gain
    share is said to run hot, and the one that loses share is not."""
    first, second = open_service_page(page, demo)
    page.wait_for_function(CPU_KNOWN, timeout=LIVE_TIMEOUT_MS)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    url = f"{demo.url}api/v1/services/inventory/pods/{second}/weight?dry_run=1&hot_cpu_m=0"
    reply = page.request.post(url, data={"weight": 5000}, headers={"X-CSRFToken": csrf})
    assert reply.status == 200, reply.text()
    answer = reply.json()
    gaining = next(p for p in answer["pods"] if p["pod"] == second)
    assert gaining["share_after"] > gaining["share"]
    hot = [w for w in answer["warnings"] if w["kind"] == "hot"]
    assert gaining["cpu_m"] > 0
    assert gaining["cpu_after_m"] > gaining["cpu_m"]
    # Only the pod that gains share: the other loses some, and runs cooler.
    assert [w["pod"] for w in hot] == [second]
    cooler = next(p for p in answer["pods"] if p["pod"] == first)
    assert cooler["cpu_after_m"] is None or cooler["cpu_after_m"] <= cooler["cpu_m"]
