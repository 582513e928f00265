"""Proxyless clients follow what the operator does on the service page.

`python -m demo` runs its proxyless group (`xds:///inventory`, real grpcio xDS
clients) beside the other two; its balancer serves `[xds]`. From the page the
operator gives a pod more weight, then drains one; the xDS badge says when every
proxyless client has ACKed each change ("xDS clients: 1, all on version V"),
and the clients' own load reports (LRS, read from the balancer's admin API)
show their calls following it: the heavier pod's share grows to its weight's,
the drained pod gets no new call.

No timed assertion: every wait ends when the page or the counts show the state,
and the assertions are on counts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from playwright.sync_api import Page, expect

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.browser.conftest import ARTIFACTS, Demo, log_in, running_demo

pytestmark = pytest.mark.timeout(300)

PODS = 3
LIVE_TIMEOUT_MS = 60_000
COUNT_TIMEOUT_S = 120.0
ALL_ON = re.compile(r"^xDS clients: (\d+), all on version (\d+)")
# Every row READY and carrying traffic via Ballast, with the operator's buttons shown.
ALL_READY = """(n) => {
  const rows = [...document.querySelectorAll("#pods tbody tr")];
  return rows.length === n && rows.every((r) => r.cells[1].textContent === "READY"
    && parseFloat(r.cells[5].textContent) > 0 && r.querySelector("button[data-act=drain]"));
}"""


@dataclass(frozen=True)
class Admin:
    """The demo balancer's admin API, as its banner prints it."""

    address: str
    token: str

    def issued(self) -> dict[str, int]:
        """Calls the proxyless clients reported issuing (LRS), per pod, cumulative."""
        return {ep.endpoint_id: ep.proxyless_requests_issued for ep in self._endpoints()}

    def errored(self) -> int:
        """Calls the proxyless clients reported failed (LRS), over every pod known now."""
        return sum(ep.proxyless_requests_errored for ep in self._endpoints())

    def _endpoints(self) -> list[admin_pb2.EndpointSnapshot]:
        with grpc.insecure_channel(self.address) as channel:
            snapshot = admin_pb2_grpc.AdminStub(channel).GetSnapshot(
                admin_pb2.GetSnapshotRequest(),
                metadata=(("authorization", f"Bearer {self.token}"),),
                timeout=10,
            )
        (cluster,) = snapshot.clusters
        return list(cluster.endpoints)


@pytest.fixture(scope="module")
def proxyless_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, Admin]]:
    """The demo with three pods and two clients per door (the proxyless group included)."""
    with running_demo(tmp_path_factory, pods=PODS, clients=2) as demo:
        yield demo, _admin_from_banner(demo)


def _admin_from_banner(demo: Demo) -> Admin:
    """Reads the rest of the banner: the admin API's address and token (they follow the
    dashboard's lines `running_demo` stops at), up to the xDS server's line."""
    assert demo.process.stdout is not None
    address = token = None
    while line := demo.process.stdout.readline():
        address = address or _match(r"admin API:\s+(\S+)", line)
        token = token or _match(r"authorization: Bearer (\S+)\)", line)
        if "xDS server (proxyless):" in line:
            break
    assert address and token, "the demo's banner names no admin API or no xDS server"
    return Admin(address, token)


def _match(pattern: str, line: str) -> str | None:
    found = re.search(pattern, line)
    return found[1] if found else None


def badge_version(page: Page, clients: int, after: int = -1) -> int:
    """Waits until the badge says every one of `clients` is on one version above `after`."""
    badge = page.locator("#xds-clients")
    pattern = rf"^xDS clients: {clients}, all on version (\d+)"
    deadline = time.monotonic() + LIVE_TIMEOUT_MS / 1000
    while True:
        found = re.match(pattern, badge.text_content() or "")
        if found and int(found[1]) > after:
            return int(found[1])
        assert time.monotonic() < deadline, f"badge: {badge.text_content()!r}"
        page.wait_for_timeout(200)


def calls_from(admin: Admin, before: dict[str, int], at_least: int) -> dict[str, int]:
    """Per pod, the proxyless calls reported since `before`, once there are `at_least`."""
    deadline = time.monotonic() + COUNT_TIMEOUT_S
    while True:
        now = admin.issued()
        delta = {pod: n - before.get(pod, 0) for pod, n in now.items()}
        if sum(delta.values()) >= at_least:
            return delta
        assert time.monotonic() < deadline, f"only {sum(delta.values())} proxyless calls: {delta}"
        time.sleep(0.5)


def test_proxyless_clients_follow_a_weight_and_a_drain_set_on_the_page(
    page: Page, proxyless_demo: tuple[Demo, Admin]
) -> None:
    demo, admin = proxyless_demo
    log_in(page, demo, "services/inventory/")
    page.wait_for_function(ALL_READY, arg=PODS, timeout=LIVE_TIMEOUT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    badge = page.locator("#xds-clients")
    expect(badge).to_have_text(ALL_ON, timeout=LIVE_TIMEOUT_MS)
    clients = int(ALL_ON.match(badge.text_content() or "")[1])  # type: ignore[index]
    first = badge_version(page, clients)
    heavy, *others = sorted(admin.issued())

    row = page.locator(f'#pods tbody tr[data-pod="{heavy}"]')
    row.get_by_label(f"weight of {heavy}", exact=True).fill("300")
    row.get_by_role("button", name="set", exact=True).click()
    expect(page.locator("#action-status")).to_contain_text(f"weight of {heavy} to 300: ok")
    weighted = badge_version(page, clients, after=first)
    expect(badge).to_have_class(re.compile(r"\bok\b"))

    # From the clients' load reports: a window that starts after they ACKed the weight
    # and after any report of earlier calls (two report intervals of calls later).
    calls_from(admin, admin.issued(), at_least=100)
    shares = calls_from(admin, admin.issued(), at_least=600)
    total = sum(shares.values())
    assert 0.5 < shares[heavy] / total < 0.7, shares  # weight 300 of 500: 0.6
    assert all(0.1 < shares[pod] / total < 0.3 for pod in others), shares  # 0.2 each

    drained = others[0]
    page.locator(f'#pods tbody tr[data-pod="{drained}"]').get_by_role(
        "button", name="drain", exact=True
    ).click()
    expect(page.locator("#action-status")).to_contain_text(f"drain {drained}: ok")
    badge_version(page, clients, after=weighted)
    calls_from(admin, admin.issued(), at_least=100)  # reports of calls before the drain are in
    after = calls_from(admin, admin.issued(), at_least=300)
    assert after[drained] == 0, after  # not one new proxyless call to the drained pod
    assert after[heavy] > 0 and after[others[1]] > 0, after
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "test_proxyless_controls-drained.png"), full_page=True)


READY_ROWS = """() => [...document.querySelectorAll("#pods tbody tr")]
  .filter((r) => r.cells[1].textContent === "READY").map((r) => r.dataset.pod)"""


def proxyless_errors_since(page: Page, demo: Demo, since_ms: int) -> list[float]:
    """The proxyless clients' failed calls/s in every frame since `since_ms` (the page's
    history: what their load reports said)."""
    frames = page.request.get(demo.url + "services/inventory/history.json").json()
    return [f["totals"]["px_err_s"] for f in frames if f["t"] >= since_ms]


def test_proxyless_clients_move_to_the_pod_a_restart_from_the_page_brings(
    page: Page, proxyless_demo: tuple[Demo, Admin]
) -> None:
    demo, admin = proxyless_demo
    log_in(page, demo, "services/inventory/")
    page.on("dialog", lambda dialog: dialog.accept())
    badge = page.locator("#xds-clients")
    expect(badge).to_have_text(ALL_ON, timeout=LIVE_TIMEOUT_MS)
    clients = int(ALL_ON.match(badge.text_content() or "")[1])  # type: ignore[index]
    before = badge_version(page, clients)
    old = sorted(page.evaluate(READY_ROWS))[-1]
    pods_before = set(admin.issued())
    since_ms = int(time.time() * 1000)

    page.locator(f'#pods tbody tr[data-pod="{old}"]').get_by_role("button", name="restart").click()
    expect(page.locator("#operation")).to_contain_text("done", timeout=150_000)
    badge_version(page, clients, after=before)

    (new,) = set(admin.issued()) - pods_before
    calls = calls_from(admin, admin.issued(), at_least=300)
    assert calls.get(old, 0) == 0 and calls[new] > 0, calls  # its successor gets calls
    errors = proxyless_errors_since(page, demo, since_ms)
    assert errors and all(e == 0 for e in errors), errors  # no proxyless call failed
