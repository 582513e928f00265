"""Proxyless gRPC vs direct vs through the proxy: throughput, added latency, convergence.

Starts two echo backends, one balancer (`python -m balancer`) with its listener, the
admin API and the xDS server, and one load generator process whose channels are
direct (both backends), proxyless (`xds:///echo`, GRPC_XDS_BOOTSTRAP naming the
balancer's xDS server) or through the proxy. The cases run in alternating rounds
(throughput at concurrency 64, then p50 latency at concurrency 1); then
`convergence` drains and undrains a backend through the admin API and measures how
long until every proxyless client has ACKed the new endpoints (the server's
ACK state, read from the admin snapshot every ~2 ms).

The last line of stdout is one JSON object (medians over rounds of
per-round figures, so drift on a shared machine cancels within a round):
`proxyless_throughput_ratio` and `proxy_throughput_ratio` (÷ direct),
`proxyless_added_p50_ms` and `proxy_added_p50_ms` (− direct, concurrency 1),
`convergence_p50_ms` / `convergence_p99_ms`. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from balancer_process import wait_until_ready
from processes import BenchError, Child, read_json_line, start_child, stop_child

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
TOKEN = "bench-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
QUICK = {"rounds": 3, "duration_s": 1.0, "warmup_s": 0.5, "drains": 10}
FULL = {"rounds": 5, "duration_s": 4.0, "warmup_s": 1.0, "drains": 40}
CASES = ("direct", "proxyless", "proxy")


def balancer_toml(backends: list[str]) -> str:
    endpoints = ", ".join(
        f'{{ address = "{a}", name = "echo-{i}" }}' for i, a in enumerate(backends)
    )
    return f"""\
[balancer]
id = "bench-proxyless"

[admin]
address = "127.0.0.1:0"
token = "{TOKEN}"

[xds]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.1:0"

[[clusters]]
name = "echo"
policy = "round_robin"
unary_methods = ["/bench.Echo/Unary"]

[clusters.discovery]
kind = "static"
endpoints = [{endpoints}]
"""


def bootstrap(xds_address: str) -> dict[str, Any]:
    server = {"server_uri": xds_address, "channel_creds": [{"type": "insecure"}]}
    server["server_features"] = ["xds_v3"]
    return {"xds_servers": [server], "node": {"id": "bench-loadgen"}}


async def start_backend(stack: contextlib.AsyncExitStack, name: str) -> str:
    child = await start_child(name, [sys.executable, str(BENCH_DIR / "echo_backend.py")])
    stack.push_async_callback(stop_child, child)
    ready = await read_json_line(child, 15)
    return f"127.0.0.1:{ready['port']}"


async def start_balancer(
    stack: contextlib.AsyncExitStack, work_dir: Path, backends: list[str]
) -> dict[str, Any]:
    config, ready_path = work_dir / "balancer.toml", work_dir / "balancer.ready.json"
    config.write_text(balancer_toml(backends))
    argv = [sys.executable, "-m", "balancer", "--config", str(config)]
    argv += ["--ready-file", str(ready_path), "--log-level", "WARNING"]
    child = await start_child(
        "balancer",
        argv,
        stdout=asyncio.subprocess.DEVNULL,
        log_path=work_dir / "balancer.stderr.log",
        cwd=REPO_DIR,
    )
    stack.push_async_callback(stop_child, child)
    await wait_until_ready(child, ready_path)
    ready: dict[str, Any] = json.loads(ready_path.read_text())
    return ready


async def start_loadgen(stack: contextlib.AsyncExitStack, work_dir: Path, xds: str) -> Child:
    path = work_dir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap(xds)))
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}
    argv = [sys.executable, str(BENCH_DIR / "loadgen.py"), "--serve"]
    child = await start_child("loadgen", argv, stdin=asyncio.subprocess.PIPE, env=env)
    stack.push_async_callback(stop_child, child)
    return child


async def run_load(loadgen: Child, spec: dict[str, Any]) -> dict[str, Any]:
    assert loadgen.process.stdin is not None
    loadgen.process.stdin.write((json.dumps(spec) + "\n").encode())
    await loadgen.process.stdin.drain()
    while (event := await read_json_line(loadgen, 120))["event"] != "result":
        pass
    return event


def targets(case: str, backends: list[str], listener: str) -> list[str]:
    return {"direct": backends, "proxyless": ["xds:///echo"], "proxy": [listener]}[case]


async def run_rounds(
    loadgen: Child, settings: dict[str, Any], backends: list[str], listener: str
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {c: {"rps": [], "p50_ms": []} for c in CASES}
    timing = {"duration_s": settings["duration_s"], "warmup_s": settings["warmup_s"]}
    for round_index in range(settings["rounds"]):
        shift = round_index % len(CASES)
        for case in CASES[shift:] + CASES[:shift]:  # alternate who goes first
            base = {"targets": targets(case, backends, listener), "channels": 2, **timing}
            load = await run_load(loadgen, {**base, "concurrency": 64})
            latency = await run_load(loadgen, {**base, "concurrency": 1})
            if load["errors"] or latency["errors"]:
                raise BenchError(f"{case}: {load['errors'] + latency['errors']} calls failed")
            samples[case]["rps"].append(load["rps"])
            samples[case]["p50_ms"].append(latency["p50_ms"])
            print(
                f"round {round_index + 1} {case}: {load['rps']:.0f}/s,"
                f" p50 {latency['p50_ms']:.3f} ms at concurrency 1",
                file=sys.stderr,
                flush=True,
            )
    return samples


async def converged(stub: admin_pb2_grpc.AdminStub, version_before: str) -> bool:
    snapshot = await stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
    eds = snapshot.xds_versions.get("EDS", "")
    clients = list(snapshot.xds_clients)
    return eds != version_before and bool(clients) and all(c.in_sync for c in clients)


async def poll_until_converged(stub: admin_pb2_grpc.AdminStub, version_before: str) -> None:
    """Polls the admin snapshot every ~2 ms: the server's ACK state is the clock's stop."""
    deadline = time.monotonic() + 30
    while not await converged(stub, version_before):
        if time.monotonic() > deadline:
            raise BenchError("proxyless clients did not ACK a drain within 30 s")
        await asyncio.sleep(0.002)


async def eds_version(stub: admin_pb2_grpc.AdminStub) -> str:
    snapshot = await stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)
    return str(snapshot.xds_versions.get("EDS", ""))


async def convergence_ms(admin: str, loadgen: Child, drains: int) -> list[float]:
    """Drain/undrain `drains` times while proxyless load runs; ms until every client ACKed."""
    assert loadgen.process.stdin is not None
    spec = {"targets": ["xds:///echo"], "channels": 2, "concurrency": 8}
    spec |= {"duration_s": 1.0 + drains * 0.3, "warmup_s": 0.1}
    loadgen.process.stdin.write((json.dumps(spec) + "\n").encode())
    await loadgen.process.stdin.drain()
    await read_json_line(loadgen, 30)  # measuring: the channels are up
    results = []
    async with grpc.aio.insecure_channel(admin) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        for i in range(drains):
            before = await eds_version(stub)
            started = time.perf_counter()
            if i % 2 == 0:
                request = admin_pb2.DrainRequest(cluster="echo", endpoint_id="echo-0")
                await stub.Drain(request, metadata=AUTH)
            else:
                undrain = admin_pb2.UndrainRequest(cluster="echo", endpoint_id="echo-0")
                await stub.Undrain(undrain, metadata=AUTH)
            await poll_until_converged(stub, before)
            results.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.1)
    while (await read_json_line(loadgen, 60))["event"] != "result":
        pass
    return results


def percentile(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def summarize(
    samples: dict[str, dict[str, list[float]]], convergence: list[float], settings: dict[str, Any]
) -> dict[str, Any]:
    rps = {c: statistics.median(samples[c]["rps"]) for c in CASES}
    p50 = {c: statistics.median(samples[c]["p50_ms"]) for c in CASES}

    def ratio(case: str) -> float:  # per round, then the median: drift cancels in a round
        pairs = zip(samples[case]["rps"], samples["direct"]["rps"], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def added(case: str) -> float:
        pairs = zip(samples[case]["p50_ms"], samples["direct"]["p50_ms"], strict=True)
        return statistics.median(a - b for a, b in pairs)

    return {
        "bench": "proxyless",
        "direct_rps": round(rps["direct"], 1),
        "proxyless_rps": round(rps["proxyless"], 1),
        "proxy_rps": round(rps["proxy"], 1),
        "proxyless_throughput_ratio": round(ratio("proxyless"), 3),
        "proxy_throughput_ratio": round(ratio("proxy"), 3),
        "direct_p50_ms": round(p50["direct"], 4),
        "proxyless_p50_ms": round(p50["proxyless"], 4),
        "proxy_p50_ms": round(p50["proxy"], 4),
        "proxyless_added_p50_ms": round(added("proxyless"), 4),
        "proxy_added_p50_ms": round(added("proxy"), 4),
        "convergence_p50_ms": round(percentile(convergence, 0.5), 1),
        "convergence_p99_ms": round(percentile(convergence, 0.99), 1),
        "convergence_samples": len(convergence),
        **settings,
        "grpcio_version": grpc.__version__,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


async def run(settings: dict[str, Any]) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ballast-xds-")))
        backends = [await start_backend(stack, f"echo-backend-{i}") for i in range(2)]
        ready = await start_balancer(stack, work_dir, backends)
        loadgen = await start_loadgen(stack, work_dir, ready["xds"])
        samples = await run_rounds(loadgen, settings, backends, ready["listeners"][0])
        convergence = await convergence_ms(ready["admin"], loadgen, settings["drains"])
    return summarize(samples, convergence, settings)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"short run (< 60 s): {QUICK}")
    settings = dict(QUICK if parser.parse_args(argv).quick else FULL)
    try:
        report = asyncio.run(run(settings))
    except BenchError as error:
        print(f"proxyless: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
