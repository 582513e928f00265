"""`python -m demo.loadgen`: client services calling one target; a JSON summary at the end.

    python -m demo.loadgen --target 127.0.0.1:50051 --clients 8 --rate 50 --duration-s 10 \\
        --mix unary=8,server_stream=1,client_stream=1,bidi=1

`--rate` is per client. The last line on stdout is the summary (JSON:
totals, codes, methods, pods, latency, then each client), also after Ctrl-C or
SIGTERM, which end the run early. `--every-s` adds progress lines (JSON) on
stderr. Benchmarks run it as a separate process and read the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
from collections.abc import Sequence

from demo.loadgen.generator import LoadGenerator
from demo.loadgen.spec import ClientSpec, parse_mix
from demo.loadgen.stats import LoadStats

_SUMMARY = "Client services calling one target at a rate; prints a JSON summary last."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.loadgen", description=_SUMMARY)
    parser.add_argument("--target", required=True, help="host:port: L4 Service, balancer or pod")
    parser.add_argument("--clients", type=int, default=8, help="client services, one channel each")
    parser.add_argument("--rate", type=float, default=50.0, help="calls per second, per client")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured run time")
    parser.add_argument("--warmup-s", type=float, default=0.0, help="calls before measuring")
    parser.add_argument(
        "--mix",
        default="unary=1",
        help="method weights, e.g. unary=8,server_stream=1,client_stream=1,bidi=1",
    )
    parser.add_argument("--deadline-s", type=float, default=5.0, help="deadline of each call")
    parser.add_argument("--payload-bytes", type=int, default=64, help="bytes per item")
    parser.add_argument("--stream-messages", type=int, default=5, help="items per streaming call")
    parser.add_argument("--stream-interval-ms", type=int, default=0, help="server stream pace")
    parser.add_argument("--max-in-flight", type=int, default=100, help="per client; then skip")
    parser.add_argument("--seed", type=int, default=None, help="seed of phases and method draws")
    parser.add_argument("--every-s", type=float, default=0.0, help="progress on stderr (0: none)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration_s <= 0 or args.warmup_s < 0 or args.every_s < 0:
        parser.error("--clients must be >= 1, --duration-s > 0, --warmup-s and --every-s >= 0")
    return args


def client_specs(args: argparse.Namespace) -> list[ClientSpec]:
    """`--clients` identical specs named client-0, client-1, …; raises ValueError."""
    return [
        ClientSpec(
            name=f"client-{i}",
            target=args.target,
            rate_per_s=args.rate,
            mix=parse_mix(args.mix),
            deadline_s=args.deadline_s,
            payload_bytes=args.payload_bytes,
            stream_messages=args.stream_messages,
            stream_interval_ms=args.stream_interval_ms,
            max_in_flight=args.max_in_flight,
        )
        for i in range(args.clients)
    ]


async def main(args: argparse.Namespace) -> LoadStats:
    """Runs warm-up then the measured window; a signal ends it early. Returns the window's stats."""
    generator = LoadGenerator(client_specs(args), rng=random.Random(args.seed))
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    run = asyncio.create_task(generator.run(args.duration_s, warmup_s=args.warmup_s))
    signalled = asyncio.create_task(interrupted.wait())
    progress = asyncio.create_task(_report_progress(generator, args.every_s))
    try:
        await asyncio.wait({run, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        progress.cancel()
    if not run.done():
        # Interrupted: stop calling, give calls in flight their deadline, report what we have.
        await generator.stop(grace_s=args.deadline_s)
    return await run


async def _report_progress(generator: LoadGenerator, every_s: float) -> None:
    while every_s > 0:
        await asyncio.sleep(every_s)
        stats = generator.stats()
        line = {"event": "progress", "elapsed_s": round(stats.elapsed_s, 3), "ok": stats.ok,
                "errors": stats.errors, "skipped": stats.skipped, "pods": stats.pods}  # fmt: skip
        print(json.dumps(line), file=sys.stderr, flush=True)


def cli(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client_specs(args)  # fail on a bad value before any connection
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stats = asyncio.run(main(args))
    print(json.dumps({"event": "summary", **stats.to_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
