"""The OOM guard on the page, in a real browser: `python -m demo` with leaky pods under a
small limit and the guard on for `inventory` (its row set in the demo's database, as the
toggles' API would); the pod table says "OOM in ~N s" in the memory cell, and the charts
get an "OOM guard" marker once the guard restarted a pod."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import Demo, log_in, running_demo

pytestmark = pytest.mark.timeout(240)

LIVE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def leaky_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, Path]]:
    """The demo with two pods leaking 96 KiB per call under 112 MiB, the guard acting 20 s
    before a predicted OOM."""
    workdir = tmp_path_factory.mktemp("leaky-demo")
    leak = ["--leak-bytes", str(96 * 1024), "--memory-limit-mib", "112"]
    guard = {"BALLAST_OOM_GUARD_THRESHOLD_S": "20"}
    with running_demo(
        tmp_path_factory, pods=2, clients=1, args=leak, env=guard, workdir=workdir
    ) as demo:
        yield demo, workdir / "db.sqlite3"


def guard_on(database: Path) -> None:
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO control_serviceautomation (service, autoweights, oom_guard, updated_at)"
            " VALUES ('inventory', 0, 1, datetime('now'))"
        )


def test_it_shows_the_time_to_oom_and_marks_the_guards_restart(
    page: Page, leaky_demo: tuple[Demo, Path]
) -> None:
    demo, database = leaky_demo
    guard_on(database)
    log_in(page, demo, "services/inventory/")
    note = page.wait_for_selector("#pods td[data-oom^='OOM in ~']", timeout=LIVE_TIMEOUT_MS)
    assert note is not None
    assert "growing" in (note.get_attribute("title") or "")
    # Charts out of view are drawn once scrolled to, as an operator looking at memory would.
    page.locator("#chart-mem").scroll_into_view_if_needed()
    page.wait_for_function(
        """() => ((document.getElementById('chart-mem').layout || {}).annotations || [])
             .some((a) => String(a.text).split(' · ').includes('OOM guard'))""",
        timeout=LIVE_TIMEOUT_MS,
    )
