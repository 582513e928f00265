"""Cancelling a running restart from the service page of a running demo: a stream held
open through Ballast keeps the pod draining, the operator presses cancel beside the
progress, the restart ends cancelled and the pod is READY again, not restarted."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator

import grpc
import pytest
from playwright.sync_api import Page, expect

from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc
from tests.browser.conftest import Demo, log_in, running_demo
from tests.browser.test_controls import LIVE_TIMEOUT_MS, row_of

pytestmark = pytest.mark.timeout(300)

PODS = 2
# Every row READY with the operator's buttons. Not "carrying traffic" as in
# test_controls: the held stream keeps one call in flight on its pod, so least_request
# sends the unary calls to the other one, and the held pod's rate may well be 0.
ALL_READY = """(n) => {
  const rows = [...document.querySelectorAll("#pods tbody tr")];
  return rows.length === n && rows.every((r) => r.cells[1].textContent === "READY"
    && r.querySelector("button[data-act=drain]"));
}"""


@pytest.fixture(scope="module")
def demo_and_ballast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, str]]:
    """The demo (two pods, one client per door) and Ballast's address from its banner."""
    with running_demo(tmp_path_factory, pods=PODS, clients=1) as demo:
        assert demo.process.stdout is not None
        address = None
        while address is None:
            line = demo.process.stdout.readline()
            assert line, "the demo's banner did not name Ballast's address"
            found = re.search(r"Ballast \(gRPC L7\):\s+(\S+)", line)
            address = found[1] if found else None
        yield demo, address


@pytest.fixture
def held_pod(demo_and_ballast: tuple[Demo, str]) -> Iterator[str]:
    """A SyncItems call through Ballast kept open; yields the pod that serves it."""
    items: queue.Queue[pb.Item | None] = queue.Queue()
    items.put(pb.Item(id="held"))

    def requests() -> Iterator[pb.Item]:
        while (item := items.get()) is not None:
            yield item

    with grpc.insecure_channel(demo_and_ballast[1]) as channel:
        call = pb_grpc.InventoryStub(channel).SyncItems(requests())
        pod = next(call).pod
        try:
            yield pod
        finally:
            items.put(None)
            call.cancel()


def test_an_operator_cancels_a_restart_mid_drain_from_the_page(
    page: Page, demo_and_ballast: tuple[Demo, str], held_pod: str
) -> None:
    demo, _ = demo_and_ballast
    log_in(page, demo, "services/inventory/")
    page.wait_for_function(ALL_READY, arg=PODS, timeout=LIVE_TIMEOUT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    cancel = page.locator("#operation-cancel")
    expect(cancel).to_be_hidden()

    row_of(page, held_pod).get_by_role("button", name="restart").click()
    progress = page.locator("#operation")
    expect(progress).to_contain_text(f"restart {held_pod}: draining", timeout=LIVE_TIMEOUT_MS)
    expect(cancel).to_be_visible()
    cancel.click()

    expect(progress).to_contain_text(
        f"restart {held_pod}: draining → cancelled", timeout=LIVE_TIMEOUT_MS
    )
    expect(progress).to_contain_text(
        f"cancelled by {demo.username} during step draining; pod {held_pod} undrained"
    )
    expect(cancel).to_be_hidden()
    expect(row_of(page, held_pod).locator("td").nth(1)).to_have_text(
        "READY", timeout=LIVE_TIMEOUT_MS
    )
