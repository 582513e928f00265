from __future__ import annotations

import pytest
from django.test import override_settings

from dashboard.app.checks import (
    check_channel_layer,
    check_debug_hosts,
    check_sqlite_processes,
    is_loopback,
)

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://localhost"]},
    }
}
SQLITE = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
POSTGRES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "ballast"}}
# The checks only read DATABASES; no connection is made with the overridden value.
no_database_override_warning = pytest.mark.filterwarnings(
    "ignore:Overriding setting DATABASES:UserWarning"
)


@override_settings(BALLAST_DASHBOARD_PROCESSES=2, CHANNEL_LAYERS=IN_MEMORY)
def test_it_errors_on_several_processes_with_the_in_memory_layer() -> None:
    [error] = check_channel_layer()
    assert error.id == "ballast.E001"
    assert "REDIS_URL" in (error.hint or "")


@override_settings(BALLAST_DASHBOARD_PROCESSES=2, CHANNEL_LAYERS=REDIS)
def test_it_accepts_several_processes_on_redis() -> None:
    assert check_channel_layer() == []


@override_settings(BALLAST_DASHBOARD_PROCESSES=1, CHANNEL_LAYERS=IN_MEMORY)
def test_it_accepts_one_process_in_memory() -> None:
    assert check_channel_layer() == []


@override_settings(DEBUG=True, ALLOWED_HOSTS=["localhost", "dash.example.com", "*"])
def test_it_warns_when_debug_pages_are_reachable_from_other_hosts() -> None:
    [warning] = check_debug_hosts()
    assert warning.id == "ballast.W001"
    assert "dash.example.com, *" in warning.msg


@override_settings(DEBUG=True, ALLOWED_HOSTS=["localhost", "127.0.0.1", "[::1]", ".localhost"])
def test_it_accepts_debug_on_loopback() -> None:
    assert check_debug_hosts() == []


@override_settings(DEBUG=False, ALLOWED_HOSTS=["dash.example.com"])
def test_it_accepts_other_hosts_without_debug() -> None:
    assert check_debug_hosts() == []


@no_database_override_warning
@override_settings(BALLAST_DASHBOARD_PROCESSES=3, DATABASES=SQLITE)
def test_it_warns_on_sqlite_with_several_processes() -> None:
    [warning] = check_sqlite_processes()
    assert warning.id == "ballast.W002"
    assert "DATABASE_URL" in (warning.hint or "")


@no_database_override_warning
@override_settings(BALLAST_DASHBOARD_PROCESSES=3, DATABASES=POSTGRES)
def test_it_accepts_postgres_with_several_processes() -> None:
    assert check_sqlite_processes() == []


def test_it_tells_loopback_hosts() -> None:
    assert all(map(is_loopback, ["localhost", "app.localhost", "127.0.0.1", "127.9.9.9", "[::1]"]))
    assert not any(map(is_loopback, ["*", ".example.com", "10.0.0.1", "[::]", "0.0.0.0"]))


def test_it_registers_the_checks() -> None:
    from django.core.checks.registry import registry

    registered = registry.get_checks()
    for check in (check_channel_layer, check_debug_hosts, check_sqlite_processes):
        assert check in registered
