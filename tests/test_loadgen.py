"""The load generator: long-lived clients, open-loop pacing, method mix, counts per pod and code."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from balancer.endpoint import Address
from demo.l4 import L4Service
from demo.loadgen import ClientSpec, LoadGenerator, parse_mix
from tests.support.inventory import dead_port
from tests.support.waiting import wait_for

# `python -m demo.loadgen` runs from the checkout, installed or not.
ROOT = Path(__file__).resolve().parents[1]
# Method of the load generator → the Inventory method it calls.
RPC = {
    "unary": "GetItem",
    "server_stream": "WatchItems",
    "client_stream": "ImportItems",
    "bidi": "SyncItems",
}


@pytest.fixture
async def generators() -> AsyncIterator[Callable[..., LoadGenerator]]:
    """A factory of seeded LoadGenerators, stopped at teardown whatever the test did."""
    made: list[LoadGenerator] = []

    def make(clients: list[ClientSpec], seed: int = 1) -> LoadGenerator:
        generator = LoadGenerator(clients, rng=random.Random(seed))
        made.append(generator)
        return generator

    yield make
    for generator in made:
        await generator.stop(grace_s=0)


def specs(target: str, n: int, rate_per_s: float, **kwargs: object) -> list[ClientSpec]:
    return [ClientSpec(f"client-{i}", target, rate_per_s, **kwargs) for i in range(n)]  # type: ignore[arg-type]


async def test_it_makes_rate_times_duration_calls_per_client(inventories, generators):
    pod = await inventories("pod-a")
    generator = generators(specs(pod.address, 4, rate_per_s=20))
    stats = await generator.run(duration_s=1.0)
    # The schedule, not the clock, decides how many calls there are: a tick every
    # 1/rate s from a random phase in the first interval, so exactly rate × duration
    # per client, however loaded the machine. Late ticks are sent late, not dropped.
    assert [c.attempted for c in stats.clients] == [20, 20, 20, 20]
    assert (stats.sent, stats.skipped, stats.in_flight) == (80, 0, 0)
    assert stats.codes == {"OK": 80}
    assert pod.total_calls == 80
    # A lower bound only: the calls were spread over the second, not sent at once.
    assert stats.elapsed_s >= 0.95


async def test_it_calls_until_stopped_and_accounts_for_every_tick(inventories, generators):
    pod = await inventories("pod-a")
    generator = generators(specs(pod.address, 2, rate_per_s=100))
    await generator.start()
    await wait_for(lambda: generator.stats().ok >= 50, what="50 calls answered")
    await generator.stop()
    stats = generator.stats()
    assert stats.attempted == stats.sent + stats.skipped
    assert stats.completed == stats.sent  # calls in flight got their grace time to end
    assert stats.in_flight == 0
    assert pod.total_calls == stats.ok


async def test_it_draws_methods_in_the_shares_of_the_mix(inventories, generators):
    pod = await inventories("pod-a")
    mix = parse_mix("unary=6,server_stream=2,client_stream=1,bidi=1")
    generator = generators(specs(pod.address, 2, rate_per_s=200, mix=mix), seed=4)
    stats = await generator.run(duration_s=1.0)

    assert stats.sent == 400
    shares = {m: n / stats.sent for m, n in stats.methods.items()}
    for method, weight in mix.items():
        assert shares[method] == pytest.approx(weight / 10, abs=0.05), method
    assert stats.codes == {"OK": 400}  # every kind of call works end to end
    assert {RPC[m]: n for m, n in stats.methods.items()} == pod.calls


async def test_it_counts_calls_per_pod_as_the_pods_saw_them(inventories, generators):
    pods = [await inventories(name) for name in ("pod-a", "pod-b", "pod-c")]
    l4 = L4Service(
        [Address("127.0.0.1", p.port, pod_name=p.pod) for p in pods], rng=random.Random(2)
    )
    await l4.start()
    try:
        mix = parse_mix("unary=1,server_stream=1,client_stream=1,bidi=1")
        generator = generators(specs(l4.address, 6, rate_per_s=25, mix=mix))
        stats = await generator.run(duration_s=1.0)
    finally:
        await l4.stop()
    assert stats.pods == {p.pod: p.total_calls for p in pods if p.total_calls}
    assert sum(stats.pods.values()) == 150
    # Behind an L4 Service, every client (one connection each) sticks to one pod.
    assert all(len(c.pods) == 1 for c in stats.clients)


async def test_it_counts_errors_by_status_code(inventories, generators):
    good, bad = await inventories("pod-good"), await inventories("pod-bad")
    bad.fail_with = grpc.StatusCode.UNAVAILABLE
    clients = [*specs(good.address, 1, 20), ClientSpec("client-bad", bad.address, 20)]
    stats = await generators(clients).run(duration_s=0.5)

    assert stats.client("client-0").codes == {"OK": 10}
    failing = stats.client("client-bad")
    assert (failing.codes, failing.errors, failing.pods) == ({"UNAVAILABLE": 10}, 10, {})
    assert stats.codes == {"OK": 10, "UNAVAILABLE": 10}
    assert stats.pods == {"pod-good": 10}
    assert failing.latency.count == 10  # failed calls have latencies too


async def test_it_counts_a_target_that_is_not_there_as_unavailable(generators):
    with dead_port() as port:
        to_nothing = ClientSpec("client-0", f"127.0.0.1:{port}", 20)
        stats = await generators([to_nothing]).run(duration_s=0.25)
    assert stats.codes == {"UNAVAILABLE": 5}


async def test_it_skips_sends_beyond_the_in_flight_cap(inventories, generators):
    pod = await inventories("pod-a")
    pod.hold()
    generator = generators(specs(pod.address, 1, rate_per_s=50, max_in_flight=3))
    await generator.start(duration_s=0.2)
    await wait_for(lambda: generator.stats().attempted == 10, what="every tick of the schedule")
    pod.release()
    await generator.wait()
    stats = generator.stats()
    assert (stats.sent, stats.skipped, stats.ok) == (3, 7, 3)


async def test_it_starts_a_new_window_on_reset(inventories, generators):
    pod = await inventories("pod-a")
    generator = generators(specs(pod.address, 2, rate_per_s=100))
    await generator.start()
    await wait_for(lambda: generator.stats().ok >= 20, what="20 calls answered")
    before = generator.stats()
    generator.reset()
    fresh = generator.stats()
    assert (fresh.attempted, fresh.ok, fresh.pods) == (0, 0, {})
    assert fresh.elapsed_s < before.elapsed_s
    await wait_for(lambda: generator.stats().ok >= 20, what="20 more calls answered")
    await generator.stop()
    after = generator.stats()
    assert after.attempted == after.sent + after.skipped
    # Every call counted once: in the window it ended in.
    assert pod.total_calls == before.completed + after.completed


def test_it_rejects_bad_client_specs():
    with pytest.raises(ValueError, match="rate_per_s"):
        ClientSpec("c", "127.0.0.1:1", 0)
    with pytest.raises(ValueError, match="unknown method"):
        parse_mix("unary=1,teleport=2")
    with pytest.raises(ValueError, match="positive sum"):
        parse_mix("unary=0")
    with pytest.raises(ValueError, match="not method=weight"):
        parse_mix("unary")
    with pytest.raises(ValueError, match="unique"):
        LoadGenerator([ClientSpec("c", "127.0.0.1:1", 1), ClientSpec("c", "127.0.0.1:2", 1)])


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "demo.loadgen", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_it_runs_from_the_command_line_and_prints_json_last(inventories):
    pod = await inventories("pod-a")
    code, out, err = await run_cli(
        "--target", pod.address, "--clients", "3", "--rate", "20", "--duration-s", "0.5",
        "--mix", "unary=1,bidi=1", "--seed", "3", "--every-s", "0.1",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary"
    assert (summary["attempted"], summary["ok"], summary["errors"]) == (30, 30, 0)
    assert summary["pods"] == {"pod-a": 30}
    assert [c["name"] for c in summary["clients"]] == ["client-0", "client-1", "client-2"]
    assert set(summary["latency_ms"]) == {
        "count",
        "mean_ms",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
    }
    assert pod.total_calls == 30


async def test_it_refuses_a_bad_mix_on_the_command_line():
    code, out, err = await run_cli("--target", "127.0.0.1:1", "--mix", "unary=1,teleport=1")
    assert (code, out) == (2, "")
    assert "unknown method(s) teleport" in err


async def test_it_prints_the_summary_when_interrupted(inventories):
    pod = await inventories("pod-a")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "demo.loadgen", "--target", pod.address, "--clients", "2",
        "--rate", "50", "--duration-s", "600", "--warmup-s", "300", "--every-s", "0.05",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        progress = await asyncio.wait_for(process.stderr.readline(), 30)
        assert json.loads(progress)["event"] == "progress"
        await wait_for(lambda: pod.total_calls > 0, timeout_s=30, what="the CLI calling")
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err
    summary = json.loads(out.decode().strip().splitlines()[-1])
    # Stopped in the warm-up, without waiting for the rest of it: the summary covers
    # what ran, and every call sent had time to end.
    assert summary["event"] == "summary" and summary["ok"] >= 1
    assert summary["completed"] == summary["sent"] == summary["attempted"] - summary["skipped"]
