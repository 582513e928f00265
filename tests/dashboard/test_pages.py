from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_it_sends_anonymous_visitors_to_the_login_page(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_it_shows_the_configured_services_to_an_operator(operator_client: Client) -> None:
    response = operator_client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<code>inventory</code>" in body
    assert "<code>payments</code>" in body
    assert "alice" in body


@override_settings(BALLAST_SERVICES=[])
def test_it_says_how_to_configure_services_when_there_are_none(operator_client: Client) -> None:
    response = operator_client.get("/")
    assert "BALLAST_SERVICES" in response.content.decode()


def test_it_logs_in_with_a_password(client: Client, operator: User) -> None:
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_it_refuses_a_wrong_password(client: Client, operator: User) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "did not match" in response.content.decode()
    assert client.get("/").status_code == 302


def test_it_refuses_a_login_post_without_a_csrf_token(operator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


def test_it_logs_out_on_post_only(operator_client: Client) -> None:
    assert operator_client.get("/accounts/logout/").status_code == 405
    response = operator_client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert operator_client.get("/").status_code == 302


def test_it_forbids_framing_and_sniffing(operator_client: Client) -> None:
    response = operator_client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
