"""The compact per-service frame the collector broadcasts to browsers.

One frame per service per interval (1 s by default), sent to the service's
Channels group; its `type` names the consumer's handler (`service_frame`).
Floats are rounded to what a chart can show, and a missing figure is null:
a pod the balancer does not route to (reached only through the L4 Service)
has no rates, and a pod not yet measured has no CPU or memory.

Three views of traffic sit side by side. `rps`, `err_s` and `imbalance` are
what the balancer carried (its snapshots). `pod_rps`, `pod_err_s` and
`pod_imbalance` are what the pods say they handled (their /metrics, see
`scrape`): every client's calls, Ballast's own included. `bypass_rps` and
`bypass_imbalance` are the difference: the calls that reached a pod without
going through Ballast (in Kubernetes, through the Service's kube-proxy, which
picks a pod per TCP connection: the L4 path). `px_rps` is the third
path: calls proxyless gRPC clients sent straight to a pod, balanced by
Ballast's xDS server (their load reports say how many); they are Ballast's
too, so they are not counted as bypass. Telling the two paths apart is
the point of the page: mixed together, Ballast's even share hides part of the
L4 skew. `pod_imbalance` and `bypass_imbalance` are scored on raw requests per
second of the Running pods that report, not normalised by weight as
`imbalance` is: traffic that bypasses Ballast ignores its weights, and a pod
pinned by long-lived L4 connections should show as busy whatever weight the
balancer gives it.

The latency distribution per pod travels as each pod's calls per latency bucket
over the interval (`lat`: differences of the snapshots' cumulative histograms, up
to the last bucket that has any) with the buckets' upper bounds once per frame
(`lat_bounds_ms`); the page adds up the last minute of frames. A frame holds at
most one list of buckets per pod (24 buckets), and the history of frames is a ring
buffer: nothing grows with time.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Literal, NotRequired, TypedDict

from balancer.stats import quantile_ms
from dashboard.collector.imbalance import Imbalance, LoadWindow, imbalance
from dashboard.collector.pinning import PinningFrame
from dashboard.collector.rates import EndpointRates
from dashboard.collector.scrape import PodRates
from platforms.base import PodFacts

FRAME_TYPE: Literal["service.frame"] = "service.frame"
READY = "READY"
RUNNING = "Running"
_NO_POD_RATES: Mapping[str, PodRates] = MappingProxyType({})


class PodFrame(TypedDict):
    pod: str  # the endpoint id: the pod name when known, else host:port
    color: int  # its color's index in the pages' palette, the same for its whole life
    # From the balancer (null when it does not route to the pod):
    state: str | None  # READY, DRAINING, … as the most alarmed replica sees it
    weight: int | None
    eff_weight: float | None
    rps: float | None
    err_s: float | None
    in_b_s: int | None  # request bytes per second, from clients
    out_b_s: int | None  # response bytes per second, to clients
    p50: float | None  # ms, over the interval; null when it had no requests
    p90: float | None
    p99: float | None
    in_flight: int | None
    # From the platform (null when it does not know the pod, or has not measured it):
    phase: str | None
    ready: bool | None
    cpu_m: int | None  # millicores
    mem: int | None  # bytes: resident or working set, what the OOM killer reads
    mem_limit: int | None
    restarts: int | None
    last_reason: str | None  # last termination: OOMKilled, Error, Completed
    started: int | None  # unix ms the pod (its current process) started
    # From the pod's own /metrics (null until two scrapes succeeded, or if it has none):
    pod_rps: float | None  # calls it handled per second, from every client
    pod_err_s: float | None  # of which not OK
    # Calls/s proxyless clients sent straight to the pod, from their load reports; only
    # when above 0, so a service without proxyless clients pays nothing for it.
    px_rps: NotRequired[float]
    # Its failures the proxy retried on another pod, since the replicas started (added up);
    # only when above 0.
    retries: NotRequired[int]
    # Calls via Ballast per latency bucket over the interval, bucket i counting up to
    # the frame's lat_bounds_ms[i] (the last: above them all), cut after the last bucket
    # that has any; only when the pod had calls.
    lat: NotRequired[list[int]]
    oom_s: NotRequired[int]  # predicted seconds to OOM (collector/memory.py); only when growing
    # What bypassed Ballast is not sent per pod (the frame stays small): it is
    # max(0, pod_rps - (rps or 0)), as `bypass_load` computes it.


class TotalsFrame(TypedDict):
    pods: int
    ready: int  # endpoints READY in the balancer
    rps: float
    err_s: float
    err_ratio: float | None  # errors / requests; null without requests
    p50: float | None  # from the service's merged histogram, not an average of pods
    p99: float | None
    in_flight: int
    in_b_s: int
    out_b_s: int
    pod_rps: float | None  # the pods' own figures added up; null when no pod reports
    bypass_rps: float | None  # of which neither the proxy nor proxyless clients sent
    px_rps: float  # calls/s proxyless clients sent straight to the pods (their load reports)
    px_err_s: float  # of which failed
    err_by_code: dict[str, float]  # errors/s via Ballast by gRPC status code (not OK)
    rps_by_method: dict[str, float]  # calls/s the pods report by "service/method", all clients
    retries_s: NotRequired[float]  # the proxy's retries per second; only when there were some


class ImbalanceFrame(TypedDict):
    max_mean: float | None  # busiest pod's load ÷ mean load
    cv: float | None  # population stdev ÷ mean
    busiest: str | None
    flagged: bool
    # Ballast's own share only (`imbalance`): past the limits, but leaning away from the
    # pods that bypassing clients keep busy, as a load-aware policy should (`lean_away`).
    leans_away: NotRequired[bool]


class XdsLagFrame(TypedDict):
    node: str  # the client's node id (its peer when it sent none)
    replica: str  # the balancer replica whose xDS server it follows
    version: str  # the endpoints (EDS) version it ACKed last; "" before its first ACK
    nack: NotRequired[str]  # its refusal not yet followed by an ACK: "EDS 7: <its error>"


class XdsFrame(TypedDict):
    clients: int  # proxyless clients subscribed to the service's endpoints, over the replicas
    in_sync: int  # of which ACKed the endpoints (and cluster) being served
    fallback: bool  # they use weighted round robin: they cannot follow the policy
    # Only when every replica names its clients (see collector/xds.py):
    versions: NotRequired[dict[str, str]]  # replica id → the EDS version it serves
    lagging: NotRequired[list[XdsLagFrame]]  # a few clients not on it, NACKs first
    label: NotRequired[str]  # "xDS clients: 3, all on version 12", as the badges say it


class ReplicaFrame(TypedDict):
    id: str  # the balancer replica's id
    up: bool  # its snapshot stream is connected
    converged: NotRequired[bool | None]  # holds the operator's desired state; null: not judged


class ServiceFrame(TypedDict):
    type: Literal["service.frame"]
    service: str
    t: int  # unix ms of the interval's end
    pods: list[PodFrame]
    totals: TotalsFrame
    imbalance: ImbalanceFrame  # balancer-carried rps, weight-normalised, READY endpoints
    pod_imbalance: ImbalanceFrame  # pod-reported rps, not normalised, Running pods
    bypass_imbalance: ImbalanceFrame  # rps that bypassed Ballast, same pods as pod_imbalance
    replicas: list[ReplicaFrame]
    policy: str | None  # the balancers' policy for the service; null before any snapshot
    usage_note: str | None  # why CPU and memory are missing (the platform says); null if not
    xds: NotRequired[XdsFrame]  # the service's proxyless clients; only when there are some
    # The upper bounds (ms) of the pods' `lat` buckets; only when a pod has some.
    lat_bounds_ms: NotRequired[list[float]]
    # Clients that bypass Ballast, pinned to pods (collector/pinning/): per pod the
    # bypass share of its calls and its client connections, and the finding in words;
    # only when a pod reports its own count or serves channelz.
    pinning: NotRequired[PinningFrame]


def build_frame(
    service: str,
    t_unix_ms: int,
    endpoints: Iterable[EndpointRates],
    pods: Iterable[PodFacts],
    replicas: Sequence[ReplicaFrame],
    *,
    pod_rates: Mapping[str, PodRates] = _NO_POD_RATES,
    windows: tuple[LoadWindow, LoadWindow, LoadWindow] | None = None,
    policy: str | None = None,
    colors: ColorBook | None = None,
    usage_note: str | None = None,
    xds: XdsFrame | None = None,
    retries_s: float | None = None,
) -> ServiceFrame:
    """The frame of one service from its merged endpoint rates and its pods' facts.

    Endpoints and pods are joined on the endpoint id (the pod name; failing
    that, the endpoint's pod name or the pod's address). Every endpoint and
    every pod appears once, ordered by name. `pod_rates` are the pods' own
    figures by pod name (`PodScraper.rates`). With `windows` (the balancer's
    and the pods' view, kept per service across frames) both imbalance scores are
    taken over the windows' mean loads instead of this interval's alone, and the
    busiest pod named keeps its name until another is clearly busier. `retries_s`: the
    cluster's retries/s from its own counters (else the endpoints' sum, which loses
    the retries of an endpoint removed meanwhile).
    """
    rates = list(endpoints)
    facts = _join(rates, list(pods))
    reported = {name: pod_rates[p.name] for name, p in facts.items() if p.name in pod_rates}
    by_id = {r.endpoint_id: r for r in rates}
    names = sorted(by_id.keys() | facts.keys())
    color = (colors or ColorBook()).assign(names)
    bypass = bypass_load(by_id, reported)
    bounds = _bounds(rates)
    via, _ = _score(weighted_load(rates), windows, 0)
    bypass_score, bypass_means = _score(_running(bypass, facts), windows, 2)
    frame: ServiceFrame = {
        "type": FRAME_TYPE,
        "service": service,
        "t": t_unix_ms,
        "pods": [
            _with_latency(
                _pod(name, color[name], by_id.get(name), facts.get(name), reported.get(name)),
                by_id.get(name),
                bounds,
            )
            for name in names
        ],
        "totals": _totals(rates, len(names), reported.values(), bypass),
        "imbalance": lean_away(via, policy, bypass_means),
        "pod_imbalance": _score(running_load(facts, reported), windows, 1)[0],
        "bypass_imbalance": bypass_score,
        "replicas": list(replicas),
        "policy": policy,
        "usage_note": usage_note,
    }
    if xds is not None and xds["clients"] > 0:
        frame["xds"] = xds
    if retries_s is not None:
        set_retries(frame["totals"], retries_s)
    if any("lat" in pod for pod in frame["pods"]):
        frame["lat_bounds_ms"] = list(bounds)
    return frame


def _bounds(rates: Iterable[EndpointRates]) -> tuple[float, ...]:
    """The latency bounds the frame's histograms count against: the first endpoint's
    that has any (replicas of one release share them)."""
    return next((r.latency_bounds_ms for r in rates if r.latency_bounds_ms), ())


def latency_buckets(r: EndpointRates | None, bounds: Sequence[float]) -> list[int] | None:
    """The interval's calls per latency bucket of `bounds` (then the bucket above them),
    up to the last bucket that has any; None when it had no call, or counts against
    other bounds."""
    if r is None or not bounds or tuple(r.latency_bounds_ms) != tuple(bounds):
        return None
    counts = list(r.latency_counts)
    while counts and counts[-1] <= 0:
        counts.pop()
    return counts or None


def _with_latency(pod: PodFrame, r: EndpointRates | None, bounds: Sequence[float]) -> PodFrame:
    counts = latency_buckets(r, bounds)
    if counts is not None:
        pod["lat"] = counts
    return pod


# The pages' palette has this many colors (dashboard/app/overview.py's PALETTE).
PALETTE_SIZE = 12


class ColorBook:
    """A color per pod for its whole life, the same in every view (overview bars,
    charts, table), and no two pods present at once sharing one while there are enough.

    `assign` keeps each present pod's color, forgets the pods gone, and gives a new pod
    the color left unused longest (never used first): a replacement after a rollout
    does not take the color of the pod it replaced, whose line is still on the charts.
    """

    def __init__(self, size: int = PALETTE_SIZE) -> None:
        self._held: dict[str, int] = {}
        self._free: list[int] = list(range(size))  # the longest unused first
        self._size = size

    def assign(self, names: Sequence[str]) -> dict[str, int]:
        present = set(names)
        for gone in [n for n in self._held if n not in present]:
            self._free.append(self._held.pop(gone))
        for name in names:
            if name not in self._held:
                # More pods than colors: they share, in turn.
                self._held[name] = self._free.pop(0) if self._free else len(self._held) % self._size
        return {name: self._held[name] for name in names}


def _join(rates: Sequence[EndpointRates], pods: Sequence[PodFacts]) -> dict[str, PodFacts]:
    """Pod facts keyed by the endpoint id they belong to (their own name if none)."""
    by_name = {p.name: p for p in pods}
    by_address = {p.address: p for p in pods if p.address}
    joined: dict[str, PodFacts] = {}
    for r in rates:
        pod = by_name.get(r.endpoint_id) or by_name.get(r.pod_name or "")
        pod = pod or by_address.get(r.endpoint_id)
        if pod is not None:
            joined[r.endpoint_id] = pod
    matched = {p.name for p in joined.values()}
    joined.update({p.name: p for p in pods if p.name not in matched})
    return joined


def _pod(
    name: str, color: int, r: EndpointRates | None, p: PodFacts | None, own: PodRates | None
) -> PodFrame:
    pod: PodFrame = {
        "pod": name,
        "color": color,
        "state": r.state if r else None,
        "weight": r.weight if r else None,
        "eff_weight": _round(r.effective_weight, 2) if r else None,
        "rps": _round(r.rps, 2) if r else None,
        "err_s": _round(r.errors_per_s, 2) if r else None,
        "in_b_s": round(r.bytes_in_per_s) if r else None,
        "out_b_s": round(r.bytes_out_per_s) if r else None,
        "p50": _round(r.p50_ms, 2) if r else None,
        "p90": _round(r.p90_ms, 2) if r else None,
        "p99": _round(r.p99_ms, 2) if r else None,
        "in_flight": r.in_flight if r else None,
        "phase": p.phase if p else None,
        "ready": p.ready if p else None,
        "cpu_m": None if p is None or p.cpu_millicores is None else round(p.cpu_millicores),
        "mem": p.memory_bytes if p else None,
        "mem_limit": p.memory_limit_bytes if p else None,
        "restarts": p.restart_count if p else None,
        "last_reason": p.last_termination_reason if p else None,
        "started": None if p is None or p.started_at_s is None else round(p.started_at_s * 1000),
        "pod_rps": round(own.rps, 2) if own else None,
        "pod_err_s": round(own.errors_per_s, 2) if own else None,
    }
    if r is not None and round(r.proxyless_rps, 1) > 0:
        pod["px_rps"] = round(r.proxyless_rps, 1)
    if r is not None and r.retries > 0:
        pod["retries"] = r.retries
    return pod


def _bypass(r: EndpointRates | None, own: PodRates) -> float:
    return max(0.0, own.rps - (r.rps + r.proxyless_rps if r else 0.0))


def bypass_load(
    by_id: Mapping[str, EndpointRates], reported: Mapping[str, PodRates]
) -> dict[str, float]:
    """Requests per second that reached each reporting pod without Ballast: what the pod
    handled minus what Ballast carried to it and what proxyless clients it balances
    sent it (all of it for a pod Ballast does not route to), never below 0."""
    return {name: _bypass(by_id.get(name), own) for name, own in reported.items()}


def _running(load: Mapping[str, float], facts: Mapping[str, PodFacts]) -> dict[str, float]:
    return {name: v for name, v in load.items() if name in facts and facts[name].phase == RUNNING}


def _totals(
    rates: Sequence[EndpointRates],
    pods: int,
    reported: Collection[PodRates],
    bypass: Mapping[str, float],
) -> TotalsFrame:
    rps = sum(r.rps for r in rates)
    errors = sum(r.errors_per_s for r in rates)
    bounds = _bounds(rates)
    histograms = [r.latency_counts for r in rates if r.latency_bounds_ms == bounds]
    latency = [sum(c) for c in zip(*histograms, strict=True)] if bounds else []
    totals: TotalsFrame = {
        "pods": pods,
        "ready": sum(1 for r in rates if r.state == READY),
        "rps": round(rps, 2),
        "err_s": round(errors, 2),
        "err_ratio": _round(errors / rps, 4) if rps > 0 else None,
        "p50": _round(quantile_ms(latency, 0.50, bounds), 2),
        "p99": _round(quantile_ms(latency, 0.99, bounds), 2),
        "in_flight": sum(r.in_flight for r in rates),
        "in_b_s": round(sum(r.bytes_in_per_s for r in rates)),
        "out_b_s": round(sum(r.bytes_out_per_s for r in rates)),
        "pod_rps": round(sum(r.rps for r in reported), 2) if reported else None,
        "bypass_rps": round(sum(bypass.values()), 2) if reported else None,
        "px_rps": round(sum(r.proxyless_rps for r in rates), 2),
        "px_err_s": round(sum(r.proxyless_err_s for r in rates), 2),
        "err_by_code": errors_by_code(rates),
        "rps_by_method": calls_by_method(reported),
    }
    add_retries(totals, rates)
    return totals


def add_retries(totals: TotalsFrame, rates: Iterable[EndpointRates]) -> None:
    """Sets `retries_s` from the endpoints when the proxy retried in the interval."""
    set_retries(totals, sum(r.retries_per_s for r in rates))


def set_retries(totals: TotalsFrame, retries_s: float) -> None:
    """`retries_s` when above 0 (rounded), else left out. The collector passes the
    clusters' own rate (`build_frame(retries_s=…)`): it keeps removed endpoints' retries."""
    totals.pop("retries_s", None)
    if round(retries_s, 2) > 0:
        totals["retries_s"] = round(retries_s, 2)


def calls_by_method(reported: Iterable[PodRates]) -> dict[str, float]:
    """Requests per second the pods report by "service/method", added up over the pods
    (every client's calls); methods no call reached are left out."""
    by_method: dict[str, float] = {}
    for own in reported:
        for method, rps in own.rps_by_method.items():
            by_method[method] = by_method.get(method, 0.0) + rps
    return {method: round(rps, 2) for method, rps in sorted(by_method.items()) if rps > 0}


def errors_by_code(rates: Iterable[EndpointRates]) -> dict[str, float]:
    """Requests per second that ended in each gRPC status code but OK, over the
    service's endpoints; codes with no call in the interval are left out."""
    by_code: dict[str, float] = {}
    for r in rates:
        for code, rps in r.rps_by_code.items():
            if code != "OK" and rps > 0:
                by_code[code] = by_code.get(code, 0.0) + rps
    return {code: round(rps, 2) for code, rps in sorted(by_code.items())}


def _score(
    load: dict[str, float],
    windows: tuple[LoadWindow, LoadWindow, LoadWindow] | None,
    which: int,
) -> tuple[ImbalanceFrame, dict[str, float]]:
    """The imbalance of `load`, over the window `which` when there are windows (whose
    last busiest pod keeps its name while near the top), and the loads it scored."""
    if windows is None:
        return _imbalance(imbalance(load)), load
    window = windows[which]
    means = window.add(load)
    score = imbalance(means, incumbent=window.busiest)
    window.busiest = score.busiest
    return _imbalance(score), means


# The policies that pick by each pod's load (its calls in flight, its latency), and so
# send fewer calls to a pod that other clients keep busy (balancer/picker.py).
LOAD_AWARE_POLICIES = frozenset({"least_request", "peak_ewma"})


def lean_away(
    via: ImbalanceFrame, policy: str | None, bypass: Mapping[str, float]
) -> ImbalanceFrame:
    """Ballast's own share (`via`), no longer flagged when its skew is the policy at work.

    A load-aware policy gives a pod pinned by bypassing (L4) clients fewer of Ballast's
    calls, which evens out what the pods carry in all: Ballast's share is uneven by
    design then, and calling it imbalanced would blame Ballast for the L4 clients.
    That is the case when the pod Ballast sends the most to takes fewer bypassing
    calls than the mean pod (`bypass`: each Running pod's, over the same window). A
    skew toward a pod that bypassing clients load too stays flagged: nothing explains it.
    """
    busiest = via["busiest"]
    if not via["flagged"] or policy not in LOAD_AWARE_POLICIES:
        return via
    if busiest is None or busiest not in bypass:
        return via
    mean = sum(bypass.values()) / len(bypass)
    if mean <= 0 or bypass[busiest] >= mean:
        return via
    return {**via, "flagged": False, "leans_away": True}


def _imbalance(score: Imbalance) -> ImbalanceFrame:
    return {
        "max_mean": _round(score.max_over_mean, 3),
        "cv": _round(score.cv, 3),
        "busiest": score.busiest,
        "flagged": score.flagged,
    }


def weighted_load(rates: Iterable[EndpointRates]) -> dict[str, float]:
    """Load of each READY endpoint with a weight, scaled so equal shares of weight are equal.

    An operator's weights are meant to be uneven (DESIGN.md: the share of new
    requests follows weight / sum of weights), so a pod at weight 200 taking
    twice the requests of one at 100 is balanced. The weight that counts is the
    effective one: a new pod in slow start takes less by design. Draining,
    ejected or unhealthy pods take no new requests by design and are left out.
    """
    ready = [r for r in rates if r.state == READY and _weight_now(r) > 0]
    if not ready:
        return {}
    mean_weight = sum(_weight_now(r) for r in ready) / len(ready)
    return {r.endpoint_id: r.rps * mean_weight / _weight_now(r) for r in ready}


def _weight_now(r: EndpointRates) -> float:
    """The weight the balancer picks by now: slow start scales a new endpoint's down."""
    return r.effective_weight if r.effective_weight > 0 else float(r.weight)


def running_load(
    facts: Mapping[str, PodFacts], reported: Mapping[str, PodRates]
) -> dict[str, float]:
    """Requests per second each Running pod reports, by the pod's name in the frame.

    Not weight-normalised (see the module docstring). A pod starting, finished
    or failed is left out, as is one that has no figure yet.
    """
    return {name: own.rps for name, own in reported.items() if facts[name].phase == RUNNING}


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def encode_frame(frame: Mapping[str, object]) -> str:
    """The frame as compact JSON, as it goes over the wire and into the history."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def frame_size_bytes(frame: Mapping[str, object]) -> int:
    return len(encode_frame(frame).encode())
