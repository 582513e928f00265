"""The demo workload: a real gRPC service that misbehaves on request (see `service`).

`python -m demo.workload --help` runs one pod; `Workload` embeds one in a test or a scene.
"""

from __future__ import annotations

from demo.workload.knobs import KnobError, Knobs, knobs_from_env
from demo.workload.server import Workload, WorkloadConfig

__all__ = ["KnobError", "Knobs", "Workload", "WorkloadConfig", "knobs_from_env"]
