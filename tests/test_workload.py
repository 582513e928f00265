"""The demo workload: real servers on port 0, real clients, real /metrics, a real process."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

import grpc
import grpc.aio
import psutil
import pytest
from grpc_channelz.v1 import channelz_pb2, channelz_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc
from demo.workload import KnobError, Knobs, Workload, WorkloadConfig, knobs_from_env
from demo.workload.__main__ import parse_args
from demo.workload.behaviour import Misbehaviour
from tests.support.sockets import taken_port
from tests.support.waiting import wait_for

Start = Callable[..., Awaitable[Workload]]
INVENTORY = "ballast.demo.v1.Inventory"
MiB = 1024 * 1024


@pytest.fixture
async def workloads() -> AsyncIterator[Start]:
    """A factory of started workloads on port 0, stopped at teardown.

    No /metrics server unless `config={"metrics_port": 0}`: stopping one takes half a second.
    """
    started: list[Workload] = []

    async def start(knobs: Knobs | None = None, **kwargs: object) -> Workload:
        config = {"pod": "pod-1", "metrics_port": None, **kwargs.pop("config", {})}  # type: ignore[dict-item]
        workload = Workload(WorkloadConfig(**config), knobs, **kwargs)  # type: ignore[arg-type]
        await workload.start()
        started.append(workload)
        return workload

    yield start
    for workload in started:
        await workload.stop(grace_s=0)


async def _items(n: int) -> AsyncIterator[pb.Item]:
    for i in range(n):
        yield pb.Item(id=f"i{i}")


async def _call_each_method(channel: grpc.aio.Channel) -> list[str]:
    """Calls all four methods; returns the pod names in their answers."""
    stub = pb_grpc.InventoryStub(channel)
    item = await stub.GetItem(pb.GetItemRequest(id="a", payload_bytes=10))
    watched = [i async for i in stub.WatchItems(pb.WatchItemsRequest(prefix="w", count=2))]
    summary = await stub.ImportItems(_items(3))
    synced = [i async for i in stub.SyncItems(_items(2))]
    assert len(item.payload) == 10 and [i.id for i in watched] == ["w0", "w1"]
    assert summary.received == 3 and [i.id for i in synced] == ["i0", "i1"]
    return [item.pod, *(i.pod for i in watched), summary.pod, *(i.pod for i in synced)]


async def test_it_answers_every_method_with_the_pod_name(workloads: Start) -> None:
    workload = await workloads(config={"pod": "inventory-7d9f-x2"})
    async with grpc.aio.insecure_channel(workload.address) as channel:
        assert set(await _call_each_method(channel)) == {"inventory-7d9f-x2"}


async def test_it_refuses_to_share_a_port_already_taken(workloads: Start) -> None:
    with taken_port() as address, pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:"):
        await workloads(config={"port": int(address.rpartition(":")[2])})


async def test_it_waits_the_latency_before_answering(workloads: Start) -> None:
    workload = await workloads(Knobs(latency_ms=200))
    async with grpc.aio.insecure_channel(workload.address) as channel:
        started = time.monotonic()
        await pb_grpc.InventoryStub(channel).GetItem(pb.GetItemRequest(id="a"))
        assert time.monotonic() - started >= 0.2


async def test_it_pays_latency_per_message_sent_and_draws_jitter_from_its_generator(
    workloads: Start,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    knobs = Knobs(latency_ms=10, jitter_ms=4)
    workload = await workloads(knobs, rng=random.Random(7), sleep=sleep)
    async with grpc.aio.insecure_channel(workload.address) as channel:
        await _call_each_method(channel)
    # GetItem 1, WatchItems 2 items, ImportItems 1 answer, SyncItems 2 echoes.
    replay = random.Random(7)
    assert slept == pytest.approx([(10 + replay.random() * 4) / 1000 for _ in range(6)])


async def test_it_burns_the_cpu_time_per_call(workloads: Start) -> None:
    workload = await workloads(Knobs(cpu_ms=50))
    async with grpc.aio.insecure_channel(workload.address) as channel:
        stub = pb_grpc.InventoryStub(channel)
        cpu_before_s = time.process_time()
        for _ in range(4):
            await stub.GetItem(pb.GetItemRequest(id="a"))
        assert time.process_time() - cpu_before_s >= 4 * 0.050


def test_it_keeps_the_leaked_memory_resident() -> None:
    with _process("--leak-bytes", str(16 * MiB)) as (process, ready):
        rss_before = psutil.Process(process.pid).memory_info().rss
        with grpc.insecure_channel(ready["grpc"]) as channel:
            for _ in range(8):
                pb_grpc.InventoryStub(channel).GetItem(pb.GetItemRequest(id="a"), timeout=10)
        grown = psutil.Process(process.pid).memory_info().rss - rss_before
        assert grown >= 0.9 * 8 * 16 * MiB


async def test_it_fails_every_call_with_the_code_at_error_rate_one(workloads: Start) -> None:
    workload = await workloads(Knobs(error_rate=1.0, error_code="UNAVAILABLE"))
    async with grpc.aio.insecure_channel(workload.address) as channel:
        stub = pb_grpc.InventoryStub(channel)
        calls = [
            lambda: stub.GetItem(pb.GetItemRequest(id="a")),
            lambda: _drain(stub.WatchItems(pb.WatchItemsRequest(count=3))),
            lambda: stub.ImportItems(_items(2)),
            lambda: _drain(stub.SyncItems(_items(2))),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call()
            assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
            assert failed.value.details() == "injected failure (error_rate=1)"


async def _drain(call: AsyncIterator[pb.Item]) -> list[pb.Item]:
    return [item async for item in call]


async def test_it_fails_the_share_of_calls_its_seeded_generator_picks(workloads: Start) -> None:
    workload = await workloads(Knobs(error_rate=0.5), rng=random.Random(42))
    async with grpc.aio.insecure_channel(workload.address) as channel:
        failed = await _failures(pb_grpc.InventoryStub(channel), 200)
    replay = random.Random(42)
    assert failed == [replay.random() < 0.5 for _ in range(200)]
    assert sum(failed) == 103  # of 200: about half, as error_rate 0.5 says


async def _failures(stub: pb_grpc.InventoryStub, n: int) -> list[bool]:
    failed = []
    for _ in range(n):
        try:
            await stub.GetItem(pb.GetItemRequest(id="a"))
            failed.append(False)
        except grpc.aio.AioRpcError as err:
            assert err.code() is grpc.StatusCode.UNAVAILABLE
            failed.append(True)
    return failed


async def test_it_changes_behaviour_when_knobs_are_set_at_run_time(workloads: Start) -> None:
    workload = await workloads(Knobs(latency_ms=1))
    async with grpc.aio.insecure_channel(workload.address) as channel:
        stub, knobs = pb_grpc.InventoryStub(channel), pb_grpc.KnobsStub(channel)
        assert await _failures(stub, 3) == [False] * 3
        after = await knobs.Set(pb.KnobSettings(error_rate=1, error_code="RESOURCE_EXHAUSTED"))
        assert (after.latency_ms, after.error_rate, after.error_code) == (
            1,
            1,
            "RESOURCE_EXHAUSTED",
        )
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetItem(pb.GetItemRequest(id="a"))
        assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        await knobs.Set(pb.KnobSettings(error_rate=0))
        assert await _failures(stub, 3) == [False] * 3
        assert (await knobs.Get(pb.GetKnobsRequest())).error_code == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (pb.KnobSettings(error_rate=1.5), "error_rate must be between 0 and 1"),
        (pb.KnobSettings(latency_ms=-1), "latency_ms must be a finite number ≥ 0"),
        (pb.KnobSettings(cpu_ms=float("nan")), "cpu_ms must be a finite number ≥ 0"),
        (pb.KnobSettings(leak_bytes=-5), "leak_bytes must be ≥ 0"),
        (pb.KnobSettings(error_code="OK"), "error_code must be a gRPC status code other than OK"),
        (pb.KnobSettings(error_code="unavailable"), "got 'unavailable'"),
    ],
    ids=["error_rate", "latency_ms", "cpu_ms", "leak_bytes", "error_code_ok", "error_code_case"],
)
async def test_it_rejects_bad_knob_values_with_invalid_argument(
    workloads: Start, settings: pb.KnobSettings, message: str
) -> None:
    workload = await workloads(Knobs(latency_ms=3))
    async with grpc.aio.insecure_channel(workload.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await pb_grpc.KnobsStub(channel).Set(settings)
    assert rejected.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (rejected.value.details() or "")
    assert workload.misbehaviour.knobs == Knobs(latency_ms=3)


async def test_it_serves_health_and_turns_not_serving_when_it_stops(workloads: Start) -> None:
    workload = await workloads(Knobs(latency_ms=300))
    serving = health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(workload.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", INVENTORY):
            check = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert check.status == serving
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == serving
        in_flight = pb_grpc.InventoryStub(channel).GetItem(pb.GetItemRequest(id="a"))
        started = _method("UNARY", "GetItem")
        await wait_for(lambda: _sample(workload, "grpc_server_started_total", started) == 1)
        stopping = asyncio.create_task(workload.stop(grace_s=5))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        assert (await in_flight).pod == "pod-1"  # the grace let it finish
        await stopping


async def test_it_lists_its_services_by_reflection(workloads: Start) -> None:
    workload = await workloads()
    async with grpc.aio.insecure_channel(workload.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in answer.list_services_response.service}
    assert {INVENTORY, "ballast.demo.v1.Knobs", "grpc.health.v1.Health"} <= names


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(address: str | None) -> tuple[dict[str, str], Series]:
    """GET /metrics over HTTP (off the loop: the workload keeps serving): types and series."""

    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return str(response.read().decode())

    families = list(text_string_to_metric_families(await asyncio.to_thread(get)))
    types = {family.name: family.type for family in families}
    series = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return types, series


def _sample(workload: Workload, name: str, labels: dict[str, str]) -> float | None:
    """A series' value read in process (the server records a call as its status goes out)."""
    return workload.registry.get_sample_value(name, labels)


def _method(kind: str, method: str, **more: str) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": INVENTORY, "grpc_method": method, **more}


HANDLED = "grpc_server_handled_total"


async def test_it_exports_conventional_grpc_server_metrics(workloads: Start) -> None:
    workload = await workloads(Knobs(leak_bytes=1000), config={"pod": "pod-m", "metrics_port": 0})
    async with grpc.aio.insecure_channel(workload.address) as channel:
        for _ in range(2):
            await _call_each_method(channel)
        await pb_grpc.KnobsStub(channel).Set(pb.KnobSettings(error_rate=1, error_code="ABORTED"))
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.InventoryStub(channel).GetItem(pb.GetItemRequest(id="a"))
    aborted = _method("UNARY", "GetItem", grpc_code="ABORTED")
    await wait_for(lambda: _sample(workload, HANDLED, aborted) == 3, what="3 ABORTED")
    types, series = await _scrape(workload.metrics_address)

    def value(name: str, kind: str, method: str, **more: str) -> float:
        return series[(name, frozenset(_method(kind, method, **more).items()))]

    assert types["grpc_server_started"] == types["grpc_server_handled"] == "counter"
    assert types["grpc_server_handling_seconds"] == "histogram"
    assert value("grpc_server_started_total", "UNARY", "GetItem") == 5
    assert value(HANDLED, "UNARY", "GetItem", grpc_code="OK") == 2
    for kind, method in [("SERVER_STREAM", "WatchItems"), ("CLIENT_STREAM", "ImportItems"),
                         ("BIDI_STREAM", "SyncItems")]:  # fmt: skip
        assert value("grpc_server_started_total", kind, method) == 2
        assert value(HANDLED, kind, method, grpc_code="OK") == 2
        assert value("grpc_server_handling_seconds_count", kind, method) == 2
        assert value("grpc_server_handling_seconds_bucket", kind, method, le="+Inf") == 2
    assert value("grpc_server_msg_received_total", "CLIENT_STREAM", "ImportItems") == 6
    assert value("grpc_server_msg_sent_total", "SERVER_STREAM", "WatchItems") == 4
    assert value("grpc_server_msg_sent_total", "UNARY", "GetItem") == 2  # not the failed ones
    # 6 messages sent × 2 rounds, and the 3 failed calls paid for the answer they did not send.
    assert series[("ballast_demo_leaked_bytes", frozenset())] == 15 * 1000
    assert series[("ballast_demo_pod_info", frozenset({("pod", "pod-m")}))] == 1


async def test_it_counts_calls_the_client_cancelled(workloads: Start) -> None:
    in_latency = asyncio.Event()

    async def stuck(seconds: float) -> None:  # the latency of a call the client gives up on
        in_latency.set()
        await asyncio.Event().wait()

    workload = await workloads(Knobs(latency_ms=1), sleep=stuck)
    async with grpc.aio.insecure_channel(workload.address) as channel:
        stub = pb_grpc.InventoryStub(channel)
        calls = {
            ("UNARY", "GetItem"): lambda: stub.GetItem(pb.GetItemRequest(id="a")),
            ("SERVER_STREAM", "WatchItems"): lambda: stub.WatchItems(pb.WatchItemsRequest(count=2)),
            ("CLIENT_STREAM", "ImportItems"): lambda: stub.ImportItems(_items(2)),
            ("BIDI_STREAM", "SyncItems"): lambda: stub.SyncItems(_items(2)),
        }
        for (kind, method), start in calls.items():
            in_latency.clear()
            call = start()
            await in_latency.wait()
            call.cancel()
            await _counted_once(workload, _method(kind, method, grpc_code="CANCELLED"))


async def test_it_counts_streams_cancelled_between_requests_as_cancelled(
    workloads: Start,
) -> None:
    workload = await workloads()
    async with grpc.aio.insecure_channel(workload.address) as channel:
        for _ in range(20):
            requests: asyncio.Queue[pb.Item] = asyncio.Queue()
            sync = pb_grpc.InventoryStub(channel).SyncItems(_from_queue(requests))
            await requests.put(pb.Item(id="a"))
            await sync.read()
            sync.cancel()  # the server is waiting for the next request
    ok, cancelled = (_method("BIDI_STREAM", "SyncItems", grpc_code=c) for c in ("OK", "CANCELLED"))
    await wait_for(
        lambda: _sample(workload, HANDLED, ok) + _sample(workload, HANDLED, cancelled) == 20
    )
    # grpc.aio shows the servicer a plain end of input here; see interceptor._settle (~99 %).
    assert _sample(workload, HANDLED, cancelled) >= 15


async def _from_queue(queue: asyncio.Queue[pb.Item]) -> AsyncIterator[pb.Item]:
    while True:
        yield await queue.get()


async def _counted_once(workload: Workload, labels: dict[str, str]) -> None:
    await wait_for(lambda: _sample(workload, HANDLED, labels) == 1, what=f"{HANDLED}{labels}")


async def _server_sockets(channel: grpc.aio.Channel, port: int) -> set[int]:
    """Ids of the connections accepted on `port`, as channelz on the server lists them."""
    channelz = channelz_pb2_grpc.ChannelzStub(channel)
    ids = set()
    for server in (await channelz.GetServers(channelz_pb2.GetServersRequest())).server:
        request = channelz_pb2.GetServerSocketsRequest(server_id=server.ref.server_id)
        for ref in (await channelz.GetServerSockets(request)).socket_ref:
            try:
                socket_request = channelz_pb2.GetSocketRequest(socket_id=ref.socket_id)
                got = await channelz.GetSocket(socket_request)
            except grpc.aio.AioRpcError as err:  # closed between the listing and the look-up
                if err.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            if got.socket.local.tcpip_address.port == port:
                ids.add(ref.socket_id)
    return ids


async def test_it_makes_clients_reconnect_after_the_max_connection_age(workloads: Start) -> None:
    config = {"max_connection_age_s": 0.2, "max_connection_age_grace_s": 1.0}
    workload = await workloads(config=config)
    assert workload.port is not None
    async with grpc.aio.insecure_channel(workload.address) as channel:
        stub = pb_grpc.InventoryStub(channel)
        await stub.GetItem(pb.GetItemRequest(id="first"))
        first = await _server_sockets(channel, workload.port)
        seen = set(first)
        deadline = time.monotonic() + 10
        # Every call must succeed while connections are replaced. wait_for_ready lets a
        # call that meets the GOAWAY wait for the new connection instead of failing with
        # UNAVAILABLE (grpc-go#2767), as a client of such a server should.
        while seen <= first:
            assert time.monotonic() < deadline, "the connection was never replaced"
            again = pb.GetItemRequest(id="again")
            item = await stub.GetItem(again, wait_for_ready=True, timeout=5)
            assert item.pod == "pod-1"
            seen |= await _server_sockets(channel, workload.port)
            await asyncio.sleep(0.02)


@contextmanager
def _process(*flags: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """`python -m demo.workload` on port 0: the process and its JSON line, once serving."""
    args = [sys.executable, "-m", "demo.workload", "--port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(
        [*args, "--name", "pod-proc", *flags], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the workload exited with {process.wait()} before serving"
        yield process, json.loads(line)
    finally:
        process.kill()
        process.wait()


def test_it_runs_as_a_process_and_stops_cleanly_on_sigterm() -> None:
    with _process("--latency-ms", "1") as (process, ready):
        assert ready["pod"] == "pod-proc" and ready["grpc"].startswith("127.0.0.1:")
        with grpc.insecure_channel(ready["grpc"]) as channel:
            item = pb_grpc.InventoryStub(channel).GetItem(pb.GetItemRequest(id="a"), timeout=10)
        assert item.pod == "pod-proc"
        with urllib.request.urlopen(f"http://{ready['metrics']}/metrics", timeout=5) as response:
            assert b"grpc_server_handled_total" in response.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_it_takes_knobs_from_the_environment_and_flags_win() -> None:
    env = {"BALLAST_KNOB_LATENCY_MS": "100", "BALLAST_KNOB_ERROR_CODE": "INTERNAL",
           "BALLAST_KNOB_LEAK_BYTES": "2048"}  # fmt: skip
    _, config, knobs = parse_args(["--name", "p", "--latency-ms", "5", "--cpu-ms", "2"], env)
    assert knobs == Knobs(latency_ms=5, cpu_ms=2, leak_bytes=2048, error_code="INTERNAL")
    assert config.pod == "p" and config.max_connection_age_s is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--error-code", "NOPE"], {}, "argument --error-code: error_code must be a gRPC status"),
        (["--error-rate", "2"], {}, "error_rate must be between 0 and 1, got 2.0"),
        ([], {"BALLAST_KNOB_CPU_MS": "lots"}, "BALLAST_KNOB_CPU_MS='lots': not a valid float"),
        ([], {"BALLAST_KNOB_JITTER_MS": "-1"}, "BALLAST_KNOB_JITTER_MS='-1': jitter_ms must be"),
        (["--max-connection-age-s", "0"], {}, "max_connection_age_s must be a positive number"),
    ],
)
def test_it_exits_2_naming_a_bad_setting(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, env)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_it_documents_every_knob_and_its_variable_in_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--help"], {})
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for knob in ("latency_ms", "jitter_ms", "cpu_ms", "leak_bytes", "error_rate", "error_code"):
        assert f"--{knob.replace('_', '-')}" in out and f"BALLAST_KNOB_{knob.upper()}" in out
    assert "--max-connection-age-s" in out and "SIGTERM" in out


def test_it_validates_knobs_wherever_they_come_from() -> None:
    with pytest.raises(KnobError, match="leak_bytes must be an integer"):
        Knobs(leak_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(KnobError, match=r"BALLAST_KNOB_ERROR_RATE='1\.01'"):
        knobs_from_env({"BALLAST_KNOB_ERROR_RATE": "1.01"})
    with pytest.raises(KnobError, match="unexpected keyword argument 'latency'"):
        Knobs().changed(latency=3)


async def test_it_draws_a_failure_only_when_the_error_rate_is_set() -> None:
    rng = random.Random(1)
    misbehaviour = Misbehaviour(Knobs(), rng=rng)
    assert misbehaviour.draw_failure() is None
    assert rng.getstate() == random.Random(1).getstate()  # no draw: runs stay replayable
