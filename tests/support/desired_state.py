"""A stand-in control plane and a balancer process for the start-up tests.

`DesiredStateServer` is a real HTTP server (stdlib, its own thread) answering
`GET /api/v1/desired-state/` as the dashboard does: a scripted list of answers (status
and body), optionally held until the test releases it, every request recorded.
`BalancerProcess` runs `python -m balancer` on a TOML config with a ready file, its
stderr in a file the test reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
CONTROL_TOKEN = "control-plane-test-token"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def desired(services: Sequence[dict[str, Any]]) -> Answer:
    """A 200 with these services, as the dashboard's endpoint answers."""
    data = {"services": list(services), "generated_at": "2026-01-01T00:00:00Z"}
    return Answer(200, json.dumps(data).encode())


def endpoint(
    endpoint_id: str,
    *,
    weight: int | None = None,
    drained: bool = False,
    drain_timeout_s: float | None = None,
) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint_id, "weight": weight, "drained": drained,
        "drain_timeout_s": drain_timeout_s,
    }  # fmt: skip


@dataclass
class DesiredStateServer:
    """Answers with `answers` in turn (the last one from then on); `hold` keeps each
    answer back until `release()`. `requests` holds each request's Authorization."""

    answers: list[Answer]
    hold: bool = False
    tls: tuple[Path, Path] | None = None  # certificate and key: serve https
    requests: list[str] = field(default_factory=list)
    answered: int = 0
    _released: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> DesiredStateServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.headers.get("Authorization", ""))
                if owner.hold:
                    owner._released.wait(60)
                if self.path != "/api/v1/desired-state/":
                    answer = Answer(404, b'{"detail": "Not found."}')
                else:
                    answer = owner.answers[min(owner.answered, len(owner.answers) - 1)]
                owner.answered += 1
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def balancer_toml(
    endpoints: Sequence[tuple[str, str]],
    *,
    listen: str = "127.0.0.1:0",
    admin: str | None = None,
    control_plane: dict[str, Any] | None = None,
    cluster: str = "inventory",
) -> str:
    """One cluster over `(name, address)` endpoints; an admin API (token from the
    environment) on `admin`; `[control_plane]` with these keys."""
    eps = ", ".join(f'{{address = "{a}", name = "{n}"}}' for n, a in endpoints)
    text = (
        f'[balancer]\nid = "b0"\nshutdown_grace_s = 1\n\n[[listeners]]\naddress = "{listen}"\n\n'
        f'[[clusters]]\nname = "{cluster}"\ndiscover_unary_methods = false\n'
        f"discovery.endpoints = [{eps}]\n\n"
    )
    if admin is not None:
        text += f'[admin]\naddress = "{admin}"\n\n'
    if control_plane is not None:
        text += "[control_plane]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in control_plane.items()
        )
    return text


class BalancerProcess:
    """`python -m balancer --config <dir>/ballast.toml --ready-file <dir>/ready.json`."""

    def __init__(self, workdir: Path, toml: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config = workdir / "ballast.toml"
        self.config.write_text(toml, encoding="utf-8")
        self.ready_file = workdir / "ready.json"
        self.stderr_path = workdir / "balancer.stderr"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> BalancerProcess:
        self.ready_file.unlink(missing_ok=True)
        with self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "balancer", "--config", str(self.config),
                 "--ready-file", str(self.ready_file)],
                cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        self.started_at = asyncio.get_running_loop().time()
        return self

    def ready(self) -> dict[str, Any] | None:
        """The ready file's JSON, or None while it is not written."""
        try:
            return dict(json.loads(self.ready_file.read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError):
            return None

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        """The ready file once written; fails if the process exits first or time runs out."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (ready := self.ready()) is None:
            assert self.proc.poll() is None, f"the balancer exited:\n{self.stderr()}"
            assert loop.time() < deadline, f"no ready file in time:\n{self.stderr()}"
            await asyncio.sleep(0.02)
        assert ready["pid"] == self.proc.pid, "a ready file left by another process"
        return ready

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL if it does not end in 10 s); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode
