"""A tiny gRPC pod for platform tests: `python tests/support/pod.py --port P [knobs]`.

It serves grpc.health.v1 (SERVING, for "" and for `test.Pod`) on 127.0.0.1:P
and ends with exit code 0 on SIGTERM. Knobs, each also read from the
environment (`POD_<KNOB>`, e.g. `POD_EXIT_CODE=3`), so a deployment's env can
steer it:

- `--grow-bytes-per-s N`: keep N more bytes resident every second (a leak);
- `--exit-code C --exit-after-s T`: exit with code C after T seconds (a crash);
- `--not-serving`: answer NOT_SERVING (never ready);
- `--not-serving-if-file F`: answer NOT_SERVING if F exists when the pod starts;
- `--ignore-sigterm`: keep running on SIGTERM (only SIGKILL ends it);
- `--child-pid-file F`: start a child (`sleep`) and write its pid to F.

It imports only the standard library and grpc, so it runs as a script from anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

GROW_TICK_S = 0.05
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _parse(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default=env("POD_NAME", "pod"))
    parser.add_argument("--metrics-port", type=int, default=None, help="accepted, unused")
    parser.add_argument("--grow-bytes-per-s", type=int, default=int(env("POD_GROW_BYTES_PER_S", 0)))
    parser.add_argument("--exit-code", type=int, default=int(env("POD_EXIT_CODE", 0)))
    parser.add_argument("--exit-after-s", type=float, default=float(env("POD_EXIT_AFTER_S", -1)))
    parser.add_argument("--not-serving", action="store_true", default=bool(env("POD_NOT_SERVING")))
    parser.add_argument("--not-serving-if-file", default=env("POD_NOT_SERVING_IF_FILE"))
    parser.add_argument(
        "--ignore-sigterm", action="store_true", default=bool(env("POD_IGNORE_SIGTERM"))
    )
    parser.add_argument("--child-pid-file", default=env("POD_CHILD_PID_FILE"))
    return parser.parse_args(argv)


async def _grow(bytes_per_s: int) -> None:
    """Keeps `bytes_per_s` more bytes resident each second (written, so really resident)."""
    kept: list[bytes] = []
    chunk = max(1, int(bytes_per_s * GROW_TICK_S))
    while True:
        kept.append(b"\x01" * chunk)
        await asyncio.sleep(GROW_TICK_S)


async def _exit_later(code: int, after_s: float) -> None:
    await asyncio.sleep(after_s)
    os._exit(code)  # at once, as a crash: no cleanup


def _start_child(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w") as out:
        out.write(str(child.pid))


def _serving(args: argparse.Namespace) -> bool:
    flag = args.not_serving_if_file
    return not args.not_serving and not (flag and os.path.exists(flag))


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")  # raises if taken: a crash
    await server.start()
    status = SERVING if _serving(args) else NOT_SERVING
    for service in ("", "test.Pod"):
        await servicer.set(service, status)
    stopping = asyncio.Event()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    background = (
        [asyncio.create_task(_grow(args.grow_bytes_per_s))] if args.grow_bytes_per_s else []
    )
    if args.exit_after_s >= 0:
        background.append(asyncio.create_task(_exit_later(args.exit_code, args.exit_after_s)))
    if args.child_pid_file:
        _start_child(args.child_pid_file)
    await stopping.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    asyncio.run(serve(_parse(sys.argv[1:])))
