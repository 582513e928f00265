"""`python -m demo.workload --port 0 --metrics-port 0 --name pod-1`: run one demo pod."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import socket
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

from demo.workload.knobs import (
    ERROR_CODES,
    FIELDS,
    KnobError,
    Knobs,
    check_status_name,
    env_name,
    knobs_from_env,
)
from demo.workload.server import Workload, WorkloadConfig

log = logging.getLogger("demo.workload")

PROG = "python -m demo.workload"
DESCRIPTION = """\
Ballast's demo workload: a gRPC Inventory service (one method of each RPC kind) that misbehaves
on request. Every response names the pod. It also serves grpc.health.v1, server reflection,
channelz, a Knobs service to change the knobs at run time, and Prometheus metrics over HTTP
(grpc_server_started_total, grpc_server_handled_total, grpc_server_handling_seconds, ...).

Once serving it prints one JSON line on stdout with the bound addresses, e.g.
{"grpc": "127.0.0.1:50051", "metrics": "127.0.0.1:9090", "pod": "pod-1"}
"""

_ENV_HELP = [(env_name(knob), f"--{knob.replace('_', '-')}") for knob in FIELDS] + [
    ("BALLAST_MAX_CONNECTION_AGE_S", "--max-connection-age-s"),
    ("BALLAST_POD_NAME", "--name (else HOSTNAME: the pod name on Kubernetes)"),
]

EPILOG = f"""\
environment (flags win over the environment; Knobs.Set wins over both at run time):
{"".join(f"  {variable:30}the default of {flag}{chr(10)}" for variable, flag in _ENV_HELP)}

A platform sets knobs for a whole deployment through the environment and for one pod with flags
or the Knobs service. Streams pay latency, CPU and the leak per message sent; the error rate is
per call. SIGTERM or SIGINT: health turns NOT_SERVING, in-flight calls get --shutdown-grace-s,
then the process exits 0.

{textwrap.fill("error codes: " + ", ".join(ERROR_CODES), width=96)}
"""


def _status_name(value: str) -> str:
    try:
        return check_status_name(value)
    except KnobError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_knob_flags(parser: argparse.ArgumentParser) -> None:
    knobs = parser.add_argument_group("knobs (default: from the environment, else 0)")
    knobs.add_argument("--latency-ms", type=float, metavar="MS", help="added latency per message")
    knobs.add_argument(
        "--jitter-ms", type=float, metavar="MS", help="plus a uniform random [0, MS) per message"
    )
    knobs.add_argument("--cpu-ms", type=float, metavar="MS", help="CPU time burnt per message")
    knobs.add_argument(
        "--leak-bytes", type=int, metavar="N", help="memory kept forever per message (a leak)"
    )
    knobs.add_argument("--error-rate", type=float, metavar="P", help="share of calls failed, 0..1")
    knobs.add_argument(
        "--error-code",
        type=_status_name,
        metavar="CODE",
        help="status of injected failures (default UNAVAILABLE)",
    )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default_name = env.get("BALLAST_POD_NAME") or env.get("HOSTNAME") or socket.gethostname()
    parser.add_argument("--name", default=default_name, help="the pod name (default: %(default)s)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=50051, help="gRPC port, 0 for any (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="Prometheus port, 0 for any (default: %(default)s)",
    )
    _add_knob_flags(parser)
    server = parser.add_argument_group("connections and shutdown")
    server.add_argument(
        "--max-connection-age-s",
        type=float,
        metavar="S",
        default=env.get("BALLAST_MAX_CONNECTION_AGE_S") or None,
        help="send GOAWAY to connections this old (±10%%) so clients reconnect (default: never)",
    )
    server.add_argument(
        "--max-connection-age-grace-s",
        type=float,
        default=10.0,
        metavar="S",
        help="then close them after this long (default: %(default)s)",
    )
    server.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=5.0,
        metavar="S",
        help="on SIGTERM, time in-flight calls get (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed of the random generator (jitter, errors)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def parse_args(
    argv: list[str] | None, env: Mapping[str, str]
) -> tuple[argparse.Namespace, WorkloadConfig, Knobs]:
    """Parses and validates flags and environment; exits 2 with a message naming the problem."""
    parser = build_parser(env)
    args = parser.parse_args(argv)
    flags: dict[str, Any] = {k: v for k in FIELDS if (v := getattr(args, k)) is not None}
    try:
        knobs = knobs_from_env(env).changed(**flags)
        config = WorkloadConfig(
            pod=args.name,
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            max_connection_age_s=args.max_connection_age_s,
            max_connection_age_grace_s=args.max_connection_age_grace_s,
            shutdown_grace_s=args.shutdown_grace_s,
        )
    except ValueError as err:  # KnobError included
        parser.error(str(err))
    return args, config, knobs


async def run(workload: Workload) -> None:
    """Serves until SIGTERM or SIGINT; prints the bound addresses as one JSON line once serving."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def until_signal() -> None:
        ready = {"grpc": workload.address, "metrics": workload.metrics_address}
        print(json.dumps({**ready, "pod": workload.config.pod}), flush=True)
        await stop.wait()
        log.info("%s: stopping; in-flight calls get %gs", workload.config.pod,
                 workload.config.shutdown_grace_s)  # fmt: skip

    await workload.serve(until_signal)


def main(argv: list[str] | None = None) -> int:
    args, config, knobs = parse_args(argv, os.environ)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(run(Workload(config, knobs, rng=random.Random(args.seed))))
    except OSError as err:
        print(f"{PROG}: cannot start: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
