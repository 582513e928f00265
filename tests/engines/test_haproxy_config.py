"""The HAProxy config Ballast writes, the weight mapping and the call log's codes."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from balancer.config import config_from_dict
from balancer.engines.haproxy.calls import grpc_code, parse
from balancer.engines.haproxy.config import Server, haproxy_weight, render

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = "/usr/sbin/haproxy"


def _config(**extra: object):
    clusters = [
        {"name": "inventory", "policy": "peak_ewma", "discovery": {"endpoints": ["127.0.0.1:1"]}},
        {"name": "orders svc", "policy": "least_request", "discovery": {"endpoints": []}},
    ]
    routes = {"routes": [{"service": "shop.Orders", "cluster": "orders svc"}]}
    data = {"balancer": {"engine": "haproxy"}, "clusters": clusters, "routing": routes, **extra}
    return config_from_dict(data, environ={})


@pytest.mark.parametrize(
    ("weight", "largest", "expected"),
    [(0, 300, 0), (100, 300, 85), (300, 300, 256), (1, 10_000, 1), (10_000, 10_000, 256),
     (100, 100, 256), (50.5, 101, 128), (5, 0, 0)],
)  # fmt: skip
def test_it_maps_weights_onto_0_to_256_relative_to_the_largest(weight, largest, expected):
    assert haproxy_weight(weight, largest) == expected


def test_it_writes_a_config_haproxy_accepts(tmp_path):
    config = _config(haproxy={"threads": 1, "global_lines": ["tune.bufsize 32768"],
                              "defaults_lines": ["timeout tunnel 2h"]})  # fmt: skip
    servers = {"inventory": [Server("s1", "127.0.0.1:7001", "ready", 256),
                             Server("s2", "127.0.0.1:7002", "drain", 3)]}  # fmt: skip
    text = render(
        config, listen_addresses=["127.0.0.1:50051", "127.0.0.1:50052"],
        runtime_socket=str(tmp_path / "rt.sock"),
        policies={"inventory": "peak_ewma", "orders svc": "least_request"},
        servers=servers, call_log=str(tmp_path / "calls.sock"),
    )  # fmt: skip
    for line in (
        "bind 127.0.0.1:50051 proto h2",
        "use_backend c1_orders_svc if { path_beg /shop.Orders/ }",
        "balance random(2)",
        "server s1 127.0.0.1:7001 proto h2 pool-purge-delay 1s weight 256\n",
        "server s2 127.0.0.1:7002 proto h2 pool-purge-delay 1s weight 3 disabled",
        "tune.h2.max-concurrent-streams 100",
        "nbthread 1",
        "tune.bufsize 32768",
        "timeout tunnel 2h",
    ):
        assert line in text
    # peak_ewma and least_request both run as power of two choices (config.BALANCE).
    assert text.count("balance random(2)\n") == 2
    path = tmp_path / "haproxy.cfg"
    path.write_text(text, encoding="utf-8")
    checked = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("c0_echo|s1|200|2|264|166|----|-", grpc.StatusCode.OK),
        ("c0_echo|s1|200|2|264|166|----|5", grpc.StatusCode.NOT_FOUND),
        ("c0_echo|s1|200|303|273|117|CD--|-", grpc.StatusCode.CANCELLED),
        ("c0_echo|s1|503|0|0|0|SC--|-", grpc.StatusCode.UNAVAILABLE),
        ("c0_echo|s1|404|1|0|0|----|-", grpc.StatusCode.UNIMPLEMENTED),
        ("c0_echo|s1|418|1|0|0|----|-", grpc.StatusCode.UNKNOWN),
    ],
)
def test_it_reads_a_call_s_code_from_its_log_line(line, code):
    record = parse(line)
    assert record is not None
    assert record.code == code.value[0]


def test_it_reads_latency_and_bytes_and_ignores_notices():
    record = parse("c0_echo|s1|200|47|267|177|----|-\n")
    assert record is not None
    assert (record.backend, record.server, record.latency_s) == ("c0_echo", "s1", 0.047)
    assert (record.received_bytes, record.sent_bytes) == (267, 177)
    assert parse("Server c_echo/s1 is UP/READY (leaving forced maintenance).") is None
    assert grpc_code(200, "99", "----") == 0  # not a gRPC code: ignored


async def test_it_warns_that_peak_ewma_has_no_latency_aware_equivalent(backends, balancers, caplog):
    caplog.set_level(logging.WARNING)
    backend = await backends("pod-a")
    data = {"balancer": {"engine": "haproxy", "shutdown_grace_s": 1},
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [{"name": "echo", "policy": "peak_ewma",
                          "discovery": {"endpoints": [backend.address]}}]}  # fmt: skip
    await balancers(config_from_dict(data, environ={}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "peak_ewma runs as HAProxy's random(2)" in m and "no latency-aware policy" in m
        for m in warnings
    ), warnings


def test_it_says_what_haproxy_refused_when_it_cannot_start(tmp_path):
    path = tmp_path / "ballast.toml"
    path.write_text(
        '[balancer]\nengine = "haproxy"\n\n[haproxy]\nglobal_lines = ["no-such-directive 1"]\n\n'
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n'
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:1"]\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(path), "--log-level", "ERROR"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ballast: cannot start: haproxy exited with code 1:"), result.stderr
    assert "no-such-directive" in last
    assert "Traceback" not in result.stderr
