"""A scene of leaky demo-workload pods under a memory limit, for the OOM guard's tests and
its benchmark: pods as processes on the local platform (which OOM-kills over the limit,
as the kubelet would), Ballast, clients through it and through the L4 Service."""

from __future__ import annotations

from demo.scene import SceneOptions
from platforms.local.events import PodEvent

MiB = 1024 * 1024
# A demo pod holds about 50 MiB resident once it serves: this leaves ~60 MiB to leak.
LIMIT_BYTES = 112 * MiB
LEAK_BYTES = 40 * 1024  # per call: a pod at ~30 calls/s grows ~1.2 MiB/s


def leaky_scene(
    *, pods: int = 2, leak_bytes: int = LEAK_BYTES, limit_bytes: int = LIMIT_BYTES, seed: int = 3
) -> SceneOptions:
    """Every pod leaks `leak_bytes` per call and is killed over `limit_bytes`."""
    knobs = {"BALLAST_KNOB_LATENCY_MS": "2", "BALLAST_KNOB_LEAK_BYTES": str(leak_bytes)}
    return SceneOptions(
        pods=pods, clients_per_group=2, rate_per_client=20, seed=seed,
        memory_limit_bytes=limit_bytes, knobs=knobs,
    )  # fmt: skip


def oom_kills(events: tuple[PodEvent, ...]) -> list[PodEvent]:
    """The platform's OOM kills among its events."""
    return [e for e in events if e.kind == "Killing" and e.detail.startswith("OOMKilled")]
