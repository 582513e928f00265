"""`GET /api/v1/desired-state/` with auto weights: a starting replica gets each pod's auto
weight while the service's autoweights are on and automation is not paused; an operator's
weight wins; off or paused, none."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.control.models import (
    AutomationSwitch,
    AutoWeight,
    EndpointOverride,
    ServiceAutomation,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("viewer", password="correct horse battery"))
    return client


def endpoints(client: Client) -> dict[str, Any]:
    body = client.get("/api/v1/desired-state/").json()
    return {
        e["endpoint_id"]: (e["weight"], e["drained"])
        for service in body["services"]
        for e in service["endpoints"]
    }


def test_it_gives_a_starting_replica_the_auto_weights_while_they_are_on(reader: Client) -> None:
    AutoWeight.objects.create(service="inventory", endpoint_id="pod-a", weight=60)
    AutoWeight.objects.create(service="inventory", endpoint_id="pod-b", weight=120)
    EndpointOverride.objects.create(service="inventory", endpoint_id="pod-b", weight=300)
    EndpointOverride.objects.create(service="inventory", endpoint_id="pod-c", drained=True)
    assert endpoints(reader) == {"pod-b": (300, False), "pod-c": (None, True)}  # off

    ServiceAutomation.objects.create(service="inventory", autoweights=True)
    assert endpoints(reader) == {
        "pod-a": (60, False), "pod-b": (300, False), "pod-c": (None, True),
    }  # fmt: skip

    AutomationSwitch.objects.create(pk=1, paused=True)
    assert endpoints(reader) == {"pod-b": (300, False), "pod-c": (None, True)}
