"""The scene: the gRPC imbalance made real on one machine, and Ballast fixing it.

A deployment of pods (real processes running the demo workload), a
kube-proxy-like L4 Service in front of them, a Ballast balancer in front of the
same pods, and two groups of long-lived clients: one through the L4 Service
(pinned per connection, as in Kubernetes) and one through Ballast (balanced per
request). With `proxyless`, a third group calls the pods straight, balanced by
Ballast's xDS server (`xds:///inventory`, demo/proxyless.py). The demo
(`python -m demo`), the balance benchmark and the tests all start it through `Scene`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from balancer.config import BalancerConfig, config_from_dict
from balancer.server import Balancer
from demo.l4 import L4Service
from demo.loadgen import ClientSpec, LoadGenerator, Method
from demo.proxyless import BOOTSTRAP_FILE, ProxylessClients, write_bootstrap
from platforms.discovery import discovery_from
from platforms.local import DeploymentSpec, LocalPlatform, ProbeSpec

SERVICE = "inventory"
MiB = 1024 * 1024


@dataclass(frozen=True)
class SceneOptions:
    """What the scene runs. Knobs apply to every pod (the deployment's environment)."""

    pods: int = 4
    clients_per_group: int = 8
    rate_per_client: float = 20.0
    # least_request: at the demo's light load peak_ewma chases small latency differences.
    policy: str = "least_request"
    memory_limit_bytes: int | None = 256 * MiB
    knobs: dict[str, str] = field(default_factory=lambda: {"BALLAST_KNOB_LATENCY_MS": "2"})
    balancer_port: int = 0
    admin_port: int = 0
    l4_port: int = 0
    slow_start_s: float = 10.0
    seed: int | None = None
    log_dir: Path | None = None
    mix: Mapping[Method, float] = field(default_factory=lambda: {"unary": 1.0})
    # What carries Ballast's calls: "embedded" or "haproxy" ([balancer] engine).
    engine: str = "embedded"
    # A third client group, proxyless (xds:///inventory), and the balancer's [xds] listener
    # on 127.0.0.1:xds_port for it. Off by default: benchmarks measure the first two.
    proxyless: bool = False
    xds_port: int = 0

    def __post_init__(self) -> None:
        if self.pods < 1 or self.clients_per_group < 0:
            raise ValueError("pods must be at least 1 and clients_per_group at least 0")
        if not self.rate_per_client > 0:
            raise ValueError("rate_per_client must be positive")


def workload_spec(options: SceneOptions) -> DeploymentSpec:
    """The demo workload as a local Deployment (knobs from its environment)."""
    argv = (sys.executable, "-m", "demo.workload", "--port", "{port}",
            "--metrics-port", "{metrics_port}", "--name", "{name}")  # fmt: skip
    return DeploymentSpec(
        name=SERVICE,
        argv=argv,
        replicas=options.pods,
        env=options.knobs,
        memory_limit_bytes=options.memory_limit_bytes,
        termination_grace_s=5.0,
        probe=ProbeSpec(interval_s=0.5, timeout_s=1.0),
    )


def balancer_config(options: SceneOptions, token: str) -> BalancerConfig:
    """One cluster over the deployment's pods, discovered from the platform.

    No `[control_plane]`: `python -m demo` starts this balancer before the dashboard,
    in the same event loop, so a fetch could only wait out its timeout; and its pods
    are new every run, so no drain or weight of an earlier run can name them. The
    dashboard's reconciler applies a saved policy within its first pass (1 s).
    """
    xds = {"xds": {"address": f"127.0.0.1:{options.xds_port}"}} if options.proxyless else {}
    return config_from_dict(
        {
            **xds,
            "balancer": {"id": "scene", "shutdown_grace_s": 2, "engine": options.engine},
            "listeners": [{"address": f"127.0.0.1:{options.balancer_port}"}],
            "admin": {"address": f"127.0.0.1:{options.admin_port}", "token": token},
            "clusters": [
                {
                    "name": SERVICE,
                    "policy": options.policy,
                    "discovery": {"kind": "platform", "service": SERVICE},
                    "slow_start": {"window_s": options.slow_start_s},
                }
            ],
        },
        environ={},
    )


def client_group(group: str, target: str, options: SceneOptions) -> list[ClientSpec]:
    rate = options.rate_per_client
    return [
        ClientSpec(name=f"{group}-{i}", target=target, rate_per_s=rate, mix=options.mix)
        for i in range(options.clients_per_group)
    ]


class Scene:
    """Pods, the L4 Service, a balancer and both client groups; `start()`, then `stop()`."""

    def __init__(self, options: SceneOptions, *, admin_token: str | None = None) -> None:
        self.options = options
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        rng = random.Random(options.seed)
        self.platform = LocalPlatform(
            [workload_spec(options)], rng=random.Random(rng.random()), log_dir=options.log_dir
        )
        self.l4 = L4Service(
            self.platform.watch_endpoints(SERVICE),
            rng=random.Random(rng.random()),
            port=options.l4_port,
        )
        self.balancer = Balancer(
            balancer_config(options, self.admin_token),
            rng=random.Random(rng.random()),
            discovery=discovery_from(self.platform),
        )
        self._rng = rng
        self.via_l4: LoadGenerator | None = None
        self.via_ballast: LoadGenerator | None = None
        self.proxyless: ProxylessClients | None = None
        self._workdir: Path | None = None  # the proxyless clients' bootstrap file

    async def start(self, *, ready_timeout_s: float = 60.0) -> None:
        """Starts everything and waits for every pod to be ready; stops it all on failure."""
        try:
            await self.platform.start()
            await self.platform.wait_ready(SERVICE, ready_timeout_s)
            await self.l4.start()
            await self.balancer.start()
            self.via_l4 = self._clients("l4", self.l4.address)
            self.via_ballast = self._clients("ballast", self.balancer.listen_addresses[0])
            await self.via_l4.start()
            await self.via_ballast.start()
            if self.options.proxyless:
                await self._start_proxyless()
        except BaseException:
            await self.stop()
            raise

    async def _start_proxyless(self) -> None:
        assert self.balancer.xds_address is not None
        self._workdir = Path(tempfile.mkdtemp(prefix="ballast-demo-"))
        bootstrap = write_bootstrap(self._workdir, self.balancer.xds_address)
        self.proxyless = ProxylessClients(
            SERVICE,
            clients=self.options.clients_per_group,
            rate_per_s=self.options.rate_per_client,
            mix=self.options.mix,
        )
        await self.proxyless.start(bootstrap)

    @property
    def bootstrap_path(self) -> Path | None:
        """The proxyless clients' bootstrap file while the scene runs; None without them."""
        return None if self._workdir is None else self._workdir / BOOTSTRAP_FILE

    def _clients(self, group: str, target: str) -> LoadGenerator:
        specs = client_group(group, target, self.options)
        return LoadGenerator(specs, rng=random.Random(self._rng.random()))

    def reset_load(self) -> None:
        """Starts a new counting window for both client groups."""
        for load in (self.via_l4, self.via_ballast):
            if load is not None:
                load.reset()

    async def stop(self) -> None:
        """Stops clients, then the balancer and the L4 Service, then the pods. Idempotent."""
        loads = [g for g in (self.via_l4, self.via_ballast) if g is not None]
        proxyless = [self.proxyless.stop()] if self.proxyless is not None else []
        await asyncio.gather(*(load.stop(grace_s=1.0) for load in loads), *proxyless)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        await self.balancer.stop(grace_s=1.0)
        await self.l4.stop()
        await self.platform.stop()
