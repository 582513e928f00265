"""Browser tests: Playwright driving Debian's chromium against `python -m demo` (`make demo`).

The demo runs as it does for an operator — pods, the L4 Service, Ballast, clients and
the dashboard — on free ports, with its SQLite database in a temporary directory.
Chromium comes from the system (`apt-get install chromium`, done by `.ci/run`),
never from Playwright's download; a missing browser fails the tests, it does not
skip them. Each test leaves a full-page screenshot in `test-artifacts/`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Debian's chromium as root: no sandbox, and nothing that reaches for the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
MISSING_CHROMIUM = (
    "chromium is not installed: `apt-get install chromium` (.ci/run does), "
    "or point BALLAST_CHROMIUM at a Chromium executable"
)
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Demo:
    url: str
    username: str
    password: str
    process: subprocess.Popen[str]


def chromium_path() -> str:
    path = os.environ.get("BALLAST_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(MISSING_CHROMIUM, pytrace=False)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`python -m demo` with two pods and one client per door: the L4 client pins one pod,
    so the pods' own figures are skewed while Ballast's are even."""
    with running_demo(tmp_path_factory, pods=2, clients=1) as running:
        yield running


@pytest.fixture(scope="module")
def busy_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`python -m demo` with three pods and two clients per door: enough traffic that a
    drained pod's share visibly moves to its siblings."""
    with running_demo(tmp_path_factory, pods=3, clients=2) as running:
        yield running


@contextlib.contextmanager
def running_demo(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    pods: int,
    clients: int,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
) -> Iterator[Demo]:
    """The demo on free ports with its database in `workdir` (a new temporary directory by
    default), `args` and `env` added to its own, stopped (SIGINT, then SIGKILL after 30 s)
    on the way out."""
    workdir = workdir or tmp_path_factory.mktemp("demo")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BALLAST_", "SECRET"))}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    environ["BALLAST_DB_PATH"] = str(workdir / "db.sqlite3")
    environ.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--pods", str(pods), "--clients", str(clients),
         "--rate", "20", "--port", "0", "--admin-port", "0", "--l4-port", "0",
         "--dashboard-port", "0", "--xds-port", "0", "--log-dir", str(workdir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ,
    )  # fmt: skip
    try:
        yield _wait_for_banner(process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_banner(process: subprocess.Popen[str]) -> Demo:
    assert process.stdout is not None
    seen: list[str] = []
    url = login = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and not (url and login):
        line = process.stdout.readline()
        if not line:
            break  # it exited
        seen.append(line)
        url = url or _match(r"Dashboard:\s+(http://\S+)", line)
        login = login or re.search(r"log in as (\S+) / (\S+)", line)
    if not (url and login):
        process.kill()
        pytest.fail("the demo did not print its URL and login:\n" + "".join(seen))
    return Demo(url, login[1], login[2], process)


def _match(pattern: str, line: str) -> str | None:
    found = re.search(pattern, line)
    return found[1] if found else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies) on a laptop-sized screen; its screenshot is
    kept in test-artifacts/<test>.png whatever the outcome."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def log_in(page: Page, demo: Demo, path: str = "") -> None:
    page.goto(demo.url + path)
    page.fill("#id_username", demo.username)
    page.fill("#id_password", demo.password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
