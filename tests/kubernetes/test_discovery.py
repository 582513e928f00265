"""EndpointSlice discovery: the platform's watch as the balancer consumes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address
from platforms.kubernetes import KubernetesPlatform
from tests.kubernetes.fakeapi import FakeKubernetes, endpoint
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(60)


class Follower:
    """Collects a watch's updates in a task, and keeps the endpoint set they make."""

    def __init__(self, updates: AsyncIterator[Update]) -> None:
        self.updates: list[Update] = []
        self.endpoints: dict[str, Address] = {}
        self._source = updates
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        async for update in self._source:
            self.updates.append(update)
            if isinstance(update, Reset):
                self.endpoints = {a.endpoint_id: a for a in update.addresses}
            elif isinstance(update, Add):
                self.endpoints.update({a.endpoint_id: a for a in update.addresses})
            else:
                for endpoint_id in update.endpoint_ids:
                    self.endpoints.pop(endpoint_id, None)

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task
        await self._source.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def follow(platform: KubernetesPlatform) -> AsyncIterator[object]:
    started: list[Follower] = []

    def start(service: str = "inventory", **kwargs: object) -> Follower:
        follower = Follower(platform.watch_service(service, **kwargs))  # type: ignore[arg-type]
        started.append(follower)
        return follower

    yield start
    for follower in started:
        await follower.stop()


def put(fake: FakeKubernetes, name: str, *endpoints: dict[str, object]) -> None:
    fake.put_slice(name, "inventory", list(endpoints), namespace="shop")


def pods(follower: Follower) -> dict[str, tuple[bool, bool]]:
    """pod → (ready, terminating)."""
    return {i: (a.ready, a.terminating) for i, a in follower.endpoints.items()}


async def test_it_starts_with_a_reset_of_the_listed_endpoints(
    fake_api: FakeKubernetes, follow: object
) -> None:
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1"), endpoint("10.0.0.2", "inv-2"))

    follower = follow()  # type: ignore[operator]
    await wait_for(lambda: follower.updates, 10, "the first update")

    first = follower.updates[0]
    assert isinstance(first, Reset)
    assert {(a.pod_name, a.target, a.ready) for a in first.addresses} == {
        ("inv-1", "10.0.0.1:50051", True),
        ("inv-2", "10.0.0.2:50051", True),
    }


async def test_it_follows_endpoints_appearing_not_ready_terminating_and_gone(
    fake_api: FakeKubernetes, follow: object
) -> None:
    follower = follow()  # type: ignore[operator]
    await wait_for(lambda: follower.updates, 10, "the first update")

    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1", ready=False))
    await wait_for(lambda: pods(follower) == {"inv-1": (False, False)}, 10, "not ready")
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1"))
    await wait_for(lambda: pods(follower) == {"inv-1": (True, False)}, 10, "ready")
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1", ready=False, serving=True,
                                    terminating=True))  # fmt: skip
    await wait_for(lambda: pods(follower) == {"inv-1": (True, True)}, 10, "terminating")
    put(fake_api, "inv-a")
    await wait_for(lambda: not follower.endpoints, 10, "gone")

    assert isinstance(follower.updates[-1], Remove)
    assert follower.updates[-1].endpoint_ids == ("inv-1",)


async def test_it_merges_slices_and_an_endpoint_moving_between_them_stays(
    fake_api: FakeKubernetes, follow: object
) -> None:
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1"), endpoint("10.0.0.2", "inv-2"))
    put(fake_api, "inv-b", endpoint("10.0.0.3", "inv-3"))
    follower = follow()  # type: ignore[operator]
    await wait_for(lambda: len(follower.endpoints) == 3, 10, "three endpoints from two slices")

    # The controller moves inv-2 to slice b (added there first, then taken out of a).
    put(fake_api, "inv-b", endpoint("10.0.0.3", "inv-3"), endpoint("10.0.0.2", "inv-2"))
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1"))
    put(fake_api, "inv-c", endpoint("10.0.0.4", "inv-4"))
    await wait_for(lambda: "inv-4" in follower.endpoints, 10, "the marker after the move")

    assert set(follower.endpoints) == {"inv-1", "inv-2", "inv-3", "inv-4"}
    assert not [u for u in follower.updates if isinstance(u, Remove)]
    fake_api.delete_slice("inv-b", namespace="shop")
    await wait_for(lambda: set(follower.endpoints) == {"inv-1", "inv-4"}, 10, "slice b gone")


async def test_it_resumes_a_watch_cut_mid_stream_without_losing_an_update(
    fake_api: FakeKubernetes, follow: object
) -> None:
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1"))
    follower = follow()  # type: ignore[operator]
    await wait_for(lambda: fake_api.open_watches() == 1, 10, "the watch")

    fake_api.fail_requests = 2  # the API is briefly down: retried after a backoff
    fake_api.cut_watches(abrupt=True)
    for i in range(2, 6):  # changes while no watch is open
        put(fake_api, "inv-a", *(endpoint(f"10.0.0.{n}", f"inv-{n}") for n in range(1, i + 1)))
    await wait_for(lambda: len(follower.endpoints) == 5, 15, "every change made while cut")

    lists = fake_api.received("GET", "endpointslices$")
    assert sum(1 for r in lists if r.query.get("watch") != "true") == 1  # resumed, not re-listed
    adds = [u for u in follower.updates if isinstance(u, Add)]
    assert [sorted(a.endpoint_id for a in u.addresses) for u in adds] == [
        ["inv-2"], ["inv-3"], ["inv-4"], ["inv-5"]
    ]  # fmt: skip


async def test_it_relists_on_410_and_resets_to_the_truth(
    fake_api: FakeKubernetes, follow: object
) -> None:
    put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1"), endpoint("10.0.0.2", "inv-2"))
    follower = follow()  # type: ignore[operator]
    await wait_for(lambda: len(follower.endpoints) == 2, 10, "two endpoints")
    fake_api.fail_requests = 50  # keep the watcher out while history moves on
    fake_api.cut_watches(abrupt=True)

    put(fake_api, "inv-a", endpoint("10.0.0.2", "inv-2", ready=False))
    put(fake_api, "inv-b", endpoint("10.0.0.3", "inv-3"))
    fake_api.compact()
    fake_api.fail_requests = 0
    await wait_for(lambda: len(follower.updates) >= 2, 15, "the update after the 410")

    reset = follower.updates[1]
    assert isinstance(reset, Reset)
    assert {(a.pod_name, a.ready) for a in reset.addresses} == {("inv-2", False), ("inv-3", True)}
    assert len(follower.updates) == 2  # the Reset alone: nothing lost, nothing twice


async def test_it_resumes_after_the_servers_watch_timeout_from_a_bookmark(
    fake_api: FakeKubernetes, follow: object
) -> None:
    follow()  # type: ignore[operator]
    await wait_for(lambda: fake_api.open_watches() == 1, 10, "the watch")
    fake_api.put_slice("other", "other", [], namespace="shop")  # only a bookmark tells
    await asyncio.sleep(0.5)  # bookmarks come every 0.2 s
    bookmarked = str(fake_api.resource_version)

    fake_api.cut_watches(abrupt=False)
    await wait_for(lambda: len(fake_api.received("GET", "endpointslices$")) >= 3, 10, "resume")

    resumed = fake_api.received("GET", "endpointslices$")[-1]
    assert resumed.query["resourceVersion"] == bookmarked
    assert resumed.query["allowWatchBookmarks"] == "true"


async def test_it_uses_the_named_port(fake_api: FakeKubernetes, follow: object) -> None:
    fake_api.put_slice(
        "inv-a", "inventory", [endpoint("10.0.0.1", "inv-1")], namespace="shop",
        ports=[{"name": "metrics", "port": 9100}, {"name": "api", "port": 8443}],
    )  # fmt: skip

    follower = follow(port="api")  # type: ignore[operator]
    await wait_for(lambda: follower.endpoints, 10, "the endpoint")

    assert follower.endpoints["inv-1"].target == "10.0.0.1:8443"


async def test_it_keeps_the_order_of_a_burst_of_changes(
    fake_api: FakeKubernetes, follow: object
) -> None:
    follower = follow()  # type: ignore[operator]
    await wait_for(lambda: fake_api.open_watches() == 1, 10, "the watch")

    for i in range(60):  # the endpoint flaps; the last word is "ready"
        put(fake_api, "inv-a", endpoint("10.0.0.1", "inv-1", ready=i % 2 == 1))
    await wait_for(lambda: len(follower.updates) == 61, 15, "every change")

    readiness = [u.addresses[0].ready for u in follower.updates[1:] if isinstance(u, Add)]
    assert readiness == [i % 2 == 1 for i in range(60)]
    assert pods(follower) == {"inv-1": (True, False)}


async def test_it_closes_its_watch_when_the_consumer_stops(
    fake_api: FakeKubernetes, platform: KubernetesPlatform
) -> None:
    follower = Follower(platform.watch_service("inventory"))
    await wait_for(lambda: fake_api.open_watches() == 1, 10, "the watch")

    await follower.stop()

    await wait_for(lambda: fake_api.open_watches() == 0, 10, "no watch left open")
    requests = len(fake_api.requests)
    await asyncio.sleep(0.5)
    assert len(fake_api.requests) == requests  # and none started again
