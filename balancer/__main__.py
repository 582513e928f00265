"""`python -m balancer --config ballast.toml`: run one balancer replica."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from balancer.config import BalancerConfig, ConfigError, load_config
from balancer.engines import EngineUnavailable, check_engine
from balancer.server import Balancer, DiscoveryFactory, NoPlatform, static_discovery
from platforms.base import PlatformError

log = logging.getLogger("balancer")

DESCRIPTION = """\
Ballast's gRPC L7 balancer: routes every request (every stream) of any gRPC
service to an endpoint by policy, with weights, drain, health checks, outlier
ejection and per-endpoint stats, behind a token-guarded admin API.
"""

EPILOG = """\
environment:
  BALLAST_ADMIN_TOKEN   bearer token for the admin API (or the variable named by
                        admin.token_env in the config file)
  BALLAST_XDS_TOKEN     bearer token the xDS server requires, with [xds] (or the
                        variable named by xds.token_env); without one it listens
                        on loopback only
  BALLAST_CONTROL_TOKEN API token of the dashboard, with [control_plane] (or the
                        variable named by control_plane.token_env)
  KUBECONFIG            the kubeconfig file for discovery.kind = "kubernetes" when
                        not in a pod (in a pod: its service account)

SIGTERM or SIGINT stops gracefully: no new calls are accepted, in-flight calls
get balancer.shutdown_grace_s to finish, then they are cancelled.
See README.md for the config file's keys.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m balancer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, type=Path, metavar="FILE", help="the TOML config file"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config file, print a summary and exit (0 when valid)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="FILE",
        help="once serving, write the bound addresses there as JSON "
        '({"listeners": [...], "admin": ..., "metrics": ..., "xds": ...}); useful with port 0',
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help='for discovery.kind = "kubernetes": the kubeconfig file (default: $KUBECONFIG,'
        " else in a pod its service account, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context", metavar="NAME", help="the kubeconfig context (default: its current one)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO)",
    )
    return parser.parse_args(argv)


async def run(balancer: Balancer, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def until_signal() -> None:
        if ready_file is not None:
            _write_ready_file(ready_file, balancer)
        await stop.wait()
        log.info("shutting down: waiting up to %gs for calls", balancer.config.shutdown_grace_s)

    await balancer.serve(until_signal)


def _write_ready_file(path: Path, balancer: Balancer) -> None:
    ready = {
        "listeners": balancer.listen_addresses,
        "admin": balancer.admin_address,
        "metrics": balancer.metrics_address,
        "xds": balancer.xds_address,
        "pid": os.getpid(),
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(ready), encoding="utf-8")
    partial.replace(path)  # atomic: a reader never sees half a file


def _loop_factory(config: BalancerConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if config.event_loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def _discovery(config: BalancerConfig, args: argparse.Namespace) -> DiscoveryFactory:
    """Static discovery, and Kubernetes discovery when a cluster asks for it."""
    if not any(c.discovery.kind == "kubernetes" for c in config.clusters):
        return static_discovery
    # Imported here: the Kubernetes client is loaded only when a cluster uses it.
    from platforms.discovery import kubernetes_discovery
    from platforms.kubernetes import KubernetesSettings

    settings = KubernetesSettings.from_environment(
        os.environ, kubeconfig=args.kubeconfig, context=args.context
    )
    return kubernetes_discovery(settings)


def _check(path: Path, config: BalancerConfig, discovery: DiscoveryFactory) -> int:
    """`--check`: what start would refuse, refused now (exit 2), else a summary (exit 0)."""
    try:
        for cluster in config.clusters:
            discovery(cluster)
    except (NoPlatform, PlatformError) as err:
        print(f"ballast: bad config: {path}: {err}", file=sys.stderr)
        return 2
    try:
        check_engine(config)
    except EngineUnavailable as err:
        print(f"ballast: cannot start: {err}", file=sys.stderr)
        return 1
    names = ", ".join(f"{c.name} ({c.policy})" for c in config.clusters)
    print(f"{path}: valid; engine: {config.engine}; clusters: {names}")
    if config.xds is not None:
        print(f"xDS server for proxyless gRPC clients on {config.xds.address}")
    if config.control_plane is not None:
        cp = config.control_plane
        print(
            f"desired state from {cp.url} before serving"
            f" (waits up to {cp.initial_fetch_timeout_s:g} s)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as err:
        print(f"ballast: bad config: {err}", file=sys.stderr)
        return 2
    discovery = _discovery(config, args)
    if args.check:
        return _check(args.config, config, discovery)
    try:
        balancer = Balancer(config, discovery=discovery)
    except (NoPlatform, PlatformError) as err:
        print(f"ballast: bad config: {args.config}: {err}", file=sys.stderr)
        return 2
    except EngineUnavailable as err:
        print(f"ballast: cannot start: {err}", file=sys.stderr)
        return 1
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
            runner.run(run(balancer, args.ready_file))
    except OSError as err:  # ListenError: the message says what to do
        print(f"ballast: cannot start: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
