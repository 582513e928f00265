"""The fake API server answers the official client as the API server does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from tests.kubernetes.fakeapi import FakeKubernetes, endpoint


def _client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig), context="fake", client_configuration=configuration
    )
    return client.ApiClient(configuration)


def test_it_lists_slices_by_service_label(fake_api: FakeKubernetes, kubeconfig: Path) -> None:
    fake_api.put_slice("inv-a", "inventory", [endpoint("10.0.0.1", "inv-1")], namespace="shop")
    fake_api.put_slice("other-a", "other", [endpoint("10.0.0.9", "o-1")], namespace="shop")
    api = client.DiscoveryV1Api(_client(kubeconfig))

    found = api.list_namespaced_endpoint_slice(
        "shop", label_selector="kubernetes.io/service-name=inventory"
    )

    assert [s.metadata.name for s in found.items] == ["inv-a"]
    assert found.items[0].endpoints[0].target_ref.name == "inv-1"
    assert int(found.metadata.resource_version) == fake_api.resource_version


def test_it_streams_watch_events_and_bookmarks(fake_api: FakeKubernetes, kubeconfig: Path) -> None:
    api = client.DiscoveryV1Api(_client(kubeconfig))
    since = fake_api.resource_version
    stream = watch.Watch().stream(
        api.list_namespaced_endpoint_slice,
        "shop",
        label_selector="kubernetes.io/service-name=inventory",
        resource_version=str(since),
        allow_watch_bookmarks=True,
        timeout_seconds=2,
    )
    threading.Timer(
        0.3,
        lambda: fake_api.put_slice(
            "inv-a", "inventory", [endpoint("10.0.0.1", "inv-1")], namespace="shop"
        ),
    ).start()

    types = [event["type"] for event in stream]

    assert "ADDED" in types
    assert "BOOKMARK" in types


def test_it_answers_410_to_a_watch_from_compacted_history(
    fake_api: FakeKubernetes, kubeconfig: Path
) -> None:
    api = client.DiscoveryV1Api(_client(kubeconfig))
    old = fake_api.resource_version
    fake_api.put_slice("inv-a", "inventory", [], namespace="shop")
    fake_api.compact()

    with pytest.raises(client.ApiException) as raised:
        for _ in watch.Watch().stream(
            api.list_namespaced_endpoint_slice, "shop", resource_version=str(old),
            timeout_seconds=2,
        ):  # fmt: skip
            pass

    assert raised.value.status == 410


def test_it_refuses_a_client_without_the_token(fake_api: FakeKubernetes) -> None:
    configuration = client.Configuration(host=fake_api.url)
    api = client.CoreV1Api(client.ApiClient(configuration))

    with pytest.raises(client.ApiException) as raised:
        api.list_namespaced_pod("shop")

    assert raised.value.status == 401
