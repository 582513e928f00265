"""The pure parts: slices → addresses, pods → facts, settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from balancer.discovery import Add, Remove, Reset
from platforms.base import PlatformError
from platforms.kubernetes import KubernetesPlatform, KubernetesSettings
from platforms.kubernetes.config import split_name
from platforms.kubernetes.platform import rollout_state
from platforms.kubernetes.pods import pod_facts
from platforms.kubernetes.slices import SliceView, endpoint_address, slice_port
from tests.kubernetes.workloads import deployment, pod


def _slice(name: str, *endpoints: dict[str, object], rv: str = "1") -> dict[str, object]:
    return {"metadata": {"name": name, "resourceVersion": rv},
            "ports": [{"name": "grpc", "port": 7000}], "endpoints": list(endpoints)}  # fmt: skip


def test_unset_conditions_read_as_the_api_says() -> None:
    """Unset `ready` is unknown, read as ready; unset `serving` follows ready."""
    address = endpoint_address({"addresses": ["10.0.0.1"]}, 7000)

    assert address is not None
    assert (address.ready, address.terminating, address.pod_name) == (True, False, None)
    assert address.endpoint_id == "10.0.0.1:7000"


def test_a_terminating_endpoint_that_no_longer_serves_is_not_ready() -> None:
    conditions = {"ready": False, "serving": False, "terminating": True}
    address = endpoint_address({"addresses": ["10.0.0.1"], "conditions": conditions}, 7000)

    assert address is not None and (address.ready, address.terminating) == (False, True)


def test_ipv6_endpoints_get_brackets() -> None:
    address = endpoint_address({"addresses": ["fd00::1"]}, 7000)

    assert address is not None and address.target == "[fd00::1]:7000"


@pytest.mark.parametrize(
    ("ports", "wanted", "port"),
    [
        ([{"name": "http", "port": 80}], None, 80),  # the only port
        ([{"name": "http", "port": 80}, {"name": "grpc", "port": 81}], None, 81),
        ([{"name": "http", "port": 80}, {"name": "admin", "port": 81}], None, None),
        ([{"name": "http", "port": 80}], "grpc", None),
        ([{"name": "http", "port": 80}], 9000, 9000),
    ],
)
def test_it_finds_the_port(ports: list[object], wanted: int | str | None, port: int | None) -> None:
    assert slice_port({"ports": ports}, wanted) == port


def test_a_slice_without_the_port_is_left_out_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = SliceView("shop/inventory", "api")
    bad = {**_slice("s1", {"addresses": ["10.0.0.1"]}), "ports": [{"name": "x", "port": 1}]}

    assert view.listed([bad]) == [Reset(())]
    view.changed("MODIFIED", bad)
    assert sum("has no port 'api'" in r.message for r in caplog.records) == 1


def test_it_diffs_the_merged_set() -> None:
    view = SliceView("shop/inventory", None)
    a1 = {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "a"}}
    b1 = {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "b"}}
    view.listed([_slice("s1", a1)])

    assert view.changed("MODIFIED", _slice("s1", a1, rv="2")) == []  # nothing changed
    added = view.changed("ADDED", _slice("s2", b1, rv="3"))
    assert [type(u) for u in added] == [Add]
    gone = view.changed("DELETED", _slice("s1", a1, rv="4"))
    assert gone == [Remove(("a",))]


def test_pod_facts_without_limits_or_metrics_are_missing_not_zero() -> None:
    facts = pod_facts(pod("p", memory_limit=None), "inventory", None)

    assert (facts.memory_limit_bytes, facts.cpu_millicores, facts.memory_bytes) == (None,) * 3
    assert facts.last_termination_reason is None and facts.restart_count == 0


def test_rollout_state_speaks_kubectls_words() -> None:
    d = deployment("inventory", replicas=3)
    d["metadata"]["generation"] = 2

    assert rollout_state(d) == ("waiting for the deployment spec update to be observed", False)
    d["status"].update(observedGeneration=2, updatedReplicas=3, replicas=3, availableReplicas=2)
    assert rollout_state(d) == ("2 of 3 updated replicas are available", False)


def test_names_are_namespaced_or_in_the_default_namespace() -> None:
    assert split_name("inventory", "shop") == ("shop", "inventory")
    assert split_name("prod/inventory", "shop") == ("prod", "inventory")
    with pytest.raises(PlatformError, match="not 'name' or 'namespace/name'"):
        split_name("a/b/c", "shop")


def test_settings_choose_in_cluster_in_a_pod_else_the_kubeconfig() -> None:
    in_pod = KubernetesSettings.from_environment({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    local = KubernetesSettings.from_environment({"KUBECONFIG": "/etc/kube.yaml"})
    chosen = KubernetesSettings.from_environment(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, kubeconfig="/x", context="prod"
    )

    assert (in_pod.in_cluster, in_pod.kubeconfig) == (True, None)
    assert (local.in_cluster, local.kubeconfig) == (False, "/etc/kube.yaml")
    assert (chosen.in_cluster, chosen.kubeconfig, chosen.context) == (False, "/x", "prod")


def test_the_default_namespace_is_the_contexts(kubeconfig: Path) -> None:
    platform = KubernetesPlatform(KubernetesSettings(kubeconfig=str(kubeconfig)))

    assert platform.namespace == "shop"


def test_a_missing_context_is_named(kubeconfig: Path) -> None:
    with pytest.raises(PlatformError, match="cannot configure the Kubernetes client"):
        KubernetesPlatform(KubernetesSettings(kubeconfig=str(kubeconfig), context="nope"))


def test_the_backoff_doubles_with_jitter_up_to_its_ceiling_and_resets() -> None:
    import random

    from platforms.kubernetes.watch import Backoff

    backoff = Backoff(0.5, 30.0, random.Random(3))
    delays = [backoff.next_delay_s() for _ in range(10)]

    ceilings = [min(30.0, 0.5 * 2**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) > 1  # jittered
    backoff.reset()
    assert backoff.next_delay_s() <= 0.5
