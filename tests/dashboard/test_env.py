from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import (
    channel_layer_settings,
    database_settings,
    envbool,
    envint,
    envlist,
    envmap,
    envsecret,
    envstr,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("off", False)],
)
def test_it_reads_booleans(raw: str, expected: bool) -> None:
    assert envbool("DEBUG", not expected, {"DEBUG": raw}) is expected


def test_it_uses_the_default_when_unset_or_blank() -> None:
    assert envbool("DEBUG", True, {}) is True
    assert envbool("DEBUG", False, {"DEBUG": " "}) is False
    assert envint("N", 7, {"N": ""}) == 7
    assert envstr("S", "x", {}) == "x"
    assert envlist("L", "a,b", {}) == ["a", "b"]


def test_it_rejects_a_bad_boolean_naming_variable_and_value() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe': use true or false"):
        envbool("DEBUG", False, {"DEBUG": "maybe"})


def test_it_reads_integers_in_bounds() -> None:
    assert envint("N", 1, {"N": " 4 "}, minimum=1, maximum=8) == 4


@pytest.mark.parametrize(
    ("raw", "message"),
    [("two", "not an integer"), ("0", "must be at least 1"), ("9", "must be at most 8")],
)
def test_it_rejects_bad_integers(raw: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"N='{raw}': {message}"):
        envint("N", 1, {"N": raw}, minimum=1, maximum=8)


def test_it_splits_lists_and_drops_blanks() -> None:
    assert envlist("L", "", {"L": " a, b ,,c "}) == ["a", "b", "c"]
    assert envlist("L", "", {}) == []


def test_it_rejects_a_list_item_that_does_not_match() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"L: item 'b c' does not match"):
        envlist("L", "", {"L": "a,b c"}, pattern=re.compile(r"[a-z]+"))


def test_it_reads_key_value_pairs_in_order() -> None:
    environ = {"B": " b1=10.0.0.2:9901 , b0=127.0.0.1:9901,"}
    assert list(envmap("B", "", environ).items()) == [
        ("b1", "10.0.0.2:9901"),
        ("b0", "127.0.0.1:9901"),
    ]
    assert envmap("B", "", {}) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("b0", "item 'b0' is not key=value"),
        ("=127.0.0.1:1", "item '=127.0.0.1:1' is not key=value"),
        ("b0=127.0.0.1:1,b0=127.0.0.1:2", "key 'b0' appears twice"),
        ("b 0=127.0.0.1:1", "key 'b 0' does not match"),
    ],
)
def test_it_rejects_bad_key_value_pairs(raw: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"B: {message}"):
        envmap("B", "", {"B": raw}, key=re.compile(r"[a-z0-9]+"))


def test_it_reads_a_secret_from_the_variable() -> None:
    assert envsecret("SECRET_KEY", {"SECRET_KEY": " s3cret "}) == "s3cret"
    assert envsecret("SECRET_KEY", {}) is None


def test_it_reads_a_secret_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("from-file\n", encoding="utf-8")
    assert envsecret("SECRET_KEY", {"SECRET_KEY_FILE": str(path)}) == "from-file"


def test_it_rejects_a_missing_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    with pytest.raises(ImproperlyConfigured, match=r"SECRET_KEY_FILE='.*missing': No such file"):
        envsecret("SECRET_KEY", {"SECRET_KEY_FILE": str(path)})


def test_it_rejects_an_empty_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ImproperlyConfigured, match="the file is empty"):
        envsecret("SECRET_KEY", {"SECRET_KEY_FILE": str(path)})


def test_it_rejects_a_secret_set_twice(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("a", encoding="utf-8")
    environ = {"SECRET_KEY": "b", "SECRET_KEY_FILE": str(path)}
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY and SECRET_KEY_FILE are both set"):
        envsecret("SECRET_KEY", environ)


def test_it_uses_sqlite_without_a_database_url(tmp_path: Path) -> None:
    config = database_settings("", tmp_path / "db.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "db.sqlite3")
    # Concurrent writers wait for each other; tests run on a file, as the dashboard does.
    assert config["OPTIONS"] == {"transaction_mode": "IMMEDIATE", "timeout": 20}
    assert config["TEST"] == {"NAME": str(tmp_path / "db-test.sqlite3")}


def test_it_uses_postgres_from_a_database_url(tmp_path: Path) -> None:
    config = database_settings("postgres://ops:pw@db.internal:5433/ballast", tmp_path / "x")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 5433, "ballast")
    assert (config["USER"], config["PASSWORD"]) == ("ops", "pw")


def test_it_rejects_a_database_url_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        database_settings("nosuchdb://host/db", tmp_path / "x")


def test_it_uses_the_in_memory_layer_without_a_redis_url() -> None:
    assert channel_layer_settings("") == {"BACKEND": "channels.layers.InMemoryChannelLayer"}


def test_it_uses_redis_from_a_redis_url() -> None:
    config = channel_layer_settings("redis://:pw@cache:6379/2")
    assert config == {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://:pw@cache:6379/2"]},
    }


def test_it_rejects_a_redis_url_without_echoing_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL: scheme 'http'") as caught:
        channel_layer_settings("http://user:topsecret@cache")
    assert "topsecret" not in str(caught.value)
