"""The runcollector command's configuration from the settings (running it is the
collector's own tests' business: tests/test_collector_runner.py)."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError
from django.test import override_settings

from dashboard.app.management.commands.runcollector import Command
from dashboard.collector.runner import ReplicaTarget, ServiceTarget

BALANCERS = {"b0": "127.0.0.1:9901", "b1": "10.0.0.2:9901"}


@override_settings(
    BALLAST_BALANCERS=BALANCERS,
    BALLAST_ADMIN_TOKEN="s3cret-token",
    BALLAST_SERVICES=["inventory", "payments"],
    BALLAST_COLLECTOR_INTERVAL_MS=500,
)
def test_it_builds_the_collector_config_from_settings() -> None:
    config = Command().collector_config()
    assert list(config.replicas) == [
        ReplicaTarget("b0", "127.0.0.1:9901", "s3cret-token"),
        ReplicaTarget("b1", "10.0.0.2:9901", "s3cret-token"),
    ]
    assert dict(config.services) == {
        "inventory": ServiceTarget("inventory", "inventory"),
        "payments": ServiceTarget("payments", "payments"),
    }
    assert config.interval_s == 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"BALLAST_BALANCERS": {}}, "BALLAST_BALANCERS is not set"),
        ({"BALLAST_ADMIN_TOKEN": None}, "BALLAST_ADMIN_TOKEN is not set"),
        ({"BALLAST_COLLECTOR_INTERVAL_MS": 100}, "interval_s must be at least 0.25 s"),
    ],
)
def test_it_names_what_is_missing(overrides: dict[str, object], message: str) -> None:
    base = {
        "BALLAST_BALANCERS": BALANCERS,
        "BALLAST_ADMIN_TOKEN": "s3cret-token",
        "BALLAST_COLLECTOR_INTERVAL_MS": 1000,
    }
    with override_settings(**{**base, **overrides}), pytest.raises(CommandError, match=message):
        Command().collector_config()
