"""`python -m demo` (`make demo`): the scene and the dashboard watching it, on 127.0.0.1.

Pods, the L4 Service, Ballast and its xDS server, the three client groups (L4,
via Ballast, proxyless: `demo/scene.py`, `demo/proxyless.py`), the
collector fed by the balancer's admin API and the local platform, and the dashboard
on uvicorn, all in this process's event loop. Before serving it migrates the SQLite
database and gives the `operator` account a new random password, printed once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from balancer.picker import POLICIES
from dashboard.server import DashboardServer, migrate, setup_django
from demo.loadgen import LoadGenerator
from demo.proxyless import ProxylessClients
from demo.scene import SERVICE, MiB, Scene, SceneOptions
from platforms.base import PodFacts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Pods behind a kube-proxy-like L4 Service and behind Ballast, with clients"
        " on both: watch the L4 side pile onto a few pods while Ballast spreads its calls.",
    )
    parser.add_argument("--pods", type=int, default=4, help="pods in the deployment (4)")
    parser.add_argument("--clients", type=int, default=8, help="clients per group (8)")
    parser.add_argument("--rate", type=float, default=20.0, help="calls/s per client (20)")
    parser.add_argument(
        "--policy", choices=POLICIES, default="least_request", help="(least_request)"
    )
    parser.add_argument("--leak-bytes", type=int, default=0, help="memory kept per call (0)")
    parser.add_argument("--memory-limit-mib", type=int, default=256, help="per pod (256)")
    parser.add_argument("--port", type=int, default=50051, help="Ballast's gRPC port (50051)")
    parser.add_argument("--admin-port", type=int, default=9901, help="admin API port (9901)")
    parser.add_argument("--l4-port", type=int, default=50052, help="L4 Service port (50052)")
    parser.add_argument(
        "--xds-port", type=int, default=18000, help="Ballast's xDS server port (18000)"
    )
    parser.add_argument(
        "--no-proxyless",
        dest="proxyless",
        action="store_false",
        help="leave out the proxyless (xds:///inventory) client group",
    )
    parser.add_argument(
        "--dashboard-port", type=int, default=8000, help="the dashboard's HTTP port (8000)"
    )
    parser.add_argument(
        "--table", action="store_true", help="also print a per-pod table in the terminal"
    )
    parser.add_argument("--every-s", type=float, default=2.0, help="table refresh (2 s)")
    parser.add_argument("--log-dir", type=Path, help="pod logs go here (default: nowhere)")
    parser.add_argument(
        "--engine",
        choices=("embedded", "haproxy"),
        default="embedded",
        help="what carries Ballast's calls: its own proxy, or an HAProxy child (embedded)",
    )
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> SceneOptions:
    knobs = {"BALLAST_KNOB_LATENCY_MS": "2", "BALLAST_KNOB_LEAK_BYTES": str(args.leak_bytes)}
    return SceneOptions(
        pods=args.pods, clients_per_group=args.clients, rate_per_client=args.rate,
        policy=args.policy, memory_limit_bytes=args.memory_limit_mib * MiB, knobs=knobs,
        balancer_port=args.port, admin_port=args.admin_port, l4_port=args.l4_port,
        log_dir=args.log_dir, engine=args.engine, proxyless=args.proxyless,
        xds_port=args.xds_port,
    )  # fmt: skip


class Rates:
    """Per-pod calls/s of a client group, from the change in its counts between two looks."""

    def __init__(self, load: LoadGenerator | ProxylessClients) -> None:
        self._load = load
        self._last: Mapping[str, int] = {}

    def per_pod(self, elapsed_s: float) -> dict[str, float]:
        now = self._load.stats().pods
        rates = {pod: (n - self._last.get(pod, 0)) / elapsed_s for pod, n in now.items()}
        self._last = dict(now)
        return rates


def imbalance(rates: Mapping[str, float], pods: list[str]) -> str:
    """Busiest pod's rate ÷ the mean over the pods (1.00 is perfectly even)."""
    values = [rates.get(pod, 0.0) for pod in pods]
    mean = sum(values) / len(values) if values else 0.0
    return f"{max(values) / mean:.2f}" if mean else "-"


def table(
    scene: Scene,
    pods: list[PodFacts],
    l4: dict[str, float],
    ballast: dict[str, float],
    proxyless: dict[str, float] | None = None,
) -> str:
    """One row per pod; the proxyless column only with `proxyless` (the group runs)."""
    cluster = scene.balancer.clusters["inventory"]
    px_head = f" {'proxyless/s':>11}" if proxyless is not None else ""
    header = (f"{'pod':<24} {'ready':<5} {'ballast':<10} {'weight':>6} {'via L4/s':>9} "
              f"{'via Ballast/s':>13}{px_head} {'cpu m':>6} {'memory MiB':>11} {'restarts':>8}"
              "  last")  # fmt: skip
    rows = [header]
    for pod in pods:
        ep = cluster.endpoints.get(pod.name)
        memory = f"{(pod.memory_bytes or 0) / MiB:.0f}/{(pod.memory_limit_bytes or 0) / MiB:.0f}"
        px = f" {proxyless.get(pod.name, 0.0):>11.1f}" if proxyless is not None else ""
        rows.append(
            f"{pod.name:<24} {'yes' if pod.ready else 'no':<5} "
            f"{ep.state.value if ep else '-':<10} {ep.weight if ep else '-':>6} "
            f"{l4.get(pod.name, 0.0):>9.1f} {ballast.get(pod.name, 0.0):>13.1f}{px} "
            f"{pod.cpu_millicores or 0:>6.0f} {memory:>11} {pod.restart_count:>8}  "
            f"{pod.last_termination_reason or ''}"
        )
    names = [p.name for p in pods if p.phase == "Running"]
    px_even = f"   proxyless {imbalance(proxyless, names)}" if proxyless is not None else ""
    rows.append(
        f"busiest ÷ mean:  via L4 {imbalance(l4, names)}   via Ballast {imbalance(ballast, names)}"
        + px_even
    )
    return "\n".join(rows)


def banner(scene: Scene, dashboard: DashboardServer, login: tuple[str, str]) -> str:
    return f"""
Ballast demo — {scene.options.pods} pods of the demo workload, {scene.options.clients_per_group} \
clients through each door.

  Dashboard:                     {dashboard.url}
                                 log in as {login[0]} / {login[1]}
                                 (a new password every run; it is not shown again)
  L4 Service (kube-proxy-like):  {scene.l4.address}
  Ballast (gRPC L7):             {scene.balancer.listen_addresses[0]}
  admin API:                     {scene.balancer.admin_address}
                                 (authorization: Bearer {scene.admin_token})
{proxyless_lines(scene)}
Ctrl-C stops everything.
"""


def proxyless_lines(scene: Scene) -> str:
    """The banner's lines on the proxyless group; empty without it."""
    if scene.proxyless is None:
        return ""
    return (
        f"  xDS server (proxyless):        {scene.balancer.xds_address}\n"
        f"  proxyless clients:             {scene.proxyless.target},"
        f" GRPC_XDS_BOOTSTRAP={scene.bootstrap_path}\n"
    )


async def run(args: argparse.Namespace, login: tuple[str, str]) -> None:
    from dashboard.app.collecting import ControlPlane, collector_config

    scene = Scene(options_from(args))
    dashboard = DashboardServer(port=args.dashboard_port)
    dashboard.bind()  # a taken port fails before the pods start
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await scene.start()
    try:
        assert scene.via_l4 is not None and scene.via_ballast is not None
        replicas = {scene.balancer.config.id: scene.balancer.admin_address or ""}
        control = ControlPlane(
            collector_config(replicas, scene.admin_token), platform=scene.platform
        )
        dashboard.background = control
        await dashboard.start()
        print(banner(scene, dashboard, login), flush=True)
        if args.table:
            await print_tables(scene, stop, args.every_s)
        else:
            await stop.wait()
        # What the clients got while the demo ran: counted now, and the clients stopped
        # first, so that nothing torn down after this (the dashboard, the balancer, the
        # pods) shows up as their failures.
        summary = exit_summary(scene)
        await stop_clients(scene)
        summary += proxyless_summary(scene)
    finally:
        await dashboard.stop()
        await scene.stop()
    print(summary, flush=True)


async def print_tables(scene: Scene, stop: asyncio.Event, every_s: float) -> None:
    """A per-pod table every `every_s` until `stop` is set."""
    assert scene.via_l4 is not None and scene.via_ballast is not None
    loop = asyncio.get_running_loop()
    l4_rates, ballast_rates = Rates(scene.via_l4), Rates(scene.via_ballast)
    px_rates = Rates(scene.proxyless) if scene.proxyless is not None else None
    last = loop.time()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        now = loop.time()
        pods = await scene.platform.list_pods("inventory")
        l4, ballast = l4_rates.per_pod(now - last), ballast_rates.per_pod(now - last)
        proxyless = px_rates.per_pod(now - last) if px_rates is not None else None
        last = now
        print(table(scene, pods, l4, ballast, proxyless), end="\n\n", flush=True)


async def stop_clients(scene: Scene) -> None:
    """Stops the client groups (calls in flight get a second; the proxyless ones their
    deadline) before anything else."""
    loads = [g for g in (scene.via_l4, scene.via_ballast) if g is not None]
    proxyless = [scene.proxyless.stop()] if scene.proxyless is not None else []
    await asyncio.gather(*(load.stop(grace_s=1.0) for load in loads), *proxyless)


def exit_summary(scene: Scene) -> str:
    """Each client group's calls while the demo ran: "clients via Ballast: 2410 calls in
    61 s, all OK", or with the codes that were not OK and their share."""
    lines = []
    for name, load in (("L4", scene.via_l4), ("Ballast", scene.via_ballast)):
        if load is not None:
            stats = load.stats()
            lines.append(f"clients via {name}: {group_summary(stats.codes, stats.elapsed_s)}")
    return "\n".join(lines)


def proxyless_summary(scene: Scene) -> str:
    """The proxyless group's line of the exit summary, from its own count once stopped."""
    if scene.proxyless is None:
        return ""
    stats = scene.proxyless.stats()
    return f"\nproxyless clients: {group_summary(stats.codes, stats.elapsed_s)}"


def group_summary(codes: Mapping[str, int], elapsed_s: float) -> str:
    total = sum(codes.values())
    failed = Counter({code: n for code, n in codes.items() if code != "OK" and n})
    head = f"{total} calls in {elapsed_s:.0f} s"
    if not failed:
        return f"{head}, all OK"
    shown = ", ".join(f"{code} {n}" for code, n in failed.most_common())
    return f"{head}, {sum(failed.values()) / total:.1%} not OK: {shown}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from django.core.exceptions import ImproperlyConfigured

    from dashboard.env import one_line

    try:
        login = prepare_dashboard()
        asyncio.run(run(args, login))
    except OSError as err:  # a port taken (ListenError is one) or a pod that cannot start
        print(f"ballast demo: {err}")
        return 1
    except ImproperlyConfigured as err:  # a bad variable in the environment
        print(f"ballast demo: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def prepare_dashboard() -> tuple[str, str]:
    """Sets Django up for a laptop run (SQLite, in-memory channel layer, a key per
    process), migrates, and returns the operator's login with a new password."""
    setup_django(BALLAST_DEV="1", BALLAST_SERVICES=SERVICE)
    migrate()
    from dashboard.app.accounts import OPERATOR, reset_operator

    return OPERATOR, reset_operator()


if __name__ == "__main__":
    raise SystemExit(main())
