"""The desired state from the dashboard, fetched and applied before a replica serves.

A replica that (re)starts knows only its config file; the operator's drains, weights
and policies live in the dashboard. With `[control_plane]` configured, start fetches
`GET <url>/api/v1/desired-state/` (as Envoy waits for its first config, up to
`initial_fetch_timeout_s`) and applies it to the endpoints discovery found, before the
listeners take a call: a drained pod gets no call from a restarted replica.

When the dashboard cannot be reached in time, or refuses the token, one line says so
and the replica serves its config file's state; the dashboard's reconciler corrects it
once it reaches the replica. Plain urllib in a worker thread: no new dependency, and
the event loop stays free for discovery and health checks meanwhile.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import random
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from balancer.cluster import Cluster, UnknownEndpoint
from balancer.config import ControlPlaneConfig
from balancer.picker import POLICIES

log = logging.getLogger(__name__)

PATH = "api/v1/desired-state/"
# Retries back off over these steps (± JITTER), so replicas started together spread out.
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)
JITTER = 0.2
MAX_ATTEMPT_S = 5.0  # one request's timeout, within what is left of the wait
MIN_ATTEMPT_S = 0.1
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a few hundred bytes per override; anything bigger is wrong
MAX_DRAIN_TIMEOUT_S = 24 * 3600.0  # as the dashboard's API takes
_SERVES_ANYWAY = (
    "serving the config file's state; the dashboard's reconciler will correct it"
    " once it reaches this replica"
)


@dataclass(frozen=True, slots=True)
class EndpointWant:
    endpoint_id: str
    weight: int | None
    drained: bool
    drain_timeout_s: float | None


@dataclass(frozen=True, slots=True)
class ServiceWant:
    """The desired state of one service (a cluster of the same name)."""

    name: str
    policy: str | None
    endpoints: tuple[EndpointWant, ...]


class FetchError(Exception):
    """One attempt failed; `permanent` when trying again cannot help (bad token, bad URL)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class BadAnswer(ValueError):
    """The answer is not a desired state; the message names the field."""


# --- the answer ---------------------------------------------------------------------------


def _field(item: Mapping[str, Any], name: str, kinds: tuple[type, ...], path: str) -> Any:
    value = item.get(name)
    bad_bool = isinstance(value, bool) and bool not in kinds
    if name not in item or bad_bool or not isinstance(value, kinds):
        wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise BadAnswer(f"{path}.{name}: expected {wanted}, got {value!r}")
    return value


def _items(value: object, path: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise BadAnswer(f"{path}: expected a list of objects")
    return value


def _endpoint(item: Mapping[str, Any], path: str) -> EndpointWant:
    timeout_s = _field(item, "drain_timeout_s", (int, float, type(None)), path)
    if timeout_s is not None and not 0 < timeout_s <= MAX_DRAIN_TIMEOUT_S:
        raise BadAnswer(
            f"{path}.drain_timeout_s: expected seconds in (0, {MAX_DRAIN_TIMEOUT_S:g}],"
            f" got {timeout_s!r}"
        )
    return EndpointWant(
        endpoint_id=_field(item, "endpoint_id", (str,), path),
        weight=_field(item, "weight", (int, type(None)), path),
        drained=_field(item, "drained", (bool,), path),
        drain_timeout_s=None if timeout_s is None else float(timeout_s),
    )


def parse_desired_state(raw: bytes) -> tuple[ServiceWant, ...]:
    """The services of a `/api/v1/desired-state/` answer; raises BadAnswer naming the field."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadAnswer("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise BadAnswer("the answer is not a JSON object")
    services = []
    for i, item in enumerate(_items(data.get("services"), "services")):
        path = f"services[{i}]"
        endpoints = _items(item.get("endpoints"), f"{path}.endpoints")
        services.append(
            ServiceWant(
                name=_field(item, "name", (str,), path),
                policy=_field(item, "policy", (str, type(None)), path),
                endpoints=tuple(
                    _endpoint(e, f"{path}.endpoints[{j}]") for j, e in enumerate(endpoints)
                ),
            )
        )
    return tuple(services)


# --- fetching -----------------------------------------------------------------------------


def desired_state_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/{PATH}"


def _ssl_context(config: ControlPlaneConfig) -> ssl.SSLContext | None:
    if not config.url.startswith("https:"):
        return None
    return ssl.create_default_context(cafile=config.ca_file)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: urllib would carry the token to wherever
    it points (another host, or plain http)."""

    def redirect_request(self, *args: Any) -> None:
        return None


def fetch_once(config: ControlPlaneConfig, timeout_s: float) -> tuple[ServiceWant, ...]:
    """One GET of the desired state (blocking); raises FetchError saying what went wrong."""
    request = urllib.request.Request(
        desired_state_url(config.url),
        headers={"Authorization": f"Token {config.token}", "Accept": "application/json"},
    )
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if (context := _ssl_context(config)) is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout_s) as r:
            raw = r.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise _http_error(config, err.code, err.headers.get("Location")) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _network_error(err) from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise FetchError(f"the answer is over {MAX_ANSWER_BYTES} bytes", permanent=True)
    try:
        return parse_desired_state(raw)
    except BadAnswer as err:
        raise FetchError(
            f"not a desired state ({err}): is control_plane.url the dashboard's base URL?",
            permanent=True,
        ) from None


def _network_error(err: Exception) -> FetchError:
    """No HTTP answer: refused, timed out, reset, not HTTP, or a certificate not trusted."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, ssl.SSLCertVerificationError):
        return FetchError(
            f"the dashboard's certificate is not trusted ({reason.verify_message}):"
            " set control_plane.ca_file to the CA that signed it",
            permanent=True,
        )
    if isinstance(reason, OSError) and reason.strerror:
        return FetchError(reason.strerror)
    return FetchError(str(reason) or type(reason).__name__)


def _http_error(config: ControlPlaneConfig, code: int, location: str | None) -> FetchError:
    status = f"HTTP {code} {_phrase(code)}".rstrip()
    if 300 <= code < 400:
        return FetchError(
            f"{status} to {location}: set control_plane.url to the dashboard's base URL"
            " (redirects are not followed: they would carry the token along)",
            permanent=True,
        )
    if code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return FetchError(
            f"{status}: the token was refused; set {config.token_env} (or control_plane.token)"
            " to an API token of the dashboard (manage.py apitoken create --user <a viewer>)",
            permanent=True,
        )
    if code == HTTPStatus.NOT_FOUND:
        return FetchError(
            f"{status}: is control_plane.url the dashboard's base URL?", permanent=True
        )
    # 408, 429 and 5xx pass (a dashboard starting, a proxy's hiccup); other 4xx will not.
    retry = code in (HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS) or code >= 500
    return FetchError(status, permanent=not retry)


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


async def fetch_desired_state(
    config: ControlPlaneConfig, *, rng: random.Random
) -> tuple[ServiceWant, ...] | None:
    """The desired state, retried with jittered backoff for up to `initial_fetch_timeout_s`.

    Returns None when it could not be had in time, or at once when trying again cannot
    help (a refused token, a wrong URL); one warning line says why then.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.initial_fetch_timeout_s
    url = desired_state_url(config.url)
    attempt = 0
    while True:
        try:
            timeout_s = max(MIN_ATTEMPT_S, min(MAX_ATTEMPT_S, deadline - loop.time()))
            return await asyncio.to_thread(fetch_once, config, timeout_s)
        except FetchError as err:
            if err.permanent:
                log.warning("control plane %s: %s; %s", url, err, _SERVES_ANYWAY)
                return None
            jittered_s = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] * rng.uniform(
                1 - JITTER, 1 + JITTER
            )
            left_s = deadline - loop.time()
            if left_s <= 0:
                log.warning(
                    "control plane %s: no desired state after %g s (last error: %s); %s",
                    url, config.initial_fetch_timeout_s, err, _SERVES_ANYWAY,
                )  # fmt: skip
                return None
            delay_s = min(jittered_s, left_s)  # the last try lands on the deadline
            log.debug("control plane %s: %s; trying again in %.2f s", url, err, delay_s)
        await asyncio.sleep(delay_s)
        attempt += 1


# --- applying -----------------------------------------------------------------------------


@dataclass
class Applied:
    """What applying changed, for the start's log line."""

    drains: int = 0
    weights: int = 0
    policies: int = 0
    skipped: int = 0  # endpoints this replica does not know, bad values

    def __str__(self) -> str:
        text = f"{self.drains} drains, {self.weights} weights, {self.policies} policies"
        return text + (f" ({self.skipped} not applicable here)" if self.skipped else "")


def apply_desired_state(
    services: tuple[ServiceWant, ...], clusters: Mapping[str, Cluster]
) -> Applied:
    """Applies the desired state to the clusters of this replica and the endpoints they
    know; services and endpoints it does not have are skipped (the reconciler sees to
    endpoints discovered later). A value the balancer refuses is logged and skipped.
    """
    applied = Applied()
    for service in services:
        cluster = clusters.get(service.name)
        if cluster is None:
            continue  # a service another replica fleet balances
        if service.policy is not None and service.policy != cluster.policy:
            if service.policy in POLICIES:
                cluster.set_policy(service.policy)
                applied.policies += 1
            else:
                log.warning("cluster %s: unknown policy %r kept out", cluster.name, service.policy)
                applied.skipped += 1
        for want in service.endpoints:
            _apply_endpoint(cluster, want, applied)
    return applied


def _apply_endpoint(cluster: Cluster, want: EndpointWant, applied: Applied) -> None:
    ep = cluster.endpoints.get(want.endpoint_id)
    if ep is None or ep.removed:
        applied.skipped += 1
        return
    try:
        if want.weight is not None and want.weight != ep.weight:
            cluster.set_weight(want.endpoint_id, want.weight)
            applied.weights += 1
        if want.drained:
            cluster.drain(want.endpoint_id, want.drain_timeout_s)
            applied.drains += 1
    except (ValueError, UnknownEndpoint) as err:
        log.warning("cluster %s: endpoint %s: %s; kept out", cluster.name, want.endpoint_id, err)
        applied.skipped += 1


async def hold_desired_state(
    config: ControlPlaneConfig, clusters: Mapping[str, Cluster], *, rng: random.Random
) -> Applied | None:
    """Fetches and applies the desired state; None (after one warning line) without it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    services = await fetch_desired_state(config, rng=rng)
    if services is None:
        return None
    applied = apply_desired_state(services, clusters)
    log.info(
        "desired state from %s applied in %.2f s: %s",
        config.url, loop.time() - started, applied,
    )  # fmt: skip
    return applied
