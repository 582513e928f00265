"""Proxyless gRPC vs direct vs through the proxy: throughput, added latency, convergence.

Starts two echo backends, one balancer (`python -m balancer`) with its listener, the
admin API and the xDS server, and one load generator process with 2 channels per
case: direct (`ipv4:<both backends>`, round_robin), proxyless (`xds:///echo`,
GRPC_XDS_BOOTSTRAP naming the balancer's xDS server), through the proxy, and
direct_pinned (one channel per backend, no balancing; for reference). Direct and
proxyless differ only by xDS: both channels of each hold a connection to both
backends and spread their calls over them. The cases run in alternating rounds
(throughput at concurrency 64, then p50 latency at concurrency 1). Then
convergence, on a second cluster (`probe`: two named backends, `xds_probe.py`) and a
proxyless probe client calling it from 4 workers: a backend is drained and undrained
through the admin API, and per change the bench measures the time until the client
acted on it (its last call to the drained backend started; its first call to the
undrained one started) and until every client ACKed it (the admin snapshot, polled
every ~2 ms).

The last line of stdout is one JSON object (medians over rounds of
per-round figures, so drift on a shared machine cancels within a round):
`proxyless_throughput_ratio`, `proxy_throughput_ratio` and
`direct_pinned_throughput_ratio` (÷ direct),
`proxyless_added_p50_ms` and `proxy_added_p50_ms` (− direct, concurrency 1),
`convergence_p50_ms` / `convergence_p99_ms` (client acted), `ack_p50_ms` /
`ack_p99_ms` (every client ACKed). Progress goes to stderr.
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
from processes import BenchError, Child, cpu_seconds, read_json_line, start_child, stop_child

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
TOKEN = "bench-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
QUICK = {"rounds": 3, "duration_s": 1.0, "warmup_s": 0.5, "drains": 10}
FULL = {"rounds": 5, "duration_s": 4.0, "warmup_s": 1.0, "drains": 40}
CASES = ("direct", "proxyless", "proxy", "direct_pinned")


def balancer_toml(backends: list[str], probes: list[dict[str, str]]) -> str:
    endpoints = ", ".join(
        f'{{ address = "{a}", name = "echo-{i}" }}' for i, a in enumerate(backends)
    )
    probe_endpoints = ", ".join(
        f'{{ address = "{p["address"]}", name = "{p["name"]}" }}' for p in probes
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

[[clusters]]
name = "probe"
policy = "round_robin"

[clusters.discovery]
kind = "static"
endpoints = [{probe_endpoints}]

[routing]
default_cluster = "echo"
"""


def bootstrap(xds_address: str) -> dict[str, Any]:
    server = {"server_uri": xds_address, "channel_creds": [{"type": "insecure"}]}
    server["server_features"] = ["xds_v3"]
    return {"xds_servers": [server], "node": {"id": "bench-loadgen"}}


def write_bootstrap(path: Path, xds_address: str) -> None:
    path.write_text(json.dumps(bootstrap(xds_address)))


async def start_backend(stack: contextlib.AsyncExitStack, name: str) -> str:
    child = await start_child(name, [sys.executable, str(BENCH_DIR / "echo_backend.py")])
    stack.push_async_callback(stop_child, child)
    ready = await read_json_line(child, 15)
    return f"127.0.0.1:{ready['port']}"


async def start_balancer(
    stack: contextlib.AsyncExitStack,
    work_dir: Path,
    backends: list[str],
    probes: list[dict[str, str]],
) -> dict[str, Any]:
    config, ready_path = work_dir / "balancer.toml", work_dir / "balancer.ready.json"
    config.write_text(balancer_toml(backends, probes))
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
    """One run; the result gains `client_cpu_us_per_call`: the load generator's CPU
    time over the measurement window ÷ its calls (what a client pays per call, which
    other processes on a shared machine disturb far less than throughput)."""
    assert loadgen.process.stdin is not None
    loadgen.process.stdin.write((json.dumps(spec) + "\n").encode())
    await loadgen.process.stdin.drain()
    cpu_s = {}
    while (event := await read_json_line(loadgen, 120))["event"] != "result":
        cpu_s[event["event"]] = cpu_seconds([loadgen.pid])
    used_s = cpu_s.get("stopped", 0.0) - cpu_s.get("measuring", 0.0)
    event["client_cpu_us_per_call"] = used_s / max(1, event["count"]) * 1e6
    return event


def case_spec(case: str, backends: list[str], listener: str) -> dict[str, Any]:
    """What a case's channels dial. `direct` and `proxyless` are alike but for xDS: each
    of the 2 channels holds a subchannel to both backends and round-robins its calls
    over them (direct: a static `ipv4:a,b` target with round_robin). `direct_pinned` is
    the cheaper shape the first runs compared with — one channel per backend, no
    balancing at all — kept to show the difference."""
    specs: dict[str, dict[str, Any]] = {
        "direct": {"targets": [multi_address(backends)], "lb_policy": "round_robin"},
        "direct_pinned": {"targets": backends},
        "proxyless": {"targets": ["xds:///echo"]},
        "proxy": {"targets": [listener]},
    }
    return specs[case]


def multi_address(backends: list[str]) -> str:
    """One gRPC target naming every backend: `ipv4:127.0.0.1:1,127.0.0.1:2`."""
    return "ipv4:" + ",".join(backends)


async def run_rounds(
    loadgen: Child, settings: dict[str, Any], backends: list[str], listener: str
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {
        c: {"rps": [], "p50_ms": [], "cpu_us": []} for c in CASES
    }
    timing = {"duration_s": settings["duration_s"], "warmup_s": settings["warmup_s"]}
    for round_index in range(settings["rounds"]):
        shift = round_index % len(CASES)
        for case in CASES[shift:] + CASES[:shift]:  # alternate who goes first
            base = {**case_spec(case, backends, listener), "channels": 2, **timing}
            load = await run_load(loadgen, {**base, "concurrency": 64})
            latency = await run_load(loadgen, {**base, "concurrency": 1})
            if load["errors"] or latency["errors"]:
                raise BenchError(f"{case}: {load['errors'] + latency['errors']} calls failed")
            samples[case]["rps"].append(load["rps"])
            samples[case]["p50_ms"].append(latency["p50_ms"])
            samples[case]["cpu_us"].append(load["client_cpu_us_per_call"])
            print(
                f"round {round_index + 1} {case}: {load['rps']:.0f}/s,"
                f" client CPU {load['client_cpu_us_per_call']:.0f} µs/call,"
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


async def start_probes(
    stack: contextlib.AsyncExitStack, work_dir: Path
) -> tuple[list[dict[str, str]], Path]:
    """Two named backends for the `probe` cluster; returns their endpoints, and the
    bootstrap file the probe client will use (written once the xDS address is known)."""
    endpoints = []
    for i in range(2):
        argv = [sys.executable, str(BENCH_DIR / "xds_probe.py"), "backend", f"probe-{i}"]
        child = await start_child(f"probe-{i}", argv)
        stack.push_async_callback(stop_child, child)
        port = (await read_json_line(child, 15))["port"]
        endpoints.append({"address": f"127.0.0.1:{port}", "name": f"probe-{i}"})
    return endpoints, work_dir / "probe-bootstrap.json"


async def start_probe_client(
    stack: contextlib.AsyncExitStack, bootstrap_path: Path, xds: str
) -> Child:
    write_bootstrap(bootstrap_path, xds)
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap_path)}
    argv = [sys.executable, str(BENCH_DIR / "xds_probe.py"), "client", "xds:///probe"]
    child = await start_child("probe-client", argv, stdin=asyncio.subprocess.PIPE, env=env)
    stack.push_async_callback(stop_child, child)
    return child


async def ask(probe: Child, command: str) -> dict[str, Any]:
    assert probe.process.stdin is not None
    probe.process.stdin.write(f"{command}\n".encode())
    await probe.process.stdin.drain()
    return await read_json_line(probe, 30)


async def drained_ms(stub: admin_pb2_grpc.AdminStub, probe: Child) -> tuple[float, float]:
    """Drain probe-0: (ms to every client's ACK, ms until the last call it got started)."""
    before = await eds_version(stub)
    started = time.time()
    request = admin_pb2.DrainRequest(cluster="probe", endpoint_id="probe-0")
    await stub.Drain(request, metadata=AUTH)
    await poll_until_converged(stub, before)
    acked = time.time()
    await asyncio.sleep(0.3)  # time enough for any straggler to show
    last = (await ask(probe, "report"))["last"].get("probe-0", 0.0)
    return (acked - started) * 1000, max(0.0, last - started) * 1000


async def undrained_ms(stub: admin_pb2_grpc.AdminStub, probe: Child) -> tuple[float, float]:
    """Undrain probe-0: (ms to every client's ACK, ms until its first new call started)."""
    await ask(probe, "mark")
    before = await eds_version(stub)
    started = time.time()
    request = admin_pb2.UndrainRequest(cluster="probe", endpoint_id="probe-0")
    await stub.Undrain(request, metadata=AUTH)
    await poll_until_converged(stub, before)
    acked = time.time()
    deadline = time.monotonic() + 10
    while "probe-0" not in (first := (await ask(probe, "report"))["first"]):
        if time.monotonic() > deadline:
            raise BenchError("no call reached probe-0 within 10 s of its undrain")
        await asyncio.sleep(0.01)
    return (acked - started) * 1000, (first["probe-0"] - started) * 1000


async def convergence_ms(admin: str, probe: Child, drains: int) -> tuple[list[float], list[float]]:
    """Drain and undrain probe-0 `drains` times in all; per change, ms until every client
    ACKed it and ms until the client acted on it (no new call / a first call)."""
    await ask(probe, "report")  # the client answers: it runs
    acks, acted = [], []
    async with grpc.aio.insecure_channel(admin) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        for i in range(drains):
            ack_ms, act_ms = await (drained_ms if i % 2 == 0 else undrained_ms)(stub, probe)
            acks.append(ack_ms)
            acted.append(act_ms)
            print(f"change {i + 1}/{drains}: ACK {ack_ms:.1f} ms, acted {act_ms:.1f} ms",
                  file=sys.stderr, flush=True)  # fmt: skip
    return acks, acted


def percentile(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def summarize(
    samples: dict[str, dict[str, list[float]]],
    convergence: tuple[list[float], list[float]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    acks, acted = convergence
    rps = {c: statistics.median(samples[c]["rps"]) for c in CASES}
    p50 = {c: statistics.median(samples[c]["p50_ms"]) for c in CASES}

    def ratio(case: str) -> float:  # per round, then the median: drift cancels in a round
        pairs = zip(samples[case]["rps"], samples["direct"]["rps"], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def cpu_ratio(case: str) -> float:
        pairs = zip(samples[case]["cpu_us"], samples["direct"]["cpu_us"], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def added(case: str) -> float:
        pairs = zip(samples[case]["p50_ms"], samples["direct"]["p50_ms"], strict=True)
        return statistics.median(a - b for a, b in pairs)

    return {
        "bench": "proxyless",
        "direct_rps": round(rps["direct"], 1),
        "direct_pinned_rps": round(rps["direct_pinned"], 1),
        "proxyless_rps": round(rps["proxyless"], 1),
        "proxy_rps": round(rps["proxy"], 1),
        "proxyless_throughput_ratio": round(ratio("proxyless"), 3),
        "proxy_throughput_ratio": round(ratio("proxy"), 3),
        "direct_pinned_throughput_ratio": round(ratio("direct_pinned"), 3),
        "direct_client_cpu_us_per_call": round(statistics.median(samples["direct"]["cpu_us"]), 1),
        "proxyless_client_cpu_us_per_call": round(
            statistics.median(samples["proxyless"]["cpu_us"]), 1
        ),
        "proxyless_client_cpu_ratio": round(cpu_ratio("proxyless"), 3),
        "direct_p50_ms": round(p50["direct"], 4),
        "direct_pinned_p50_ms": round(p50["direct_pinned"], 4),
        "proxyless_p50_ms": round(p50["proxyless"], 4),
        "proxy_p50_ms": round(p50["proxy"], 4),
        "proxyless_added_p50_ms": round(added("proxyless"), 4),
        "proxy_added_p50_ms": round(added("proxy"), 4),
        "convergence_p50_ms": round(percentile(acted, 0.5), 1),
        "convergence_p99_ms": round(percentile(acted, 0.99), 1),
        "ack_p50_ms": round(percentile(acks, 0.5), 1),
        "ack_p99_ms": round(percentile(acks, 0.99), 1),
        "convergence_samples": len(acted),
        **settings,
        "grpcio_version": grpc.__version__,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


async def run(settings: dict[str, Any]) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ballast-xds-")))
        backends = [await start_backend(stack, f"echo-backend-{i}") for i in range(2)]
        probes, probe_bootstrap = await start_probes(stack, work_dir)
        ready = await start_balancer(stack, work_dir, backends, probes)
        loadgen = await start_loadgen(stack, work_dir, ready["xds"])
        samples = await run_rounds(loadgen, settings, backends, ready["listeners"][0])
        # Started only now: its calls would take CPU from the rounds above.
        probe = await start_probe_client(stack, probe_bootstrap, ready["xds"])
        convergence = await convergence_ms(ready["admin"], probe, settings["drains"])
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
