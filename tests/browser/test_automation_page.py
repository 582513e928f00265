"""The automation card of the service page on a running demo: the operator turns
auto-weights on, one pod is made to burn CPU per call, its auto weight and reason show in
the card, the charts get an "auto weight" marker from the audit, and "stop all
automation" pauses it (the pods back at their defaults)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from playwright.sync_api import Browser, Page, expect

from demo.v1 import workload_pb2 as pb
from tests.browser.conftest import ARTIFACTS, Demo, log_in
from tests.support.demo_process import DemoProcess, start_demo

pytestmark = pytest.mark.timeout(300)
LIVE_TIMEOUT_MS = 90_000
GIVEN = re.compile(r"cores at \d+ rps(, [\d.]+ % errors)? → weight \d+ \(was \d+\)")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, DemoProcess]]:
    workdir: Path = tmp_path_factory.mktemp("demo")
    process = start_demo(workdir, pods=3, clients=2)
    try:
        login = re.search(r"log in as (\S+) / (\S+)", process.output)
        assert login is not None, process.output
        yield Demo(process.url + "/", login[1], login[2], process.process), process
    finally:
        process.stop()


def burn_cpu_on_one_pod(ballast: str, cpu_ms: float) -> None:
    """Sets the CPU knob of the pod Ballast picks for the call (one of them)."""
    with grpc.insecure_channel(ballast) as channel:
        set_knobs = channel.unary_unary(
            "/ballast.demo.v1.Knobs/Set",
            request_serializer=pb.KnobSettings.SerializeToString,
            response_deserializer=pb.KnobSettings.FromString,
        )
        set_knobs(pb.KnobSettings(cpu_ms=cpu_ms), timeout=10)


def test_auto_weights_are_switched_on_shown_marked_and_paused_from_the_page(
    page: Page, running: tuple[Demo, DemoProcess]
) -> None:
    demo, process = running
    log_in(page, demo, "services/inventory/")
    switch = page.locator("#auto-weights")
    expect(switch).to_have_text("auto-weights: off", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#auto-weights-table tbody")).to_contain_text("auto-weights are off")
    switch.click()
    expect(switch).to_have_text("auto-weights: on", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#automation-status")).to_have_text("auto-weights turned on")

    burn_cpu_on_one_pod(process.ballast, 5.0)
    # The controller measures each pod for 10 s first, then gives the hot pod less.
    reason = page.locator("#auto-weights-table tbody td.reason").first
    expect(reason).to_contain_text(GIVEN, timeout=LIVE_TIMEOUT_MS)
    page.wait_for_function(
        """() => ((document.getElementById('chart-rps').layout || {}).annotations || [])
             .some((a) => String(a.text).split(' · ').includes('auto weight'))""",
        timeout=LIVE_TIMEOUT_MS,
    )

    page.locator("#automation-pause").click()
    expect(page.locator("#automation-pause")).to_have_text("resume automation",
                                                          timeout=LIVE_TIMEOUT_MS)  # fmt: skip
    expect(switch).to_have_text("auto-weights: on (paused)")
    expect(page.locator("#auto-weights-table tbody")).to_contain_text("automation is paused")
    # Every pod back at the default weight in the pod table.
    page.wait_for_function(
        """() => [...document.querySelectorAll('#pods tbody tr')].every(
             (r) => r.cells[2].childNodes[0].textContent === '100')""",
        timeout=LIVE_TIMEOUT_MS,
    )


def test_the_card_fits_a_narrow_screen(browser: Browser, running: tuple[Demo, DemoProcess]) -> None:
    demo, _ = running
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        log_in(page, demo, "services/inventory/")
        expect(page.locator("#auto-weights")).not_to_have_text("auto-weights: —",
                                                               timeout=LIVE_TIMEOUT_MS)  # fmt: skip
        expect(page.locator("#auto-weights-table tbody tr").first).to_be_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "automation-card-narrow.png"))
    finally:
        context.close()
