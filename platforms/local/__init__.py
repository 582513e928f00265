"""The local platform: Deployments whose pods are processes on this machine.

Each pod is an OS process serving gRPC on its own 127.0.0.1 port, named like a
Kubernetes pod (`inventory-5f7c9-x2k4q`), ready once its grpc.health.v1 Check
passes, measured with psutil and killed as OOMKilled over its memory limit.
See `LocalPlatform` for the supervisor and `DeploymentSpec` for what it runs.
"""

from platforms.local.events import PodEvent
from platforms.local.platform import LocalPlatform
from platforms.local.spec import BackoffSpec, DeploymentSpec, ProbeSpec

__all__ = ["BackoffSpec", "DeploymentSpec", "LocalPlatform", "PodEvent", "ProbeSpec"]
