"""A local pod starts with a minimal environment, not its supervisor's (issue 9)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from platforms.local import DeploymentSpec, LocalPlatform, ProbeSpec
from platforms.local.environment import pod_environment
from tests.support.waiting import wait_for

# Writes its environment as JSON to argv[1], then stays up as a pod does.
DUMP_ENV = (
    "import json, os, sys, time\n"
    "path = sys.argv[1]\n"
    "open(path + '.tmp', 'w').write(json.dumps(dict(os.environ)))\n"
    "os.rename(path + '.tmp', path)\n"
    "time.sleep(120)\n"
)
SECRETS = {
    "SECRET_KEY": "django-secret-0123456789",
    "DATABASE_URL": "postgres://ballast:hunter2@db/ballast",
    "BALLAST_ADMIN_TOKEN": "admin-token-0123456789abcdef",
    "REDIS_URL": "redis://:pw@cache:6379/0",
}


@pytest.mark.skipif(sys.platform != "linux", reason="pods start through a Linux launcher")
async def test_it_gives_a_real_pod_only_the_basics_and_its_spec(tmp_path: Path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    out = tmp_path / "env.json"
    spec = DeploymentSpec(
        name="envdump",
        argv=(sys.executable, "-c", DUMP_ENV, str(out)),
        env={"POD_COLOUR": "blue", "LANG": "en_GB.UTF-8"},
        termination_grace_s=1.0,
        probe=ProbeSpec(interval_s=0.5, timeout_s=1.0, failure_threshold=3),
    )
    platform = LocalPlatform([spec], rng=random.Random(1), sample_interval_s=1.0)
    await platform.start()
    try:
        await wait_for(out.exists, timeout_s=60, what="the pod to write its environment")
        env = json.loads(out.read_text())
    finally:
        await platform.stop()
    assert not set(SECRETS) & set(env), "the supervisor's secrets leaked into the pod"
    assert env["POD_COLOUR"] == "blue"
    assert env["LANG"] == "en_GB.UTF-8"  # the deployment's own value wins
    assert env["PATH"] and env["HOME"]
    assert env["HOSTNAME"].startswith("envdump-")
    assert set(env) <= {"POD_COLOUR", "HOSTNAME", *_inherited_here(), "LC_CTYPE"}


def _inherited_here() -> set[str]:
    # What the interpreter itself may add at start (LC_CTYPE by PEP 538 coercion) aside.
    return set(pod_environment("x", {}))


def test_it_keeps_only_named_basics_from_the_parent():
    parent = {"PATH": "/bin", "HOME": "/home/a", "SECRET_KEY": "s", "PYTHONPATH": "/src"}
    env = pod_environment("web-1", {"A": "1"}, parent)
    assert env == {"PATH": "/bin", "HOME": "/home/a", "PYTHONPATH": "/src", "HOSTNAME": "web-1",
                   "A": "1"}  # fmt: skip
