"""The environment a pod process starts with: a few basics, then its deployment's `env`.

A pod must not inherit the supervisor's environment: the dashboard's
SECRET_KEY, DATABASE_URL or the balancer's admin token would leak into every
workload. As a kubelet does, a pod gets what its spec sets plus its HOSTNAME
(the pod name); from this machine it keeps only what a process needs to run
at all (PATH, HOME, the locale, the temporary directory, PYTHONPATH).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Taken from the supervisor when set; everything else stays behind.
INHERITED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    # An interpreter started by path finds the project's packages through it when not installed.
    "PYTHONPATH",
)


def pod_environment(
    pod_name: str, spec_env: Mapping[str, str], parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The basics from `parent` (default: this process's environment), HOSTNAME, then `spec_env`.

    The deployment's own variables win over both.
    """
    parent = os.environ if parent is None else parent
    env = {name: parent[name] for name in INHERITED if name in parent}
    env["HOSTNAME"] = pod_name
    env.update(spec_env)
    return env
