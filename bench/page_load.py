"""The service page in a real browser on the demo: how fast it loads and how busy it
keeps the browser's main thread at steady state, as JSON.

Starts ``python -m demo`` (4 pods, 4 clients per door by default) on free ports with
its database in a temporary directory, and Debian's chromium through Playwright (as
the browser tests do). Then, in rounds whose order alternates:

- ``gzip``: the page as a browser loads it (Accept-Encoding: gzip, deflate, br);
- ``identity``: the same page with compression refused (Accept-Encoding: identity),
  which is how plotly.min.js travelled before the assets view compressed it;
- ``gzip_warm``: a repeat visit (the browser's caches warm from a first load).

Each load is in a fresh browser context at 1400×900, and records
DOMContentLoaded and the load event (ms from navigation start, the Navigation Timing
entry), the bytes the page transferred, and the time until every chart has drawn. The
last case, ``steady``, keeps one page open for ``--steady-s`` seconds after its charts
filled and reads Chrome's own counter of main-thread task time (CDP
``Performance.getMetrics`` TaskDuration) at both ends: busy time ÷ wall time is the share
of the main thread the live page uses; long tasks (≥ 50 ms) are counted by a
PerformanceObserver.

With ``--compare-bundle FILE`` (another plotly.js build, e.g. the full
``plotly.js-dist-min`` the page loaded before) it also times, in blank pages and in
alternating order, how long the browser takes to fetch from memory, parse and run each
bundle (``bundle_eval_ms``): the part of a cold load that the bundle's size decides,
compared side by side under the same load on the machine.

Prints one JSON object as the last line of stdout (progress goes to stderr); it is also
written to bench/results/page_load.json unless --quick. Medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "page_load.json"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]  # fmt: skip
ENCODINGS = {"gzip": "gzip, deflate, br", "identity": "identity"}
# A repeat visit: the same context loads the page once, then again (the browser's cache
# and its compiled-code cache warm), and the second load is measured.
CASES = [*ENCODINGS, "gzip_warm"]
CHARTS_FILLED = """() => [...document.querySelectorAll('.chart')].slice(0, 3)
  .every((d) => Array.isArray(d.data) && d.data.length > 0 && d.data[0].x.length > 0)"""
LONG_TASKS = """() => {
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(e.duration);
  }).observe({ type: "longtask", buffered: true });
}"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def demo(pods: int, clients: int) -> Iterator[tuple[str, str, str]]:
    """`python -m demo` on free ports: yields (url, username, password)."""
    with tempfile.TemporaryDirectory() as workdir:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BALLAST_", "SECRET"))}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env["BALLAST_DB_PATH"] = str(Path(workdir) / "db.sqlite3")
        process = subprocess.Popen(
            [sys.executable, "-m", "demo", "--pods", str(pods), "--clients", str(clients),
             "--port", "0", "--admin-port", "0", "--l4-port", "0", "--dashboard-port", "0",
             "--xds-port", "0", "--log-dir", workdir],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            yield _banner(process)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _banner(process: subprocess.Popen[str]) -> tuple[str, str, str]:
    assert process.stdout is not None
    url = login = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (url and login):
        line = process.stdout.readline()
        if not line:
            break
        found = re.search(r"Dashboard:\s+(http://\S+)", line)
        url = url or (found[1] if found else None)
        login = login or re.search(r"log in as (\S+) / (\S+)", line)
    if not (url and login):
        raise SystemExit("the demo did not print its URL and login")
    return url, login[1], login[2]


def _log_in(page: Page, url: str, username: str, password: str) -> None:
    page.goto(url + "accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def load_once(browser: Browser, site: tuple[str, str, str], case: str) -> dict[str, float]:
    """One load of the service page: cold with this Accept-Encoding, or a repeat visit."""
    url, username, password = site
    encoding = "gzip" if case == "gzip_warm" else case
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        _log_in(page, url, username, password)
        page.set_extra_http_headers({"Accept-Encoding": ENCODINGS[encoding]})
        if case == "gzip_warm":
            page.goto(url + "services/inventory/", wait_until="load")
            page.wait_for_function(CHARTS_FILLED, timeout=60_000)
            page.goto(url + "audit/")
        transferred: list[int] = []
        page.on("requestfinished", lambda r: transferred.append(r.sizes()["responseBodySize"]))
        started = time.perf_counter()
        page.goto(url + "services/inventory/", wait_until="load")
        page.wait_for_function(CHARTS_FILLED, timeout=60_000)
        charts_ms = (time.perf_counter() - started) * 1000
        nav = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return [n.domContentLoadedEventEnd, n.loadEventEnd]; }"
        )
        return {"dom_content_loaded_ms": nav[0], "load_ms": nav[1],
                "charts_drawn_ms": charts_ms, "transferred_bytes": sum(transferred)}  # fmt: skip
    finally:
        context.close()


def steady(browser: Browser, site: tuple[str, str, str], seconds: float) -> dict[str, float]:
    """Main-thread busy share of the live page over `seconds`, after its charts filled."""
    url, username, password = site
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.add_init_script(LONG_TASKS)
        _log_in(page, url, username, password)
        page.goto(url + "services/inventory/")
        page.wait_for_function(CHARTS_FILLED, timeout=60_000)
        page.wait_for_timeout(3_000)  # the backfill drawn, live frames flowing
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.evaluate("() => { window.__longTasks = []; }")
        before = _task_s(cdp.send("Performance.getMetrics"))
        started = time.perf_counter()
        page.wait_for_timeout(seconds * 1000)
        busy_s = _task_s(cdp.send("Performance.getMetrics")) - before
        wall_s = time.perf_counter() - started
        tasks: list[float] = page.evaluate("() => window.__longTasks")
        frames = page.evaluate("() => document.getElementById('chart-rps').data[0].x.length")
        return {"busy_share": busy_s / wall_s, "busy_ms_per_s": 1000 * busy_s / wall_s,
                "wall_s": wall_s, "long_tasks": len(tasks),
                "longest_task_ms": max(tasks, default=0.0), "points_per_line": frames}  # fmt: skip
    finally:
        context.close()


def _task_s(metrics: dict[str, Any]) -> float:
    return float(next(m["value"] for m in metrics["metrics"] if m["name"] == "TaskDuration"))


def median_of(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in samples), 3) for key in samples[0]}


# A blank page that runs one bundle and notes how long that took (served by page.route).
BUNDLE_PAGE = """<!doctype html><script>window.t0 = performance.now()</script>
<script src="/plotly.js"></script>
<script>window.ran = typeof Plotly === "object"; window.t1 = performance.now()</script>"""


def bundle_eval_ms(browser: Browser, bundle: Path) -> float:
    """Fetch (from memory), parse and run of `bundle` in a fresh page, in ms."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(
            "http://bundle.test/", lambda r: r.fulfill(body=BUNDLE_PAGE, content_type="text/html")
        )
        page.route("http://bundle.test/plotly.js", lambda r: r.fulfill(path=bundle))
        page.goto("http://bundle.test/", wait_until="load", timeout=120_000)
        ran, took = page.evaluate("() => [window.ran, window.t1 - window.t0]")
        assert ran, f"{bundle} did not define Plotly"
        return float(took)
    finally:
        context.close()


def compare_bundles(browser: Browser, other: Path, rounds: int) -> dict[str, float]:
    ours = ROOT / "dashboard" / "app" / "static" / "vendor" / "plotly.min.js"
    times: dict[str, list[float]] = {"served": [], "other": []}
    for i in range(rounds):
        pair = [("served", ours), ("other", other)]
        for name, path in pair if i % 2 == 0 else pair[::-1]:
            times[name].append(bundle_eval_ms(browser, path))
    served, compared = statistics.median(times["served"]), statistics.median(times["other"])
    return {
        "served_ms": round(served, 1),
        "other_ms": round(compared, 1),
        "other_bytes": other.stat().st_size,
        "ratio_served_vs_other": round(served / compared, 3),
    }


def plotly_js() -> dict[str, object]:
    """Which plotly.js bundle the page loads (package-lock.json) and its size."""
    locked = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    name, entry = next(
        (key.removeprefix("node_modules/"), value)
        for key, value in locked["packages"].items()
        if key.startswith("node_modules/plotly.js")
    )
    body = (ROOT / "dashboard" / "app" / "static" / "vendor" / "plotly.min.js").read_bytes()
    return {"bundle": f"{name} {entry['version']}", "bytes": len(body),
            "gzip_bytes": len(gzip.compress(body, compresslevel=9))}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="loads per case (3)")
    parser.add_argument("--steady-s", type=float, default=20.0, help="steady window (20 s)")
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4, help="clients per door (4)")
    parser.add_argument("--quick", action="store_true", help="1 round, 8 s; no results file")
    parser.add_argument(
        "--compare-bundle", type=Path, help="another plotly.js build to time beside the served one"
    )
    args = parser.parse_args()
    rounds, steady_s = (1, 8.0) if args.quick else (args.rounds, args.steady_s)
    chromium = os.environ.get("BALLAST_CHROMIUM") or "/usr/bin/chromium"
    loads: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    with demo(args.pods, args.clients) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        log(f"demo at {site[0]}; warming up")
        load_once(browser, site, "gzip")  # the server's first gzip of plotly, made once
        for i in range(rounds):
            order = CASES if i % 2 == 0 else CASES[::-1]
            for name in order:
                loads[name].append(load_once(browser, site, name))
                log(f"round {i + 1} {name}: {loads[name][-1]}")
        busy = steady(browser, site, steady_s)
        log(f"steady: {busy}")
        bundles = None
        if args.compare_bundle:
            bundles = compare_bundles(browser, args.compare_bundle, max(5, rounds * 2))
            log(f"bundles: {bundles}")
        browser.close()
    gzip_, identity = median_of(loads["gzip"]), median_of(loads["identity"])
    result = {
        "bench": "page_load",
        "page": "services/inventory/ at 1400x900 on `python -m demo`",
        "pods": args.pods,
        "clients_per_door": args.clients,
        "rounds": rounds,
        "gzip": gzip_,
        "identity": identity,
        "gzip_warm": median_of(loads["gzip_warm"]),
        "transferred_ratio_gzip_vs_identity": round(
            gzip_["transferred_bytes"] / identity["transferred_bytes"], 3
        ),
        "steady": {k: round(v, 3) for k, v in busy.items()},
        "plotly_js": plotly_js(),
        **({"bundle_eval_ms": bundles} if bundles else {}),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    line = json.dumps(result)
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
