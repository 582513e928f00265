"""The Kubernetes platform: EndpointSlice discovery, pod facts, eviction, rollouts, scale."""

from platforms.kubernetes.config import KubernetesConfigError, KubernetesSettings
from platforms.kubernetes.platform import EvictionRefused, KubernetesPlatform

__all__ = ["EvictionRefused", "KubernetesConfigError", "KubernetesPlatform", "KubernetesSettings"]
