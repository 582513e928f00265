"""`[balancer] engine` and `[haproxy]`: each mistake names its key; no haproxy, one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from balancer.config import ConfigError, HaproxyConfig, config_from_dict
from tests.support.certs import make_pki

ROOT = Path(__file__).resolve().parents[2]


def _data(**extra: object) -> dict[str, object]:
    cluster = {"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]}}
    return {"clusters": [cluster], **extra}


def test_it_runs_the_embedded_engine_unless_told_otherwise():
    config = config_from_dict(_data(), environ={})
    assert config.engine == "embedded"
    assert config.haproxy == HaproxyConfig()


def test_it_reads_the_haproxy_table():
    haproxy = {
        "binary": "/usr/sbin/haproxy",
        "threads": 2,
        "runtime_socket": "/run/ballast/haproxy.sock",
        "global_lines": ["tune.bufsize 32768"],
        "defaults_lines": ["timeout tunnel 2h"],
    }
    config = config_from_dict(_data(balancer={"engine": "haproxy"}, haproxy=haproxy), environ={})
    assert config.engine == "haproxy"
    assert config.haproxy == HaproxyConfig(
        "/usr/sbin/haproxy", 2, "/run/ballast/haproxy.sock",
        ("tune.bufsize 32768",), ("timeout tunnel 2h",),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"balancer": {"engine": "nginx"}}, "engine 'nginx': use one of embedded, haproxy"),
        ({"haproxy": {"threads": 65}}, "haproxy: threads must be between 0"),
        ({"haproxy": {"threads": "2"}}, "haproxy.threads: expected an integer"),
        ({"haproxy": {"binary": ""}}, "haproxy: binary must not be empty"),
        ({"haproxy": {"global_lines": ["a\nb"]}}, "haproxy: global_lines[0]: one config line"),
        ({"haproxy": {"defaults_lines": [3]}}, "haproxy.defaults_lines[0]: expected a string"),
        ({"haproxy": {"thread": 2}}, "haproxy.thread: unknown key; did you mean 'threads'?"),
    ],
)
def test_it_names_the_bad_key(extra, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(_data(**extra), environ={})
    assert message in str(caught.value)


def test_it_takes_tls_listeners_with_haproxy(tmp_path):
    server = make_pki(tmp_path).server
    tls = {"cert_file": server.cert, "key_file": server.key}
    listener = {"address": "127.0.0.1:0", "tls": tls}
    config = config_from_dict(_data(balancer={"engine": "haproxy"}, listeners=[listener]), {})
    assert config.listeners[0].tls is not None


def test_it_wants_a_server_name_for_tls_to_endpoints_with_haproxy(tmp_path):
    pki = make_pki(tmp_path)
    data = _data(balancer={"engine": "haproxy"})
    data["clusters"][0]["tls"] = {"ca_file": pki.ca.cert_file}  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, environ={})
    assert "clusters[0].tls.server_name: needed with balancer.engine = 'haproxy'" in str(
        caught.value
    )


def _run(tmp_path: Path, binary: str, *flags: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ballast.toml"
    path.write_text(
        f'[balancer]\nengine = "haproxy"\n\n[haproxy]\nbinary = "{binary}"\n\n'
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:1"]\n',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(path), *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("flags", [("--check",), ()], ids=["check", "start"])
@pytest.mark.parametrize("binary", ["haproxy-not-installed", "/nowhere/haproxy"])
def test_it_says_in_one_line_how_to_install_a_missing_haproxy(tmp_path, binary, flags):
    result = _run(tmp_path, binary, *flags)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"haproxy.binary: {binary!r} is not an executable" in lines[0]
    assert "apt-get install haproxy" in lines[0]


def test_it_checks_a_config_whose_haproxy_is_installed(tmp_path):
    result = _run(tmp_path, "/usr/sbin/haproxy", "--check")
    assert result.returncode == 0, result.stderr
    assert "engine: haproxy" in result.stdout
