"""`python -m demo` as a real process for fault tests: started on free ports with its
SQLite database in a given directory (so a second start finds what the first left),
its output kept, an API token made with `manage.py apitoken`, and JSON over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parents[2]


def _environment(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALLAST_", "SECRET"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["BALLAST_DB_PATH"] = str(workdir / "db.sqlite3")
    return env


@dataclass
class DemoProcess:
    """A running `python -m demo`; `lines` fills as it prints."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    url: str = ""
    ballast: str = ""
    _reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_banner(self) -> None:
        """Returns once the demo printed where its dashboard and Ballast are."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            url = re.search(r"Dashboard:\s+(http://\S+)", self.output)
            ballast = re.search(r"Ballast \(gRPC L7\):\s+(\S+)", self.output)
            if url and ballast:
                self.url, self.ballast = url[1].rstrip("/"), ballast[1]
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.process.kill()
        raise AssertionError("the demo did not print its banner:\n" + self.output)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60) -> int:
        """Sends `sig` and waits for the exit (SIGKILL after `timeout_s`); its code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def client_codes(self, group: str = "Ballast") -> Counter[str]:
        """The status codes the demo's clients through `group` got, from the exit summary
        it prints on a graceful stop ("clients via Ballast: 2410 calls in 61 s, all OK", or
        "…, 0.2% not OK: UNAVAILABLE 3, …"); empty when it printed none."""
        found = re.search(
            rf"clients via {group}: (\d+) calls in [\d.]+ s, (?:all OK|[\d.]+% not OK: (.*))$",
            self.output,
            re.M,
        )
        if not found:
            return Counter()
        failed = Counter(
            {
                code: int(n)
                for code, n in (
                    part.rsplit(" ", 1) for part in (found[2] or "").split(", ") if part
                )
            }
        )
        return Counter({"OK": int(found[1]) - sum(failed.values())}) + failed


def start_demo(workdir: Path, *, pods: int = 2, clients: int = 1) -> DemoProcess:
    """Starts the demo on free ports; returns once its banner is out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--pods", str(pods), "--clients", str(clients),
         "--rate", "20", "--port", "0", "--admin-port", "0", "--l4-port", "0",
         "--dashboard-port", "0", "--xds-port", "0", "--log-dir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_environment(workdir), cwd=ROOT,
    )  # fmt: skip
    demo = DemoProcess(process)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            demo.lines.append(line)

    demo._reader = threading.Thread(target=read, daemon=True)
    demo._reader.start()
    demo.wait_for_banner()
    return demo


def api_token(workdir: Path, user: str = "operator") -> str:
    """A new API token for `user`, from `manage.py apitoken create` on the demo's database."""
    env = {**_environment(workdir), "BALLAST_DEV": "1"}
    done = subprocess.run(
        [sys.executable, "manage.py", "apitoken", "create", "--user", user],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()[1].strip()


def call(
    method: str, url: str, token: str, body: Any = None, timeout_s: float = 30
) -> tuple[int, Any]:
    """One JSON request with the token; the status and the parsed answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Token {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw) if raw else None
