"""The pinning finding: per pod the bypass share of its calls and its client connections,
and the service's finding in words (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from dashboard.collector.imbalance import MAX_OVER_MEAN_LIMIT
from dashboard.collector.pinning.reader import CONFIRM_S, ConnectionFrame, Origin

LISTED_PER_POD = 10  # the busiest client connections a frame lists per pod
# The finding is raised only when a pod's bypassing calls matter. The bypassing calls
# must be uneven past imbalance.py's limits (the frame's `bypass_imbalance` flagged:
# the busiest pod over 1.25× their mean or a CV over 0.2, at a mean of 5 calls/s or
# more over 10 s). And they must be at least MIN_BYPASS_SHARE of the pinned pod's
# calls: if less, even moving them all away would change the pod's load by less than
# the 25 % skew imbalance.py tolerates, so there is nothing worth an operator's time.
MIN_BYPASS_SHARE = MAX_OVER_MEAN_LIMIT - 1.0
# A connection this old is "long-lived" in the finding's words.
LONG_LIVED_S = 60.0
ADVICE = (
    "point those clients at Ballast or set max connection age on the server (MAX_CONNECTION_AGE)"
)


class PinningPod(TypedDict):
    pod: str
    bypass_share: float | None  # of its calls, from the counts; null without its own count
    # Only when its channelz answered:
    ballast_conns: NotRequired[int]  # Ballast's connections to it
    client_conns: NotRequired[int]  # the others (bypassing, proxyless, unknown)
    conns: NotRequired[list[ConnectionFrame]]  # the busiest LISTED_PER_POD of the others


class PinningFrame(TypedDict):
    finding: str | None  # in words, with the numbers; null when nothing is worth saying
    pinned: str | None  # the pod the finding is about
    pods: list[PinningPod]


def pinning_frame(
    frame: Mapping[str, Any],
    connections: Callable[[str], list[tuple[Origin, ConnectionFrame]] | None],
    shares: Mapping[str, float] | None = None,
) -> PinningFrame:
    """Per pod the bypass share of its calls and its connections, and the service's
    finding (see MIN_BYPASS_SHARE for when it is raised), from a service frame (its
    `pods` and `bypass_imbalance`) and the pods' connections (`PinningReader.connections`).

    `shares`: each pod's bypass share over the imbalance window (`window_shares`), else
    the frame's interval alone is used: per-second counts of a pod's calls and Ballast's
    are taken over windows that do not line up, so a few calls' difference at 10 calls/s
    reads as a third of them bypassing.
    """
    share_of = (lambda p: shares.get(p["pod"])) if shares is not None else bypass_share
    pods = [_pinning_pod(p, share_of(p), connections(p["pod"])) for p in frame.get("pods", [])]
    pinned = _pinned(frame, pods)
    text = None
    if pinned is not None:
        pod = next(p for p in pods if p["pod"] == pinned)
        conns = connections(pinned)
        text = finding_text(pod, frame.get("bypass_imbalance") or {}, conns)
    return {"finding": text, "pinned": pinned if text else None, "pods": pods}


def slim(pinning: PinningFrame) -> PinningFrame:
    """`pinning` as frames carry it: the connections of the pinned pod only (the finding's
    evidence), counts for the others. Frames go to every page each second and 15 minutes
    of them are kept: with every pod's ten connections the demo's frame (4 pods, 8
    clients a group, proxyless on) was 7.3 KB instead of 2.7, and is 4.4 with the
    pinned pod's alone. The API gives every pod's from the collector when it runs in its
    process (`api/findings.py`)."""
    pods = [_without_conns(p) if p["pod"] != pinning["pinned"] else p for p in pinning["pods"]]
    return {**pinning, "pods": pods}


def _without_conns(pod: PinningPod) -> PinningPod:
    slimmed = pod.copy()
    slimmed.pop("conns", None)
    return slimmed


def shares_of(pinning: Mapping[str, Any]) -> dict[str, float]:
    """The bypass shares a frame's `pinning` carries, by pod (to rebuild it with every
    pod's connections: `pinning_frame(frame, reader.connections, shares_of(...))`)."""
    return {
        p["pod"]: p["bypass_share"]
        for p in pinning.get("pods", [])
        if p.get("bypass_share") is not None
    }


def bypass_share(pod: Mapping[str, Any]) -> float | None:
    """The share of the pod's calls that bypassed Ballast (its count minus Ballast's and
    the proxyless clients'), 0 to 1; None without its own count or without calls."""
    own = float(pod.get("pod_rps") or 0.0)
    if own <= 0:
        return None
    carried = float(pod.get("rps") or 0.0) + float(pod.get("px_rps") or 0.0)
    return min(1.0, max(0.0, own - carried) / own)


def window_shares(at_pods: Mapping[str, float], bypassing: Mapping[str, float]) -> dict[str, float]:
    """Each pod's bypass share from its mean calls/s over the window (the collector's
    `LoadWindow`s of the pods' own counts and of the bypassing calls)."""
    return {pod: min(1.0, bypassing.get(pod, 0.0) / own) for pod, own in at_pods.items() if own > 0}


def _pinning_pod(
    pod: Mapping[str, Any], share: float | None, conns: list[tuple[Origin, ConnectionFrame]] | None
) -> PinningPod:
    out: PinningPod = {
        "pod": pod["pod"],
        "bypass_share": None if share is None else round(share, 3),
    }
    if conns is not None:
        others = [c for origin, c in conns if origin != "ballast"]
        out["ballast_conns"] = len(conns) - len(others)
        out["client_conns"] = len(others)
        out["conns"] = others[:LISTED_PER_POD]
    return out


def _pinned(frame: Mapping[str, Any], pods: Sequence[PinningPod]) -> str | None:
    """The pod a finding is about: the busiest of the bypassing calls, when they are
    flagged uneven and make at least MIN_BYPASS_SHARE of its calls."""
    bypass = frame.get("bypass_imbalance") or {}
    busiest = bypass.get("busiest")
    if not bypass.get("flagged") or busiest is None:
        return None
    share = next((p["bypass_share"] for p in pods if p["pod"] == busiest), None)
    return busiest if share is not None and share >= MIN_BYPASS_SHARE else None


def finding_text(
    pod: PinningPod,
    bypass: Mapping[str, Any],
    conns: list[tuple[Origin, ConnectionFrame]] | None,
) -> str:
    """The finding about `pod` in words, with its numbers: from its connections when its
    channelz told them apart, else from the counts alone."""
    name, share = pod["pod"], pod["bypass_share"] or 0.0
    said = f"{_percent(share)} of pod {name}'s calls bypass Ballast"
    skew = f"{bypass.get('max_mean') or 0:.1f}× the pods' mean of such calls"
    carrying = [(o, c) for o, c in conns or () if o != "ballast" and _carries(c)]
    if conns is None or not carrying or any(o == "unknown" for o, _ in carrying):
        return f"{said}, {skew}; {_not_shown(conns, carrying)}. {_ADVICE_SENTENCE}"
    clients = [c for _, c in carrying]
    n, oldest = len(clients), _oldest(clients)
    maybe = sum(1 for o, _ in carrying if o == "client")
    if maybe:
        which = "all" if maybe == n else f"{maybe} of them"
        return (
            f"{said}, {skew}; it holds {n} client connection{_s(n)} besides Ballast's"
            f" ({oldest}), {which} from hosts that also run proxyless clients, so the"
            f" bypassing ones cannot be told apart by address. {_ADVICE_SENTENCE}"
        )
    long = "long-lived " if all(c["age_s"] >= LONG_LIVED_S for c in clients) else ""
    return (
        f"{_percent(_connection_share(conns or [], clients, share))} of pod {name}'s calls"
        f" come from {n} {long}connection{_s(n)} that bypass Ballast ({oldest}); {ADVICE}."
    )


_ADVICE_SENTENCE = ADVICE[0].upper() + ADVICE[1:] + "."


def _not_shown(
    conns: list[tuple[Origin, ConnectionFrame]] | None,
    carrying: Sequence[tuple[Origin, ConnectionFrame]],
) -> str:
    """Why the connections behind the bypassing calls are not named."""
    if conns is None:
        return "the connections behind them are not shown: the pod's channelz has not answered"
    if carrying:
        return (
            "the connections behind them are not told apart: no balancer replica reports"
            " Ballast's own connections by address (one is down, or its engine is HAProxy)"
        )
    return (
        f"no client connection open for {CONFIRM_S:.0f} s or more carried calls at the pod's"
        " last channelz read (a connection is named once seen that long: short-lived ones"
        " are not)"
    )


def _carries(c: ConnectionFrame) -> bool:
    return (c["calls_s"] or 0.0) > 0 or (c["calls_s"] is None and c["calls"] > 0)


def _connection_share(
    conns: Sequence[tuple[Origin, ConnectionFrame]],
    clients: Sequence[ConnectionFrame],
    counted: float,
) -> float:
    """The clients' share of the calls over all the pod's connections in the last read
    interval; the counts' share before there is an interval."""
    total = sum(c["calls_s"] or 0.0 for _, c in conns)
    if total <= 0:
        return counted
    return sum(c["calls_s"] or 0.0 for c in clients) / total


def _oldest(conns: Sequence[ConnectionFrame]) -> str:
    eldest = max(conns, key=lambda c: c["age_s"])
    return f"oldest {'≥ ' if eldest['at_least'] else ''}{_duration(eldest['age_s'])}"


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _percent(share: float) -> str:
    return f"{round(share * 100)} %"


def _s(n: int) -> str:
    return "" if n == 1 else "s"
