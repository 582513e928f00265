"""How long each part of the balance benchmark runs, and the steady-load scenarios: pinning after
a rollout, weights under every policy, one slow pod.

Every scenario starts its own `Scene`: pods of the demo workload, the L4 Service emulator and a
Ballast balancer in front of the same pods, and both client groups calling at once, so "via L4"
and "via Ballast" are measured side by side over the same windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from balance_estimates import runs_of, use_estimate
from balance_measure import (
    binomial_sd,
    counts_over,
    expected_shares,
    max_over_mean,
    max_share_error,
    rounded,
    shares,
)
from balance_scene import (
    EwmaSampler,
    cluster_of,
    errors,
    haproxy_processes,
    loads,
    running_pods,
    running_scene,
    say,
    set_latency,
    upstream_load,
    upstream_tally,
)

from balancer.engines.haproxy.config import BALANCE
from balancer.picker import POLICIES
from demo.loadgen import LoadStats
from demo.scene import SERVICE, SceneOptions


@dataclass(frozen=True)
class Timings:
    """Seconds (and stream shapes) of every wait and window; presets below."""

    warmup_s: float  # after the scene starts, before anything is measured
    settle_s: float  # after a policy change, before its window
    pinning_window_s: float
    weights_window_s: float  # per policy
    slow_window_s: float  # per policy
    drain_items: int  # items per drain stream...
    drain_interval_ms: int  # ...this far apart
    drained_window_s: float  # kept drained, Ballast clients still calling
    restart_tail_s: float  # after the new pod is READY
    noise_window_s: float = 40.0  # per policy, spikes running (bench/balance_noise.py)


FULL = Timings(
    warmup_s=2.0, settle_s=2.0, pinning_window_s=30.0, weights_window_s=20.0,
    slow_window_s=20.0, drain_items=20, drain_interval_ms=250, drained_window_s=5.0,
    restart_tail_s=3.0, noise_window_s=40.0,
)  # fmt: skip
# Within 80 s on a 2-core machine (about 65 s measured).
QUICK = Timings(
    warmup_s=0.5, settle_s=0.5, pinning_window_s=14.0, weights_window_s=4.5,
    slow_window_s=3.5, drain_items=10, drain_interval_ms=200, drained_window_s=1.0,
    restart_tail_s=1.0, noise_window_s=12.0,
)  # fmt: skip
# Only checks that everything runs (the test): the numbers are too noisy to judge.
SMOKE = Timings(
    warmup_s=0.2, settle_s=0.2, pinning_window_s=1.0, weights_window_s=0.8,
    slow_window_s=0.8, drain_items=4, drain_interval_ms=100, drained_window_s=0.3,
    restart_tail_s=0.3, noise_window_s=1.5,
)  # fmt: skip

# Weights 1:2:5 as Ballast weights (the default weight, 100, is "1").
WEIGHT_RATIO = (1, 2, 5)
WEIGHT_UNIT = 100
# Calls/s per client in the weights scenario: 8 clients × 50 = 400/s per group, so a few seconds
# give thousands of calls per policy (sampling error of the 5/8 share ≈ 0.48 / sqrt(n)).
WEIGHTS_RATE = 50.0
BASE_LATENCY_MS = 5.0
SLOW_LATENCY_MS = 50.0
SLOW_POLICIES = ("round_robin", "least_request", "peak_ewma")


SLOW_GOALS = {
    "embedded": "peak_ewma p99_ms <= 0.3 × round_robin p99_ms, and slow_share <= 1/8",
    # HAProxy has no latency-aware policy: least_request (random(2), on calls in flight)
    # must give the slow pod less than its equal share; peak_ewma runs as random(2) too.
    "haproxy": "least_request (random(2)) slow_share < 1/4 (its equal share); p99 and"
    " the 1/8 bound reported, not judged: HAProxy has no latency-aware policy",
}


def load_of(options: SceneOptions) -> dict[str, Any]:
    """How the scene was loaded, for the report."""
    return {
        "engine": options.engine,
        # What each policy runs as under HAProxy (`balance` algorithm).
        **({"haproxy_balance": dict(BALANCE)} if options.engine == "haproxy" else {}),
        "pods": options.pods,
        "clients_per_group": options.clients_per_group,
        "rate_per_client": options.rate_per_client,
        "offered_rate_per_group": options.clients_per_group * options.rate_per_client,
        "knobs": dict(options.knobs),
    }


# --- pinning --------------------------------------------------------------------------------


async def pinning(timings: Timings, seed: int | None, engine: str = "embedded") -> dict[str, Any]:
    """Clients connect, the deployment is rolled out, then a window measures max ÷ mean."""
    options = SceneOptions(
        seed=seed, pods=4, clients_per_group=8, rate_per_client=20.0, engine=engine
    )
    async with running_scene(options) as scene:
        via_l4, via_ballast = loads(scene)
        await asyncio.sleep(timings.warmup_s)
        scene.reset_load()
        say("pinning: rollout restart, clients connected")
        started_s = time.monotonic()
        await scene.platform.rollout_restart(SERVICE)
        rollout_s = time.monotonic() - started_s
        rollout = {"l4": errors(via_l4.stats()), "ballast": errors(via_ballast.stats())}
        scene.reset_load()
        say(f"pinning: rollout took {rollout_s:.1f} s; measuring {timings.pinning_window_s:g} s")
        await asyncio.sleep(timings.pinning_window_s)
        l4, ballast = via_l4.stats(), via_ballast.stats()
        pods = list(await running_pods(scene))
        connections = scene.l4.snapshot().open_by_backend()
    return {
        "goal": "balancer_max_mean <= 1.10",
        "l4_max_mean": rounded(max_over_mean(l4.pods, pods)),
        "balancer_max_mean": rounded(max_over_mean(ballast.pods, pods)),
        "policy": options.policy,
        "rollout_s": round(rollout_s, 2),
        "window_s": round(ballast.elapsed_s, 2),
        "load": load_of(options),
        "l4": _spread(l4, pods, rollout["l4"]) | {"connections": per_pod(connections, pods)},
        "balancer": _spread(ballast, pods, rollout["ballast"]),
    }


def per_pod(counts: Mapping[str, int], pods: Sequence[str]) -> dict[str, int]:
    return dict(zip(pods, counts_over(counts, pods), strict=True))


def _spread(
    stats: LoadStats, pods: Sequence[str], rollout_errors: dict[str, int]
) -> dict[str, Any]:
    return {
        "calls_per_pod": per_pod(stats.pods, pods),
        "calls": stats.ok,
        "errors": errors(stats),
        "errors_during_rollout": rollout_errors,
    }


# --- weights --------------------------------------------------------------------------------


async def weights(timings: Timings, seed: int | None, engine: str = "embedded") -> dict[str, Any]:
    """Weights 1:2:5 on three equal pods; per policy, the Ballast clients' shares per pod."""
    options = SceneOptions(
        seed=seed, pods=3, clients_per_group=8, rate_per_client=WEIGHTS_RATE, engine=engine
    )
    policies: dict[str, Any] = {}
    for run in policy_runs(POLICIES, engine):
        async with running_scene(scene_options(options, run)) as scene:
            via_l4, via_ballast = loads(scene)
            cluster = cluster_of(scene)
            pods = list(await running_pods(scene))
            wanted = {pod: r * WEIGHT_UNIT for pod, r in zip(pods, WEIGHT_RATIO, strict=True)}
            for pod, weight in wanted.items():
                cluster.set_weight(pod, weight)
            expected = expected_shares(wanted)
            await asyncio.sleep(timings.warmup_s)
            via_l4.reset()
            for policy in run:
                cluster.set_policy(policy)
                await asyncio.sleep(timings.settle_s)
                via_ballast.reset()
                before = upstream_tally(cluster)
                async with EwmaSampler(cluster, scene.balancer.clock) as ewma:
                    await asyncio.sleep(timings.weights_window_s)
                stats = via_ballast.stats()
                load = upstream_load(before, upstream_tally(cluster), pods, stats.elapsed_s)
                policies[policy] = (
                    _shares(stats, pods, expected) | load | ewma.summary(pods)
                ) | haproxy_processes(scene)
                say(f"weights: {policy} max share error {policies[policy]['max_share_error']}")
            l4 = _shares(via_l4.stats(), pods, expected)
    return {
        "goal": "max_share_error <= 0.03 (Ballast, every policy)",
        "max_share_error": max(p["max_share_error"] for p in policies.values()),
        **{policy: report["max_share_error"] for policy, report in policies.items()},
        "pods": pods,
        "weights": list(wanted.values()),
        "expected_shares": [rounded(expected[pod]) for pod in pods],
        "window_s_per_policy": timings.weights_window_s,
        "load": load_of(options) | policy_switching(engine),
        "policies": policies,
        "l4": l4 | {"note": "no weights at L4: its shares under the same clients, vs 1:2:5"},
    }


def policy_runs(policies: Sequence[str], engine: str) -> list[tuple[str, ...]]:
    """Which policies each scene runs: all in one scene, switched live, on the embedded
    engine; one scene per policy under HAProxy, where a live switch starts a new HAProxy
    and the engine may leave a stray one running beside it (bench/README.md)."""
    if engine == "haproxy":
        return [(policy,) for policy in policies]
    return [tuple(policies)]


def scene_options(options: SceneOptions, run: Sequence[str]) -> SceneOptions:
    """A scene of one policy under HAProxy starts with it (no switch at all); the embedded
    engine's scene starts with the scene's default and switches."""
    return replace(options, policy=run[0]) if options.engine == "haproxy" else options


def policy_switching(engine: str) -> dict[str, str]:
    how = "a fresh scene per policy" if engine == "haproxy" else "live, in one scene"
    return {"policy_switch": how}


def _shares(stats: LoadStats, pods: Sequence[str], expected: dict[str, float]) -> dict[str, Any]:
    observed = shares(stats.pods, pods)
    return {
        "max_share_error": rounded(max_share_error(observed, expected)),
        "shares": [rounded(observed[pod]) for pod in pods],
        "n": stats.ok,
        # The sampling error of the largest share: errors well above it are the picker's.
        "sampling_sd": rounded(binomial_sd(max(expected.values()), stats.ok)),
        "errors": errors(stats),
    }


# --- slow pod -------------------------------------------------------------------------------


async def slow_pod(timings: Timings, seed: int | None, engine: str = "embedded") -> dict[str, Any]:
    """One of four pods 10× slower (set at run time through its Knobs service); per policy,
    the Ballast clients' p99 and the slow pod's share of their calls."""
    knobs = {"BALLAST_KNOB_LATENCY_MS": f"{BASE_LATENCY_MS:g}"}
    options = SceneOptions(
        seed=seed, pods=4, clients_per_group=8, rate_per_client=25.0, knobs=knobs, engine=engine
    )
    report: dict[str, Any] = {}
    for run in policy_runs(SLOW_POLICIES, engine):
        async with running_scene(scene_options(options, run)) as scene:
            via_l4, via_ballast = loads(scene)
            cluster = cluster_of(scene)
            pods = await running_pods(scene)
            slow = next(iter(pods))
            await set_latency(pods[slow], SLOW_LATENCY_MS)
            await asyncio.sleep(timings.warmup_s)
            # Read once the clients have called: channels connect on their first call.
            connections = scene.l4.snapshot().open_by_backend().get(slow, 0)
            via_l4.reset()
            for policy in run:
                cluster.set_policy(policy)
                for name, settings in runs_of(
                    policy, full=timings == FULL and engine == "embedded"
                ):
                    if settings is not None:  # another estimate, compared (balance_estimates)
                        use_estimate(cluster, settings, scene.balancer.clock())
                    await asyncio.sleep(timings.settle_s)
                    via_ballast.reset()
                    await asyncio.sleep(timings.slow_window_s)
                    report[name] = _latency(via_ballast.stats(), slow) | haproxy_processes(scene)
                    say(f"slow_pod: {name} {report[name]}")
            l4 = _latency(via_l4.stats(), slow)
    return {
        "goal": SLOW_GOALS[engine],
        **report,
        "latency_ms": {"others": BASE_LATENCY_MS, "slow": SLOW_LATENCY_MS},
        "window_s_per_policy": timings.slow_window_s,
        "load": load_of(options) | policy_switching(engine),
        "l4": l4 | {"slow_pod_connections": connections, "clients": options.clients_per_group},
    }


def _latency(stats: LoadStats, slow: str) -> dict[str, Any]:
    latency = stats.latency.summary()
    elapsed_s = stats.elapsed_s or 1.0
    mean_s = (latency["mean_ms"] or 0.0) / 1000
    return {
        "p99_ms": rounded(latency["p99_ms"], 2),
        "slow_share": rounded(stats.pods.get(slow, 0) / stats.ok if stats.ok else None),
        "p50_ms": rounded(latency["p50_ms"], 2),
        "mean_ms": rounded(latency["mean_ms"], 2),
        "n": stats.ok,
        "rate_per_s": round(stats.completed / elapsed_s, 1),
        # Little's law: calls in flight on average, the signal least_request balances on.
        "mean_in_flight": rounded(mean_s * stats.completed / elapsed_s, 2),
        "errors": errors(stats),
    }


def timings_dict(timings: Timings) -> dict[str, Any]:
    return asdict(timings)
