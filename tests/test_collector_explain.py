"""The collector's "why" of a pod, from admin API snapshots (one per replica)."""

from __future__ import annotations

from balancer.admin.v1 import admin_pb2
from dashboard.collector.explain import explain_pod, known_pods

READY = admin_pb2.ENDPOINT_STATE_READY
EJECTED = admin_pb2.ENDPOINT_STATE_EJECTED


def snapshot(policy: str, *endpoints: admin_pb2.EndpointSnapshot) -> admin_pb2.Snapshot:
    basis = "weights" if policy in ("round_robin", "random") else "weights at equal load"
    cluster = admin_pb2.ClusterSnapshot(
        name="svc", policy=policy, share_basis=basis, endpoints=endpoints
    )
    return admin_pb2.Snapshot(balancer_id="b", clusters=[cluster])


def test_it_sums_up_slow_start_and_the_share_in_words() -> None:
    ep = admin_pb2.EndpointSnapshot(
        endpoint_id="pod-a", state=READY, state_reason="undrained by operator", weight=200,
        slow_start_factor=0.25, slow_start_ends_unix_ms=1_000, effective_weight=50,
        expected_share=0.2, in_flight=3,
    )  # fmt: skip
    why = explain_pod({"b0": snapshot("round_robin", ep), "b1": None}, "svc", "pod-a")
    assert why is not None
    assert why["summary"] == (
        "READY (undrained by operator); weight 200 × slow start 0.25 = 50;"
        " expected share 20.0 % (round_robin: by weights); in flight 3"
    )
    (replica,) = why["replicas"]
    assert (replica["replica"], replica["slow_start_ends"], replica["last_ejected"]) == (
        "b0", 1_000, None
    )  # fmt: skip


def test_it_names_the_peak_ewma_penalty_and_the_ejections() -> None:
    ep = admin_pb2.EndpointSnapshot(
        endpoint_id="pod-b", state=EJECTED, state_reason="5 consecutive failures", weight=100,
        ewma_latency_ms=5000, latency_penalty=40.5, ejections_total=2,
        last_ejected_unix_ms=7, last_ejection_reason="5 consecutive failures; ejected for 60 s",
        slow_start_factor=1.0,
    )  # fmt: skip
    why = explain_pod({"b0": snapshot("peak_ewma", ep)}, "svc", "pod-b")
    assert why is not None
    assert why["share_basis"] == "weights at equal load"
    assert why["summary"] == (
        "EJECTED (5 consecutive failures); no new requests; latency estimate 5000.0 ms;"
        " 40.50× slower than the fastest: gets less; ejected 2× (last: 5 consecutive"
        " failures; ejected for 60 s)"
    )
    assert why["replicas"][0]["last_ejected"] == 7


def test_it_finds_no_pod_that_no_replica_has() -> None:
    snapshots = {"b0": snapshot("round_robin", admin_pb2.EndpointSnapshot(endpoint_id="x"))}
    assert explain_pod(snapshots, "svc", "pod-z") is None
    assert explain_pod(snapshots, "other", "x") is None
    assert known_pods(snapshots, "svc") == ["x"]
