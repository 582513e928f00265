"""Scenarios where a pod leaves: drain it with streams in flight, restart it through the platform.

How "new requests after the drain" is counted, so that none can be missed: every call the
balancer sends to an endpoint is in its in-flight set until it ends, and is then recorded in the
endpoint's stats whatever its status (`balance_scene.picked`). Read in the same event-loop step
as the drain call, that count is exactly what was sent before; any later increase is a call sent
after the drain. The pods' own view cross-checks it: every answer names the pod that served it,
and once the endpoint is DRAINED (nothing of the balancer's in flight there) the Ballast clients
must not get a single answer from that pod.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from balance_scenarios import Timings, load_of
from balance_scene import (
    WatchStreams,
    cluster_of,
    errors,
    haproxy_holds_drain,
    haproxy_sessions_total,
    loads,
    picked,
    running_pods,
    running_scene,
    say,
    wait_until,
)

from balancer.cluster import Cluster
from balancer.endpoint import Endpoint, State
from demo.scene import SERVICE, Scene, SceneOptions

DRAIN_STREAMS = 20
OPEN_TIMEOUT_S = 10.0
# Answers the pod sent just before the endpoint turned DRAINED may still be on their way.
ANSWERS_IN_TRANSIT_S = 0.1
RESTART_DRAIN_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0


# --- drain ----------------------------------------------------------------------------------


async def drain(timings: Timings, seed: int | None, engine: str = "embedded") -> dict[str, Any]:
    """20 server streams through Ballast; the pod serving most of them is drained while the
    Ballast clients keep calling."""
    options = SceneOptions(
        seed=seed, pods=4, clients_per_group=8, rate_per_client=20.0, engine=engine
    )
    async with running_scene(options) as scene:
        await asyncio.sleep(timings.warmup_s)
        target = scene.balancer.listen_addresses[0]
        streams = WatchStreams(
            target, DRAIN_STREAMS, timings.drain_items, timings.drain_interval_ms
        )
        try:
            await streams.open(OPEN_TIMEOUT_S)
            report = await _drain_busiest(scene, streams, timings)
            await streams.wait(timeout_s=_stream_s(timings) + 10)
        finally:
            await streams.close()
    return (
        report
        | _stream_fates(streams, report["pod"], timings.drain_items)
        | {
            "goal": "new_requests_after_drain == 0 and failed_in_flight == 0",
            "streams": DRAIN_STREAMS,
            "stream_items": timings.drain_items,
            "stream_interval_ms": timings.drain_interval_ms,
            "load": load_of(options),
        }
    )


async def _drain_busiest(scene: Scene, streams: WatchStreams, timings: Timings) -> dict[str, Any]:
    via_l4, via_ballast = loads(scene)
    cluster = cluster_of(scene)
    pods = [r.pod for r in streams.results if r.pod]
    pod = max(sorted(set(pods)), key=pods.count)
    ep = cluster.get(pod)
    # HAProxy picks servers itself: its own count of calls sent to the pod, read just before
    # the drain (calls sent before the drain reaches HAProxy count as sent after it).
    sent_before = await haproxy_sessions_total(scene, pod)
    # One event-loop step from here to the drain: no call can be sent in between.
    before, in_flight = picked(ep), ep.in_flight
    scene.reset_load()
    started_s = time.monotonic()
    cluster.drain(pod)
    say(f"drain: {pod} drained with {in_flight} calls in flight ({pods.count(pod)} our streams)")
    reached = await _drain_reaching_haproxy(scene, pod, started_s, sent_before)
    drained = await wait_until(lambda: ep.state is State.DRAINED, _stream_s(timings) + 10)
    drained_after_s = time.monotonic() - started_s if drained else None
    await asyncio.sleep(ANSWERS_IN_TRANSIT_S)
    while_draining = via_ballast.stats().pods.get(pod, 0)
    via_ballast.reset()
    await asyncio.sleep(timings.drained_window_s)
    sent_after = await haproxy_sessions_total(scene, pod)
    if sent_before is not None and sent_after is not None:
        new_requests, counted_by = sent_after - sent_before, "haproxy show stat stot"
    else:
        new_requests, counted_by = picked(ep) - before, "balancer picks"
    return {
        "new_requests_after_drain": new_requests,
        "new_requests_counted_by": counted_by,
        "drained_after_s": None if drained_after_s is None else round(drained_after_s, 3),
        "pod": pod,
        "in_flight_at_drain": in_flight,
        "state": ep.state.value,
        "pod_answers_while_draining": while_draining,
        "pod_answers_after_drained": via_ballast.stats().pods.get(pod, 0),
        "drained_window_s": timings.drained_window_s,
        "ballast_errors": errors(via_ballast.stats()),
        "l4": {
            "pod_answers_after_drain": via_l4.stats().pods.get(pod, 0),
            "note": "no drain at L4: its clients pinned to the pod keep being served by it",
        },
    } | reached


async def _drain_reaching_haproxy(
    scene: Scene, pod: str, started_s: float, sent_before: int | None
) -> dict[str, Any]:
    """Under HAProxy, the drain is a runtime-API command sent after `cluster.drain`: how long
    it took to be accepted, and how many of the calls counted after the drain HAProxy sent
    before it (HAProxy sends no new call to a draining server after that)."""
    if sent_before is None:
        return {}
    await wait_until(lambda: haproxy_holds_drain(scene, pod), 10.0)
    reached_s = time.monotonic() - started_s
    sent_by_then = await haproxy_sessions_total(scene, pod)
    gap = None if sent_by_then is None else sent_by_then - sent_before
    return {"drain_reached_haproxy_s": round(reached_s, 3), "sent_before_haproxy_held_drain": gap}


def _stream_s(timings: Timings) -> float:
    """How long a drain stream lasts: its items, `drain_interval_ms` apart."""
    return (timings.drain_items - 1) * timings.drain_interval_ms / 1000


def _stream_fates(streams: WatchStreams, pod: str, items: int) -> dict[str, Any]:
    """Streams that did not end OK (None: still running at the end) and incomplete ones."""
    on_pod = streams.on_pod(pod)
    codes: dict[str, int] = {}
    for r in streams.results:
        codes[str(r.code)] = codes.get(str(r.code), 0) + 1
    return {
        "failed_in_flight": sum(1 for r in streams.results if r.code != "OK"),
        "streams_on_pod": len(on_pod),
        "incomplete_on_pod": sum(1 for r in on_pod if r.items < items),
        "stream_codes": codes,
    }


# --- restart --------------------------------------------------------------------------------


async def restart(timings: Timings, seed: int | None, engine: str = "embedded") -> dict[str, Any]:
    """Drain a pod, restart it through the platform, wait for its replacement to be READY."""
    options = SceneOptions(
        seed=seed, pods=4, clients_per_group=8, rate_per_client=20.0, engine=engine
    )
    async with running_scene(options) as scene:
        via_l4, via_ballast = loads(scene)
        await asyncio.sleep(timings.warmup_s)
        before = await running_pods(scene)
        connections = scene.l4.snapshot().open_by_backend()
        # The pod most L4 clients are pinned to: the L4 side's worst case, Ballast's any case.
        pod = max(before, key=lambda name: connections.get(name, 0))
        scene.reset_load()
        steps = await _restart(scene, cluster_of(scene), pod, set(before))
        await asyncio.sleep(timings.restart_tail_s)
        l4, ballast = via_l4.stats(), via_ballast.stats()
        after = list(await running_pods(scene))
        connections_after = scene.l4.snapshot().open_by_backend()
    ballast_errors, l4_errors = errors(ballast), errors(l4)
    new_pod = steps["new_pod"]
    return {
        "goal": "client_errors == 0 (Ballast clients, drain first)",
        "client_errors": sum(ballast_errors.values()),
        **steps,
        "pod": pod,
        "pod_l4_connections": connections.get(pod, 0),
        "window_s": round(ballast.elapsed_s, 2),
        "ballast": {
            "calls": ballast.ok,
            "errors": ballast_errors,
            "calls_to_new_pod": ballast.pods.get(new_pod, 0) if new_pod else None,
        },
        "l4": {
            "client_errors": sum(l4_errors.values()),
            "calls": l4.ok,
            "errors": l4_errors,
            # Where the restarted pod's L4 clients went: to the pods that were up.
            "connections_after": {name: connections_after.get(name, 0) for name in after},
            "note": "no drain at L4: the pod's clients lose their connection (GOAWAY when the"
            " pod shuts down gracefully) and reconnect to whichever pod is up",
        },
        "load": load_of(options),
    }


async def _restart(scene: Scene, cluster: Cluster, pod: str, before: set[str]) -> dict[str, Any]:
    """drain → DRAINED → restart_pod → new pod ready → READY in the balancer; times each."""
    started_s = time.monotonic()
    ep = cluster.drain(pod, timeout_s=RESTART_DRAIN_TIMEOUT_S)
    drained = await wait_until(lambda: ep.state is State.DRAINED, RESTART_DRAIN_TIMEOUT_S + 1)
    drained_s = time.monotonic() - started_s
    say(f"restart: {pod} {'drained' if drained else 'NOT drained'} in {drained_s:.2f} s")
    await scene.platform.restart_pod(pod)
    replaced_s = time.monotonic() - started_s
    await scene.platform.wait_ready(SERVICE, READY_TIMEOUT_S)
    new_pod = next(iter(set(await running_pods(scene)) - before), None)
    ready = new_pod is not None and await wait_until(
        lambda: _is_ready(cluster, new_pod), READY_TIMEOUT_S
    )
    restart_s = time.monotonic() - started_s if ready else None
    state = "READY" if ready else "not READY"
    say(f"restart: {new_pod} {state} {time.monotonic() - started_s:.2f} s after the drain")
    return {
        "restart_s": None if restart_s is None else round(restart_s, 3),
        "drained_s": round(drained_s, 3) if drained else None,
        "old_pod_gone_new_started_s": round(replaced_s, 3),
        "new_pod": new_pod,
    }


def _is_ready(cluster: Cluster, endpoint_id: str) -> bool:
    ep: Endpoint | None = cluster.endpoints.get(endpoint_id)
    return ep is not None and ep.state is State.READY
