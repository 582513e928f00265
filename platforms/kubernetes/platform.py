"""`KubernetesPlatform`: `platforms.base.Platform` on the Kubernetes API (official client).

Every API call blocks, so each runs in a thread (`asyncio.to_thread`) and the
EndpointSlice watches in a thread of their own (`watch.py`): the event loop
never waits on the API. Names are `namespace/name` or `name` in the default
namespace (the kubeconfig context's, or the pod's own in a cluster).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from kubernetes import client

from balancer.discovery import Update
from platforms.base import (
    Platform,
    PlatformError,
    PodFacts,
    RestartRefused,
    UnknownDeployment,
    UnknownPod,
)
from platforms.kubernetes.config import KubernetesSettings, api_client, split_name
from platforms.kubernetes.pods import match_labels_selector, pod_facts
from platforms.kubernetes.slices import Port
from platforms.kubernetes.watch import watch_slices

log = logging.getLogger(__name__)

T = TypeVar("T")
Obj = dict[str, Any]
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_TOO_MANY_REQUESTS = 429


class EvictionRefused(RestartRefused):
    """The Eviction API refused (429): a PodDisruptionBudget allows no disruption now."""


class KubernetesPlatform:
    """Pods, EndpointSlices, eviction, rollouts and scale through the Kubernetes API.

    `api` and `namespace` default to what `settings` configure (raises
    KubernetesConfigError when that fails). `rng` jitters the watches' backoff.
    """

    # A rollout restart is the Deployment's own rolling update (`rollout_restart`), not
    # the control plane's pod-by-pod restarts; terminating endpoints drain by discovery.
    rolls_out_itself = True

    def __init__(
        self,
        settings: KubernetesSettings | None = None,
        *,
        api: client.ApiClient | None = None,
        namespace: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or KubernetesSettings()
        if api is None:
            api, default_namespace = api_client(self.settings)
            namespace = namespace or default_namespace
        self._api = api
        self.namespace = namespace or self.settings.namespace or "default"
        self._rng = rng or random.Random()
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        # The pods each deployment had at its last list_pods, replaced each time: bounded.
        self._pods_seen: dict[tuple[str, str], frozenset[str]] = {}
        # None until metrics.k8s.io was asked; False when it is not served (no metrics-server).
        self.metrics_available: bool | None = None

    @property
    def usage_note(self) -> str | None:
        """Why the pods' CPU and memory are missing, for the page; None while they are there."""
        if self.metrics_available is False:
            return (
                "CPU and memory are missing: metrics.k8s.io does not answer (metrics-server"
                " is not installed in the cluster); everything else works"
            )
        return None

    def split(self, name: str) -> tuple[str, str]:
        return split_name(name, self.namespace)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.settings.request_timeout_s)
        return await asyncio.to_thread(fn, *args, **kwargs)

    # --- discovery ------------------------------------------------------------------------

    def watch_endpoints(self, service: str) -> AsyncIterator[Update]:
        """The Service's endpoints from its EndpointSlices (port: the slices' only one,
        or the one named `grpc`); see `watch_service`."""
        return self.watch_service(service)

    def watch_service(
        self, service: str, *, port: Port = None, namespace: str | None = None
    ) -> AsyncIterator[Update]:
        """Discovery updates of `service` (`name` or `namespace/name`): a Reset after each
        list, then Add/Remove per change. `port`: a number, or the name of the Service's
        port (as in its EndpointSlices); `namespace` overrides the name's."""
        ns, name = self.split(service)
        return watch_slices(self._api, namespace or ns, name, port, self.settings, self._rng)

    # --- pods -------------------------------------------------------------------------------

    async def list_pods(self, deployment: str) -> list[PodFacts]:
        """The Deployment's pods (by its selector), oldest first, with usage from
        metrics.k8s.io when it is served (else the figures are None)."""
        ns, name = self.split(deployment)
        spec = await self._deployment(ns, name)
        selector = match_labels_selector(spec)
        pods = await self._call(self._core.list_namespaced_pod, ns, label_selector=selector)
        raw = [self._api.sanitize_for_serialization(p) for p in pods.items or ()]
        metrics = await self._pod_metrics(ns, selector)
        raw.sort(
            key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
        )
        self._pods_seen[(ns, name)] = frozenset(p["metadata"]["name"] for p in raw)
        return [pod_facts(p, deployment, metrics.get(p["metadata"]["name"])) for p in raw]

    async def _deployment(self, namespace: str, name: str) -> Obj:
        try:
            found = await self._call(self._apps.read_namespaced_deployment, name, namespace)
        except client.ApiException as err:
            if err.status == 404:
                raise UnknownDeployment(f"deployment {namespace}/{name} not found") from None
            raise _platform_error(f"reading deployment {namespace}/{name}", err) from None
        result: Obj = self._api.sanitize_for_serialization(found)
        return result

    async def _pod_metrics(self, namespace: str, selector: str) -> dict[str, Obj]:
        """PodMetrics by pod name; {} when metrics.k8s.io is absent (logged once)."""
        try:
            found = await self._call(
                self._custom.list_namespaced_custom_object,
                "metrics.k8s.io", "v1beta1", namespace, "pods", label_selector=selector,
            )  # fmt: skip
        except client.ApiException as err:
            if err.status in (404, 503):
                if self.metrics_available is not False:
                    log.warning(
                        "metrics.k8s.io is not served (%s): pods' CPU and memory are missing;"
                        " install metrics-server to see them", err.status,
                    )  # fmt: skip
                self.metrics_available = False
                return {}
            raise _platform_error("reading metrics.k8s.io", err) from None
        self.metrics_available = True
        items: list[Obj] = found.get("items") or [] if isinstance(found, dict) else []
        return {m["metadata"]["name"]: m for m in items}

    # --- actions ----------------------------------------------------------------------------

    async def check_restart(self, name: str) -> None:
        """Asks the Eviction API whether the pod may be evicted now, without evicting it
        (dryRun=All): raises UnknownPod, or EvictionRefused when a PodDisruptionBudget
        forbids it (the same answer `restart_pod` would get, before anything is drained)."""
        ns, pod = self._pod(name)
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=ns))
        try:
            await self._call(
                self._core.create_namespaced_pod_eviction, pod, ns, body, dry_run="All"
            )
        except client.ApiException as err:
            raise _eviction_error(ns, pod, err) from None

    async def restart_pod(self, name: str) -> None:
        """Evicts the pod (policy/v1 Eviction: PodDisruptionBudgets apply), then waits until
        it is gone or terminating; its controller starts the replacement. Never deletes.

        Raises UnknownPod, or EvictionRefused when a PodDisruptionBudget forbids it (429):
        the pod keeps running, and the eviction is not retried.
        """
        ns, pod = self._pod(name)
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=ns))
        try:
            await self._call(self._core.create_namespaced_pod_eviction, pod, ns, body)
        except client.ApiException as err:
            raise _eviction_error(ns, pod, err) from None
        await self._until_gone(ns, pod)

    def _pod(self, name: str) -> tuple[str, str]:
        """A pod's namespace: the one given, else where `list_pods` saw it, else the default."""
        if "/" in name:
            return self.split(name)
        seen = (ns for (ns, _), pods in self._pods_seen.items() if name in pods)
        return next(seen, self.namespace), name

    async def _until_gone(self, namespace: str, pod: str) -> None:
        deadline = time.monotonic() + self.settings.rollout_timeout_s
        while time.monotonic() < deadline:
            try:
                found = await self._call(self._core.read_namespaced_pod, pod, namespace)
            except client.ApiException as err:
                if err.status == 404:
                    return
                raise _platform_error(f"reading pod {namespace}/{pod}", err) from None
            if found.metadata is None or found.metadata.deletion_timestamp is not None:
                return
            await asyncio.sleep(self.settings.poll_interval_s)
        raise PlatformError(f"pod {namespace}/{pod} was evicted but still runs")

    async def rollout_restart(
        self, deployment: str, progress: Callable[[str], None] | None = None
    ) -> None:
        """`kubectl rollout restart`: patches the pod template's restartedAt annotation,
        then follows the Deployment's status until the rollout is complete (as
        `kubectl rollout status`), calling `progress` with each new state in words.
        Raises UnknownDeployment, or PlatformError after `rollout_timeout_s`."""
        ns, name = self.split(deployment)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        try:
            await self._call(self._apps.patch_namespaced_deployment, name, ns, patch)
        except client.ApiException as err:
            if err.status == 404:
                raise UnknownDeployment(f"deployment {ns}/{name} not found") from None
            raise _platform_error(f"patching deployment {ns}/{name}", err) from None
        await self._follow_rollout(ns, name, progress or (lambda _: None))

    async def _follow_rollout(self, ns: str, name: str, progress: Callable[[str], None]) -> None:
        deadline = time.monotonic() + self.settings.rollout_timeout_s
        last = ""
        while True:
            state, done = rollout_state(await self._deployment(ns, name))
            if state != last:
                last = state
                log.info("deployment %s/%s: %s", ns, name, state)
                progress(state)
            if done:
                return
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"deployment {ns}/{name}: rollout not complete after"
                    f" {self.settings.rollout_timeout_s:g} s ({state})"
                )
            await asyncio.sleep(self.settings.poll_interval_s)

    async def scale(self, deployment: str, replicas: int) -> None:
        """Sets spec.replicas through the scale subresource."""
        if replicas < 0:
            raise PlatformError(f"replicas must be 0 or more, got {replicas}")
        ns, name = self.split(deployment)
        patch = {"spec": {"replicas": replicas}}
        try:
            await self._call(self._apps.patch_namespaced_deployment_scale, name, ns, patch)
        except client.ApiException as err:
            if err.status == 404:
                raise UnknownDeployment(f"deployment {ns}/{name} not found") from None
            raise _platform_error(f"scaling deployment {ns}/{name}", err) from None


def rollout_state(deployment: Obj) -> tuple[str, bool]:
    """Where a Deployment's rollout stands, in `kubectl rollout status`'s words, and
    whether it is complete."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return "waiting for the deployment spec update to be observed", False
    if updated < wanted:
        return f"{updated} of {wanted} new replicas have been updated", False
    if total > updated:
        return f"{total - updated} old replicas are pending termination", False
    if available < updated:
        return f"{available} of {updated} updated replicas are available", False
    return f"successfully rolled out ({wanted} replicas)", True


def _message(err: client.ApiException) -> str:
    """The API's own message from a Status body, else the HTTP reason."""
    import json

    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except (ValueError, AttributeError):
        return str(err.reason)


def _eviction_error(namespace: str, pod: str, err: client.ApiException) -> PlatformError:
    if err.status == 404:
        return UnknownPod(f"pod {namespace}/{pod} not found")
    if err.status == _TOO_MANY_REQUESTS:
        return EvictionRefused(
            f"pod {namespace}/{pod} was not evicted: {_message(err)} (a PodDisruptionBudget"
            " allows no disruption now); the pod keeps running"
        )
    return _platform_error(f"evicting pod {namespace}/{pod}", err)


def _platform_error(doing: str, err: client.ApiException) -> PlatformError:
    return PlatformError(f"{doing}: the Kubernetes API answered {err.status}: {_message(err)}")


if TYPE_CHECKING:
    _implements: type[Platform] = KubernetesPlatform  # mypy checks the interface here
