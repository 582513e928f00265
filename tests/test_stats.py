"""Per-endpoint counters and the latency histogram the dashboard reads quantiles from."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from balancer.stats import CODE_INDEX, LATENCY_BOUNDS_MS, STATUS_CODES, EndpointStats, quantile_ms

OK = CODE_INDEX[grpc.StatusCode.OK]
UNAVAILABLE = CODE_INDEX[grpc.StatusCode.UNAVAILABLE]
INF_BUCKET = len(LATENCY_BOUNDS_MS)
DEADLINE_TRIES = 20


def histogram(**at: int) -> list[int]:
    """Counts per bucket, e.g. histogram(b3=10) puts 10 in the bucket of bound index 3."""
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for key, n in at.items():
        counts[INF_BUCKET if key == "inf" else int(key[1:])] = n
    return counts


def bucket_of(latency_s: float) -> int:
    stats = EndpointStats()
    stats.record(OK, latency_s, 0, 0)
    (bucket,) = (i for i, n in enumerate(stats.latency_counts) if n)
    return bucket


def test_it_indexes_every_status_code_by_its_number():
    assert len(STATUS_CODES) == 17
    assert CODE_INDEX[grpc.StatusCode.OK] == 0
    assert CODE_INDEX[grpc.StatusCode.UNAVAILABLE] == 14
    assert all(STATUS_CODES[i] is code for code, i in CODE_INDEX.items())


def test_it_counts_requests_by_status_code():
    stats = EndpointStats()
    for code in (OK, OK, OK, UNAVAILABLE):
        stats.record(code, 0.001, 0, 0)
    assert stats.requests_by_code() == {"OK": 3, "UNAVAILABLE": 1}
    assert stats.total_requests == 4


def test_a_fresh_endpoint_has_no_counts():
    stats = EndpointStats()
    assert stats.requests_by_code() == {}
    assert stats.total_requests == 0
    assert quantile_ms(stats.latency_counts, 0.5) is None


def test_it_adds_up_bytes_each_way_and_total_latency():
    stats = EndpointStats()
    stats.record(OK, 0.010, received=100, sent=2_000)
    stats.record(OK, 0.030, received=50, sent=0)
    assert (stats.bytes_received, stats.bytes_sent) == (150, 2_000)
    assert stats.latency_sum_s == pytest.approx(0.040)


@pytest.mark.parametrize(("i", "bound_ms"), list(enumerate(LATENCY_BOUNDS_MS)))
def test_a_latency_exactly_on_a_bound_goes_into_that_bounds_bucket(i, bound_ms):
    assert bucket_of(bound_ms / 1000) == i


@pytest.mark.parametrize(("i", "bound_ms"), list(enumerate(LATENCY_BOUNDS_MS)))
def test_a_latency_just_above_a_bound_goes_into_the_next_bucket(i, bound_ms):
    assert bucket_of(bound_ms / 1000 * 1.000001) == i + 1


def test_a_zero_latency_goes_into_the_first_bucket():
    assert bucket_of(0.0) == 0


def test_a_latency_past_the_last_bound_goes_into_the_inf_bucket():
    assert bucket_of(61.0) == INF_BUCKET
    assert bucket_of(3_600.0) == INF_BUCKET


def test_the_bounds_are_increasing_and_end_at_60_s():
    assert list(LATENCY_BOUNDS_MS) == sorted(set(LATENCY_BOUNDS_MS))
    assert LATENCY_BOUNDS_MS[-1] == 60_000


# --- quantiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.5, 0.99, 1.0])
def test_an_empty_histogram_has_no_quantile(q):
    assert quantile_ms(histogram(), q) is None


@pytest.mark.parametrize(("q", "expected_ms"), [(0.0, 5.0), (0.25, 5.625), (0.5, 6.25), (1.0, 7.5)])
def test_it_interpolates_linearly_inside_one_bucket(q, expected_ms):
    # Bound index 6 is the bucket (5 ms, 7.5 ms].
    assert LATENCY_BOUNDS_MS[5:7] == (5, 7.5)
    assert quantile_ms(histogram(b6=100), q) == pytest.approx(expected_ms)


def test_the_first_bucket_starts_at_zero():
    assert quantile_ms(histogram(b0=10), 0.5) == pytest.approx(0.125)


def test_it_finds_the_bucket_that_holds_the_rank():
    # 90 calls in (1, 2] ms and 10 in (100, 150] ms: the median is fast, the p95 slow.
    counts = histogram(b3=90, b13=10)
    assert LATENCY_BOUNDS_MS[2:4] == (1, 2) and LATENCY_BOUNDS_MS[12:14] == (100, 150)
    assert quantile_ms(counts, 0.5) == pytest.approx(1 + 1 * 50 / 90)
    assert quantile_ms(counts, 0.9) == pytest.approx(2.0)
    assert quantile_ms(counts, 0.95) == pytest.approx(100 + 50 * 5 / 10)
    assert quantile_ms(counts, 0.99) == pytest.approx(100 + 50 * 9 / 10)


def test_it_skips_empty_buckets_between_filled_ones():
    counts = histogram(b0=1, b20=1)  # b20 is (5 s, 10 s]
    assert quantile_ms(counts, 0.75) == pytest.approx(5_000 + 5_000 * 0.5)


def test_a_quantile_in_the_inf_bucket_is_the_last_finite_bound():
    assert quantile_ms(histogram(inf=10), 0.5) == 60_000
    assert quantile_ms(histogram(b3=90, inf=10), 0.99) == 60_000
    assert quantile_ms(histogram(b3=90, inf=10), 0.5) == pytest.approx(1 + 50 / 90)


def test_recorded_latencies_give_the_quantiles_a_user_expects():
    stats = EndpointStats()
    for _ in range(99):
        stats.record(OK, 0.004, 0, 0)  # (3, 5] ms
    stats.record(OK, 0.9, 0, 0)  # (600, 1000] ms
    assert 3 < quantile_ms(stats.latency_counts, 0.5) <= 5  # type: ignore[operator]
    assert 600 < quantile_ms(stats.latency_counts, 1.0) <= 1_000  # type: ignore[operator]


@pytest.mark.parametrize("method", ["/test.Echo/Unary", "/test.Echo/ServerStream"])
async def test_it_counts_a_call_past_its_deadline_as_deadline_exceeded(backends, balancers, method):
    import grpc.aio

    from tests.support import backend as be
    from tests.support.balancing import config
    from tests.support.waiting import wait_for

    backend = await backends("pod-a")
    balancer = await balancers(config([backend], cluster={"unary_methods": [be.UNARY]}))
    ep = balancer.clusters["echo"].endpoints["pod-a"]
    slow = [("x-delay-ms", "3000"), ("x-count", "1")]
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:

        async def late_call() -> grpc.StatusCode:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                if method == be.UNARY:
                    await channel.unary_unary(method)(b"x", metadata=slow, timeout=0.3)
                else:
                    call = channel.unary_stream(method)(b"x", metadata=slow, timeout=0.3)
                    [m async for m in call]
            return caught.value.code()

        codes = await asyncio.gather(*(late_call() for _ in range(DEADLINE_TRIES)))
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    await wait_for(lambda: ep.stats.total_requests == DEADLINE_TRIES, what="the calls recorded")
    assert ep.stats.requests_by_code() == {"DEADLINE_EXCEEDED": DEADLINE_TRIES}
