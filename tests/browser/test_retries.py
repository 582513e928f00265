"""The retries an operator sees: a demo pod frozen (SIGSTOP) with calls held, then killed
(SIGKILL); Ballast retries those calls on the other pod, and the service page shows a
"retried" line on the errors-by-code chart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import psutil
import pytest
from playwright.sync_api import Page

from tests.browser.conftest import Demo, log_in, running_demo
from tests.browser.test_dashboard import CHARTS_FILLED, LIVE_TIMEOUT_MS

pytestmark = pytest.mark.timeout(300)

RETRIED_LINE = """() => {
  const div = document.getElementById("chart-codes");
  return !!div && Array.isArray(div.data) && div.data.some((t) => t.name === "retried"
    && t.y.some((y) => y > 0));
}"""


@pytest.fixture(scope="module")
def retry_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory, pods=2, clients=2) as running:
        yield running


def _pod_processes(demo: Demo) -> list[psutil.Process]:
    """The demo's pod processes (`python -m demo.workload`), children of its process."""
    children = psutil.Process(demo.process.pid).children(recursive=True)
    return [p for p in children if "demo.workload" in " ".join(p.cmdline())]


def test_the_page_shows_the_calls_ballast_retried(page: Page, retry_demo: Demo) -> None:
    log_in(page, retry_demo, "services/inventory/")
    page.wait_for_function(CHARTS_FILLED, timeout=LIVE_TIMEOUT_MS)
    pod = _pod_processes(retry_demo)[0]
    os.kill(pod.pid, signal.SIGSTOP)
    try:
        # Let calls pile up on the frozen pod, well inside the demo clients' 5 s deadline
        # (the page lags too much on a busy machine to wait for its in-flight figure).
        time.sleep(0.5)
    finally:
        os.kill(pod.pid, signal.SIGKILL)
    page.locator("#chart-codes").scroll_into_view_if_needed()
    page.wait_for_function(RETRIED_LINE, timeout=LIVE_TIMEOUT_MS)
    # The killed pod's row leaves the table with it (the local platform replaces a crashed
    # pod under a new name), so its count (↻ n) is checked on the frame, not here.
