"""The config file: a valid TOML file becomes typed dataclasses; every mistake names its key."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from balancer.config import (
    AdminConfig,
    BalancerConfig,
    ClusterConfig,
    ConfigError,
    DiscoveryConfig,
    HealthCheckConfig,
    ListenerConfig,
    OutlierDetectionConfig,
    PeakEwmaConfig,
    Route,
    SlowStartConfig,
    config_from_dict,
    load_config,
)
from balancer.endpoint import Address

TOKEN = "0123456789abcdef-token"

FULL = """\
[balancer]
id = "edge-1"
max_message_bytes = 1048576
max_in_flight_bytes = 8388608
max_concurrent_streams = 50
record_stats = false
shutdown_grace_s = 5

[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
address = "[::1]:50052"

[[clusters]]
name = "users"
policy = "peak_ewma"
default_weight = 200
unary_methods = ["/users.Users/Get"]
discover_unary_methods = false
drain_timeout_s = 30

[clusters.discovery]
kind = "static"
endpoints = ["10.0.0.1:50051", { address = "10.0.0.2:50051", name = "users-7f9c-abcde" }]

[clusters.health_check]
enabled = true
interval_s = 2
timeout_s = 0.5
unhealthy_threshold = 2
healthy_threshold = 2
service = "users.Users"

[clusters.outlier_detection]
enabled = true
consecutive_failures = 3
interval_s = 5
base_ejection_s = 10
max_ejection_s = 120
max_ejection_percent = 50
failure_codes = ["UNAVAILABLE", "DEADLINE_EXCEEDED"]

[clusters.slow_start]
window_s = 60
aggression = 2
min_weight_percent = 5

[clusters.peak_ewma]
default_rtt_ms = 50
decay_s = 5
failure_penalty_ms = 1000

[[clusters]]
name = "orders"
discovery.endpoints = ["orders.default.svc:50051"]

[routing]
default_cluster = "users"

[[routing.routes]]
service = "orders.Orders"
cluster = "orders"

[[routing.routes]]
prefix = "/orders.v2."
cluster = "orders"

[admin]
address = "127.0.0.1:0"
metrics_address = "127.0.0.1:0"
"""

MINIMAL = """\
[[clusters]]
name = "echo"
discovery.endpoints = ["127.0.0.1:50051"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ballast.toml"
    path.write_text(text, encoding="utf-8")
    return path


def parse(text: str, environ: dict[str, str] | None = None) -> BalancerConfig:
    return config_from_dict(tomllib.loads(textwrap.dedent(text)), environ or {})


# --- a valid file ---------------------------------------------------------------------------


@pytest.fixture
def full(tmp_path: Path) -> BalancerConfig:
    return load_config(write(tmp_path, FULL), {"BALLAST_ADMIN_TOKEN": TOKEN})


def test_it_reads_the_balancer_settings_and_listeners(full):
    assert full.id == "edge-1"
    assert full.max_message_bytes == 1_048_576
    assert full.max_in_flight_bytes == 8_388_608
    assert full.max_concurrent_streams == 50
    assert full.record_stats is False
    assert full.shutdown_grace_s == 5.0
    assert full.listeners == (ListenerConfig("127.0.0.1:0"), ListenerConfig("[::1]:50052"))


def test_it_reads_a_cluster_with_every_section(full):
    assert full.cluster("users") == ClusterConfig(
        name="users",
        policy="peak_ewma",
        discovery=DiscoveryConfig(
            kind="static",
            endpoints=(
                Address("10.0.0.1", 50051),
                Address("10.0.0.2", 50051, pod_name="users-7f9c-abcde"),
            ),
        ),
        health_check=HealthCheckConfig(
            enabled=True,
            interval_s=2.0,
            timeout_s=0.5,
            unhealthy_threshold=2,
            healthy_threshold=2,
            service="users.Users",
        ),
        outlier_detection=OutlierDetectionConfig(
            enabled=True,
            consecutive_failures=3,
            interval_s=5.0,
            base_ejection_s=10.0,
            max_ejection_s=120.0,
            max_ejection_percent=50.0,
            failure_codes=frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"}),
        ),
        slow_start=SlowStartConfig(window_s=60.0, aggression=2.0, min_weight_percent=5.0),
        peak_ewma=PeakEwmaConfig(default_rtt_ms=50.0, decay_s=5.0, failure_penalty_ms=1000.0),
        default_weight=200,
        unary_methods=frozenset({"/users.Users/Get"}),
        discover_unary_methods=False,
        drain_timeout_s=30.0,
    )


def test_it_identifies_endpoints_by_pod_name_when_given_else_by_address(full):
    ids = [a.endpoint_id for a in full.cluster("users").discovery.endpoints]
    assert ids == ["10.0.0.1:50051", "users-7f9c-abcde"]


def test_it_gives_a_cluster_without_sections_the_documented_defaults(full):
    assert full.cluster("orders") == ClusterConfig(
        name="orders",
        discovery=DiscoveryConfig(endpoints=(Address("orders.default.svc", 50051),)),
    )
    assert full.cluster("orders").policy == "round_robin"
    assert full.cluster("orders").default_weight == 100


def test_it_reads_routes_by_service_and_by_prefix(full):
    assert full.routes == (
        Route(cluster="orders", service="orders.Orders"),
        Route(cluster="orders", prefix="/orders.v2."),
    )
    assert [r.path_prefix for r in full.routes] == ["/orders.Orders/", "/orders.v2."]
    assert full.default_cluster == "users"


def test_it_takes_the_admin_token_from_ballast_admin_token(full):
    assert full.admin == AdminConfig(
        enabled=True, address="127.0.0.1:0", token=TOKEN, metrics_address="127.0.0.1:0"
    )


def test_it_takes_the_admin_token_from_the_variable_named_by_token_env():
    config = parse(
        MINIMAL + '[admin]\ntoken_env = "MY_TOKEN"\n',
        {"MY_TOKEN": TOKEN, "BALLAST_ADMIN_TOKEN": "the-other-one-0123456789"},
    )
    assert config.admin.token == TOKEN


def test_it_prefers_a_token_in_the_file_to_the_environment():
    config = parse(MINIMAL + f'[admin]\ntoken = "{TOKEN}"\n', {"BALLAST_ADMIN_TOKEN": "x" * 20})
    assert config.admin.token == TOKEN


def test_it_leaves_the_admin_api_off_without_an_admin_table():
    config = parse(MINIMAL, {"BALLAST_ADMIN_TOKEN": TOKEN})
    assert config.admin.enabled is False
    assert config.listeners == (ListenerConfig("127.0.0.1:50051"),)


def test_it_accepts_an_integer_where_a_number_of_seconds_is_expected():
    config = parse(MINIMAL + "[clusters.health_check]\ninterval_s = 3\n")
    assert config.clusters[0].health_check.interval_s == 3.0


# --- mistakes: each one a ConfigError naming the key and the problem -------------------------


def cluster(extra: str) -> str:
    return MINIMAL + textwrap.dedent(extra)


ERRORS = [
    pytest.param(
        cluster('polcy = "random"\n'),
        ["clusters[0].polcy", "unknown key", "did you mean 'policy'?"],
        id="unknown-key-with-hint",
    ),
    pytest.param(
        MINIMAL + "[balancer]\nshutdown_grace = 3\n",
        ["balancer.shutdown_grace", "unknown key", "did you mean 'shutdown_grace_s'?"],
        id="unknown-balancer-key",
    ),
    pytest.param(
        cluster('default_weight = "100"\n'),
        ["clusters[0].default_weight", "expected an integer", "'100'"],
        id="string-for-an-int",
    ),
    pytest.param(
        cluster("[clusters.health_check]\nhealthy_threshold = 1.5\n"),
        ["clusters[0].health_check.healthy_threshold", "expected an integer", "1.5"],
        id="float-for-an-int",
    ),
    pytest.param(
        cluster("[clusters.health_check]\nenabled = 1\n"),
        ["clusters[0].health_check.enabled", "expected true or false"],
        id="int-for-a-bool",
    ),
    pytest.param(
        cluster('policy = "fastest"\n'),
        ["clusters[0]", "policy 'fastest' is unknown", "round_robin", "peak_ewma"],
        id="bad-policy",
    ),
    pytest.param(
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1"]\n',
        ["clusters[0].discovery.endpoints[0]", "'127.0.0.1' is not host:port"],
        id="endpoint-without-port",
    ),
    pytest.param(
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = [{ address = "h:1", pod = "p" }]\n',
        ["clusters[0].discovery.endpoints[0]", 'use "host:port"'],
        id="endpoint-table-with-unknown-key",
    ),
    pytest.param(
        MINIMAL + '[[listeners]]\naddress = "127.0.0.1:99999"\n',
        ["listeners[0]", "'127.0.0.1:99999' is not host:port"],
        id="listener-port-out-of-range",
    ),
    pytest.param(
        MINIMAL + MINIMAL,
        ["clusters", "duplicate cluster name echo"],
        id="duplicate-cluster",
    ),
    pytest.param(
        '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:1", "127.0.0.1:1"]\n',
        ["clusters[0].discovery", "duplicate endpoint 127.0.0.1:1"],
        id="duplicate-endpoint",
    ),
    pytest.param(
        MINIMAL + '[[routing.routes]]\nservice = "x.Y"\ncluster = "nope"\n',
        ["routes[0].cluster", "no cluster named 'nope'"],
        id="route-to-unknown-cluster",
    ),
    pytest.param(
        MINIMAL + '[routing]\ndefault_cluster = "nope"\n',
        ["default_cluster", "no cluster named 'nope'"],
        id="unknown-default-cluster",
    ),
    pytest.param(
        MINIMAL + '[[routing.routes]]\nservice = "x.Y"\nprefix = "/x"\ncluster = "echo"\n',
        ["routing.routes[0]", "set exactly one of service or prefix"],
        id="route-with-service-and-prefix",
    ),
    pytest.param(
        MINIMAL + '[[routing.routes]]\ncluster = "echo"\n',
        ["routing.routes[0]", "set exactly one of service or prefix"],
        id="route-with-neither",
    ),
    pytest.param(
        MINIMAL + '[[routing.routes]]\nprefix = "x.Y"\ncluster = "echo"\n',
        ["routing.routes[0]", "prefix 'x.Y' must start with '/'"],
        id="prefix-without-slash",
    ),
    pytest.param(
        cluster('[clusters.outlier_detection]\nfailure_codes = ["UNAVAILABLE", "BROKEN"]\n'),
        ["clusters[0].outlier_detection", "failure_codes", "unknown status code(s) BROKEN"],
        id="unknown-failure-code",
    ),
    pytest.param(
        MINIMAL + "[admin]\nenabled = true\n",
        ["admin", "needs a bearer token", "set BALLAST_ADMIN_TOKEN", "admin.enabled = false"],
        id="admin-without-token",
    ),
    pytest.param(
        MINIMAL + '[admin]\ntoken = "short"\n',
        ["admin", "token is too short", "at least 16"],
        id="admin-token-too-short",
    ),
    pytest.param(
        cluster("[clusters.peak_ewma]\ndefault_rtt_ms = 0.5\n"),
        ["clusters[0].peak_ewma", "default_rtt_ms must be at least 1 ms"],
        id="default-rtt-below-floor",
    ),
    pytest.param(
        cluster('unary_methods = ["users.Users/Get"]\n'),
        ["clusters[0]", "unary_methods", "'users.Users/Get' is not /package.Service/Method"],
        id="unary-method-without-leading-slash",
    ),
    pytest.param(
        '[balancer]\nid = "lonely"\n',
        ["clusters", "define at least one [[clusters]] table"],
        id="no-clusters",
    ),
]


@pytest.mark.parametrize(("text", "fragments"), ERRORS)
def test_it_names_the_key_and_the_problem(text, fragments):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_it_names_default_weight_when_it_is_out_of_range():
    with pytest.raises(ConfigError) as caught:
        parse(cluster("default_weight = 20000\n"))
    message = str(caught.value)
    assert "out of range" in message
    assert "default_weight" in message


@pytest.mark.parametrize("weight", [-1, 10_001])
def test_it_rejects_a_default_weight_out_of_range(weight):
    with pytest.raises(
        ConfigError, match=r"clusters\[0\]: default_weight: weight .* out of range: use 0 to 10000"
    ):
        parse(cluster(f"default_weight = {weight}\n"))


@pytest.mark.parametrize("weight", [0, 10_000])
def test_it_accepts_the_ends_of_the_weight_range(weight):
    assert parse(cluster(f"default_weight = {weight}\n")).clusters[0].default_weight == weight


def test_it_rejects_a_non_string_unary_method_with_a_config_error():
    with pytest.raises(ConfigError, match="unary_methods"):
        parse(cluster("unary_methods = [1]\n"))


def test_it_rejects_a_non_string_endpoint_name():
    text = '[[clusters]]\nname = "echo"\ndiscovery.endpoints = [{ address = "h:1", name = 5 }]\n'
    with pytest.raises(ConfigError, match=r"clusters\[0\]\.discovery\.endpoints\[0\]"):
        parse(text)


# --- reading the file -----------------------------------------------------------------------


def test_it_names_the_file_and_the_line_of_invalid_toml(tmp_path):
    path = write(tmp_path, MINIMAL + "policy = \n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 4" in message


def test_it_names_the_file_it_cannot_find(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(path) in str(caught.value)
    assert "cannot read the config file: No such file or directory" in str(caught.value)


def test_it_names_a_directory_given_as_the_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file") as caught:
        load_config(tmp_path, {})
    assert str(tmp_path) in str(caught.value)


def test_it_rejects_a_file_that_is_not_utf8_with_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[balancer]\nid = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(path) in str(caught.value)


def test_it_prefixes_a_key_error_with_the_file(tmp_path):
    path = write(tmp_path, cluster('polcy = "random"\n'))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value).startswith(f"{path}: clusters[0].polcy: unknown key")


def test_it_takes_platform_discovery_by_service_name():
    config = parse(
        '[[clusters]]\nname = "inv"\ndiscovery = { kind = "platform", service = "inventory" }\n'
    )
    assert config.clusters[0].discovery.kind == "platform"
    assert config.clusters[0].discovery.service == "inventory"


@pytest.mark.parametrize(
    ("discovery", "fragment"),
    [
        ('{ kind = "platform" }', "needs service"),
        ('{ kind = "platform", service = "x", endpoints = ["h:1"] }', "endpoints are for kind"),
        ('{ kind = "consul" }', "kind 'consul' is unknown: use one of static, platform"),
    ],
)
def test_it_rejects_a_discovery_that_cannot_work(discovery, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse(f'[[clusters]]\nname = "inventory"\ndiscovery = {discovery}\n')


def test_it_bounds_messages_as_grpc_does_by_default():
    config = parse(MINIMAL)
    assert config.max_message_bytes == 4 * 1024 * 1024
    assert config.max_in_flight_bytes == 128 * 1024 * 1024
    assert config.max_concurrent_streams == 100


def test_it_keeps_64_mib_messages_and_the_largest_grpc_allows_configurable():
    for size in (64 << 20, 2**31 - 1):
        text = f"[balancer]\nmax_message_bytes = {size}\nmax_in_flight_bytes = {size}\n"
        assert parse(text + MINIMAL).max_message_bytes == size


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ("max_message_bytes = 2147483648", "max_message_bytes must be between 1 and 2147483647"),
        ("max_message_bytes = 0", "max_message_bytes must be between 1 and 2147483647"),
        ("max_message_bytes = 1048576\nmax_in_flight_bytes = 1000",
         "max_in_flight_bytes (1000) must be at least balancer.max_message_bytes (1048576)"),
        ("max_concurrent_streams = 0", "max_concurrent_streams must be between 1"),
    ],
)  # fmt: skip
def test_it_refuses_limits_grpc_cannot_take(settings, fragment):
    with pytest.raises(ConfigError) as caught:
        parse(f"[balancer]\n{settings}\n" + MINIMAL)
    assert fragment in str(caught.value)
