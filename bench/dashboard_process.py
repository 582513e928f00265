"""The dashboard (``python -m dashboard``) for the fan-out benchmark: its environment, its
database and login user, starting it, logging in over HTTP, and the websocket clients.

Every run makes its own secret key, SQLite file and password in a temporary folder, so
nothing secret is in the repository or outlives the run. The session cookie stays valid
across restarts of the dashboard (same key, same database), so one login serves a run.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from processes import BenchError, Child, read_json_line, start_child

REPO_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
USERNAME = "bench"
START_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0
COLLECTOR_INTERVAL_MS = 1000
URL_LINE = re.compile(r"dashboard: (http://\S+/)")
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# Variables that would point the dashboard elsewhere than its real settings and the bench's
# own files (pytest-django, for one, sets DJANGO_SETTINGS_MODULE to the tests' settings).
NOT_INHERITED = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "BALLAST_DEV",
    "SECRET_KEY_FILE",
    "BALLAST_ADMIN_TOKEN_FILE",
)
CREATE_USER = """\
import os
from django.core.management import call_command
from django.contrib.auth import get_user_model
call_command("migrate", interactive=False, verbosity=0)
get_user_model().objects.create_user(os.environ["BENCH_USER"], password=os.environ["BENCH_PW"])
"""


@dataclass(frozen=True)
class DashboardSetup:
    """What every start of the dashboard in one run shares."""

    env: dict[str, str]
    password: str
    work_dir: Path
    service: str


def dashboard_env(work_dir: Path, service: str, admin_address: str, token: str) -> dict[str, str]:
    """Our environment, minus what would redirect the dashboard, plus the bench's settings."""
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        BALLAST_DB_PATH=str(work_dir / "dashboard.sqlite3"),
        BALLAST_SERVICES=service,
        BALLAST_BALANCERS=f"b0={admin_address}",
        BALLAST_ADMIN_TOKEN=token,
        BALLAST_COLLECTOR_INTERVAL_MS=str(COLLECTOR_INTERVAL_MS),
    )
    return env


async def prepare(work_dir: Path, service: str, admin_address: str, token: str) -> DashboardSetup:
    """Creates the database and the login user (``manage.py shell``, the dashboard's env)."""
    setup = DashboardSetup(
        dashboard_env(work_dir, service, admin_address, token),
        secrets.token_urlsafe(24),
        work_dir,
        service,
    )
    env = {**setup.env, "BENCH_USER": USERNAME, "BENCH_PW": setup.password}
    argv = [sys.executable, "manage.py", "shell", "-c", CREATE_USER]
    log_path = work_dir / "dashboard-setup.stderr.log"
    child = await start_child(
        "dashboard-setup", argv, stdout=asyncio.subprocess.DEVNULL, log_path=log_path,
        cwd=REPO_DIR, env=env,
    )  # fmt: skip
    if code := await asyncio.wait_for(child.process.wait(), START_TIMEOUT_S):
        raise BenchError(f"manage.py migrate + user exited with code {code}:\n{child.log_tail()}")
    return setup


async def read_url(child: Child) -> str:
    """Waits for the ``dashboard: URL`` line; raises BenchError on exit or timeout."""
    assert child.process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while (left_s := deadline - time.monotonic()) > 0:
        try:
            line = await asyncio.wait_for(child.process.stdout.readline(), left_s)
        except TimeoutError:
            break
        if not line:
            code = await child.process.wait()
            raise BenchError(f"{child.name} exited with code {code}:\n{child.log_tail()}")
        if match := URL_LINE.search(line.decode(errors="replace")):
            return match.group(1)
    raise BenchError(f"{child.name} did not serve within {START_TIMEOUT_S:.0f} s")


async def launch_dashboard(setup: DashboardSetup, name: str) -> Child:
    """Starts ``python -m dashboard --port 0``; pass it to ``read_url`` to wait until it serves.

    The caller owns the child and must stop it, whether or not it ever serves.
    """
    argv = [sys.executable, "-m", "dashboard", "--port", "0"]
    log_path = setup.work_dir / f"{name}.stderr.log"
    return await start_child(name, argv, log_path=log_path, cwd=REPO_DIR, env=setup.env)


def origin_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def log_in(base_url: str, password: str) -> str:
    """Logs in through the login form, as a browser does; returns the ``sessionid`` cookie.

    Blocking (urllib): run it in a thread. Raises BenchError when it cannot.
    """
    try:
        return post_login_form(base_url, password)
    except urllib.error.URLError as error:
        raise BenchError(f"logging in to the dashboard at {base_url} failed: {error}") from None


def post_login_form(base_url: str, password: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = urllib.parse.urljoin(base_url, "accounts/login/")
    with opener.open(login_url, timeout=HTTP_TIMEOUT_S) as response:
        page = response.read().decode()
    if not (match := CSRF_FIELD.search(page)):
        raise BenchError(f"no csrfmiddlewaretoken field in {login_url}")
    form = {"username": USERNAME, "password": password, "csrfmiddlewaretoken": match.group(1)}
    request = urllib.request.Request(
        login_url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": login_url, "Origin": origin_of(base_url)},
    )
    with opener.open(request, timeout=HTTP_TIMEOUT_S):
        pass
    if session := next((c.value for c in jar if c.name == "sessionid" and c.value), None):
        return session
    raise BenchError(f"logging in at {login_url} set no sessionid cookie")


def websocket_url(base_url: str, service: str) -> str:
    return urllib.parse.urljoin(base_url.replace("http://", "ws://", 1), f"ws/services/{service}/")


async def launch_clients(name: str, work_dir: Path) -> Child:
    """Starts ``dashboard_clients.py``; the caller owns it and sends it its spec."""
    argv = [sys.executable, str(BENCH_DIR / "dashboard_clients.py")]
    log_path = work_dir / f"{name}.stderr.log"
    return await start_child(name, argv, stdin=asyncio.subprocess.PIPE, log_path=log_path)


async def send_line(child: Child, line: str) -> None:
    assert child.process.stdin is not None
    child.process.stdin.write(line.encode() + b"\n")
    await child.process.stdin.drain()


async def connect_clients(
    child: Child, base_url: str, setup: DashboardSetup, cookie: str, clients: int, pods: int
) -> float:
    """Sends the clients their spec and waits until every one has a full frame; returns how
    long that took. Raises BenchError with the clients' reason when they cannot."""
    spec = {
        "url": websocket_url(base_url, setup.service),
        "origin": origin_of(base_url),
        "cookie": cookie,
        "clients": clients,
        "pods": pods,
    }
    await send_line(child, json.dumps(spec))
    event = await read_json_line(child, START_TIMEOUT_S)
    if event.get("event") != "ready":
        raise BenchError(f"{child.name}: {event.get('message', event)}\n{child.log_tail()}")
    return float(event["connect_s"])
