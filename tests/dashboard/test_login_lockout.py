"""Login attempts are limited per account and per client address (django-axes), and
audited: what an attacker guessing passwords and the operator after them would see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import F
from django.test import Client

from dashboard.control.models import AuditEvent
from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ATTACKER = "10.0.0.66"
OPERATOR_DESK = "10.0.0.7"


def attempt(username: str, password: str, address: str = ATTACKER, **headers: str) -> int:
    """One login through the real login page; its status (302: logged in, 200: the form
    again with an error, 429: locked out)."""
    client = Client(REMOTE_ADDR=address, **headers)
    return client.post(LOGIN, {"username": username, "password": password}).status_code


def fail(times: int, username: str = "alice", address: str = ATTACKER) -> list[int]:
    return [attempt(username, f"guess-{i}", address) for i in range(times)]


@pytest.fixture
def bob(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("bob", password=PASSWORD)


def test_it_locks_an_account_after_n_wrong_passwords_even_with_the_right_one(
    operator: User,
) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    statuses = fail(limit)
    assert statuses[:-1] == [200] * (limit - 1)
    assert statuses[-1] == 429  # the last failure locks
    # The right password from the operator's own desk: still locked (per account).
    response = Client(REMOTE_ADDR=OPERATOR_DESK).post(
        LOGIN, {"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in response.wsgi_request.session


def test_it_locks_an_address_that_guesses_across_accounts(operator: User, bob: User) -> None:
    for i in range(settings.AXES_FAILURE_LIMIT):
        attempt(f"user{i}", "guess")  # a different account each time
    assert attempt("bob", PASSWORD) == 429  # the address is locked, whatever the account


def test_another_account_and_another_address_are_unaffected(operator: User, bob: User) -> None:
    fail(settings.AXES_FAILURE_LIMIT)
    assert attempt("bob", PASSWORD, OPERATOR_DESK) == 302


def test_it_unlocks_after_the_cool_off(operator: User) -> None:
    fail(settings.AXES_FAILURE_LIMIT)
    assert attempt("alice", PASSWORD, OPERATOR_DESK) == 429
    # The clock moves on past the cool-off: the failures are now that old.
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert attempt("alice", PASSWORD, OPERATOR_DESK) == 302


def test_an_admin_can_unlock_with_axes_reset(operator: User) -> None:
    fail(settings.AXES_FAILURE_LIMIT)
    call_command("axes_reset_username", "alice", verbosity=0)
    assert attempt("alice", PASSWORD, OPERATOR_DESK) == 302


def test_attempts_during_a_lockout_do_not_extend_it(operator: User) -> None:
    fail(settings.AXES_FAILURE_LIMIT)
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME + timedelta(seconds=60)
    )
    fail(20)  # refused, not counted: the cool-off still ends a minute from now
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=61))
    assert attempt("alice", PASSWORD, OPERATOR_DESK) == 302


def test_it_audits_each_failure_and_the_lockout_once(operator: User) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    fail(limit + 10)  # ten more while locked out: refused, not written one by one
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["login_failed"] * (limit - 1) + ["login_locked"]
    assert {(e.actor, e.source, e.target) for e in events} == {("alice", "ui", ATTACKER)}
    assert [e.result for e in events] == ["failed"] * (limit - 1) + ["denied"]
    assert events[0].detail == f"wrong username or password (failure 1 of {limit})"
    assert f"logins refused for {int(settings.AXES_COOLOFF_TIME.total_seconds())} s" in (
        events[-1].detail
    )


def test_a_forwarded_for_header_is_ignored_unless_configured(operator: User) -> None:
    # Without BALLAST_CLIENT_IP_HEADER, a client cannot pick a fresh address per guess.
    for i in range(settings.AXES_FAILURE_LIMIT):
        attempt(f"user{i}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    assert attempt("alice", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200") == 429


def test_the_proxy_header_names_the_client_when_configured(
    operator: User, settings: object
) -> None:
    settings.BALLAST_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"  # type: ignore[attr-defined]
    proxy = "10.0.0.1"
    for i in range(settings.AXES_FAILURE_LIMIT):  # type: ignore[attr-defined]
        # The last item is the one the proxy added; what the client sent comes before it.
        attempt(f"user{i}", "guess", proxy, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, {ATTACKER}")
    assert attempt("alice", PASSWORD, proxy, HTTP_X_FORWARDED_FOR=ATTACKER) == 429
    assert attempt("alice", PASSWORD, proxy, HTTP_X_FORWARDED_FOR=OPERATOR_DESK) == 302
    assert set(AuditEvent.objects.values_list("target", flat=True)) == {ATTACKER}


def test_a_huge_username_is_a_failed_login_not_an_error(operator: User) -> None:
    assert attempt("x" * 10_000, "guess") == 200
    event = AuditEvent.objects.get()
    assert event.action == "login_failed"
    assert len(event.actor) == 150


def test_the_demos_new_operator_password_works_at_once_after_a_lockout() -> None:
    from dashboard.app.accounts import OPERATOR, reset_operator

    reset_operator()
    fail(settings.AXES_FAILURE_LIMIT, OPERATOR, "127.0.0.1")  # a previous run, mistyped
    password = reset_operator()  # `make demo` again
    assert attempt(OPERATOR, password, "127.0.0.1") == 302


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_holds_on_the_asgi_path(operator: User) -> None:
    """What uvicorn serves: Django's ASGI handler and axes' async middleware."""
    from django.test import AsyncClient

    client = AsyncClient()
    statuses = [
        (await client.post(LOGIN, {"username": "alice", "password": f"guess-{i}"})).status_code
        for i in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert statuses[-1] == 429
    response = await client.post(LOGIN, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
