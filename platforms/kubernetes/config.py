"""How the Kubernetes platform reaches the API: in-cluster, or a kubeconfig and context.

Read at the edge (the CLI, the dashboard's settings) into `KubernetesSettings`;
`api_client` turns them into the official client's `ApiClient` with a private
`Configuration` (never the client's process-wide default), so several platforms
(tests: several fake API servers) live side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from platforms.base import PlatformError

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubernetesConfigError(PlatformError, ValueError):
    """The API cannot be reached as configured; the message says what to set."""


@dataclass(frozen=True)
class KubernetesSettings:
    """Where the API is and how this process talks to it.

    `kubeconfig` None: in-cluster (the pod's service account) when running in a
    pod (`KUBERNETES_SERVICE_HOST` is set), else `$KUBECONFIG`, else ~/.kube/config.
    `context` None: the kubeconfig's current context. `namespace` None: the
    context's namespace, in-cluster the pod's own, else `default`.
    `watch_timeout_s`: how long one watch request lasts before it is resumed (the
    API server's own limit is 30 min; client-go picks 5–10 min). Errors are retried
    after a jittered backoff from `backoff_initial_s` up to `backoff_max_s`.
    """

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    in_cluster: bool = False
    watch_timeout_s: float = 300.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    request_timeout_s: float = 10.0
    rollout_timeout_s: float = 600.0
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("watch_timeout_s", "backoff_initial_s", "backoff_max_s",
                     "request_timeout_s", "rollout_timeout_s", "poll_interval_s"):  # fmt: skip
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise KubernetesConfigError(f"{name} must be a positive number, got {value}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise KubernetesConfigError("backoff_max_s must be at least backoff_initial_s")

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> KubernetesSettings:
        """In-cluster when running in a pod and no kubeconfig is given, else the kubeconfig
        (`kubeconfig`, else `$KUBECONFIG`, else ~/.kube/config)."""
        in_cluster = kubeconfig is None and bool(environ.get("KUBERNETES_SERVICE_HOST"))
        if kubeconfig is None and not in_cluster:
            kubeconfig = environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        return cls(kubeconfig=kubeconfig, context=context, namespace=namespace,
                   in_cluster=in_cluster)  # fmt: skip


def api_client(settings: KubernetesSettings) -> tuple[client.ApiClient, str]:
    """The client and the default namespace; raises KubernetesConfigError naming the cause."""
    configuration = client.Configuration()
    try:
        if settings.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
            namespace = settings.namespace or _service_account_namespace()
        else:
            config.load_kube_config(
                config_file=settings.kubeconfig,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
            namespace = settings.namespace or _context_namespace(settings)
    except (ConfigException, OSError, ValueError) as err:
        where = "in-cluster service account" if settings.in_cluster else settings.kubeconfig
        raise KubernetesConfigError(
            f"cannot configure the Kubernetes client from {where}: {str(err).rstrip('.')};"
            " set KUBECONFIG"
            " (or --kubeconfig) to a kubeconfig file, or run in a pod with a service account"
        ) from None
    return client.ApiClient(configuration), namespace


def _context_namespace(settings: KubernetesSettings) -> str:
    contexts, active = config.list_kube_config_contexts(config_file=settings.kubeconfig)
    chosen = next((c for c in contexts if c.get("name") == settings.context), active)
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def _service_account_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def split_name(name: str, default_namespace: str) -> tuple[str, str]:
    """`namespace/name` or `name` (in `default_namespace`) → (namespace, name)."""
    namespace, sep, short = name.partition("/")
    if not sep:
        return default_namespace, name
    if not namespace or not short or "/" in short:
        raise PlatformError(f"{name!r} is not 'name' or 'namespace/name'")
    return namespace, short
